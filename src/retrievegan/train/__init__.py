"""One training loop for every GAN method (checkpoint/resume, AMP, DDP), method registry, losses."""
