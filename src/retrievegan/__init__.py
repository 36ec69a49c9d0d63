"""Reproducibility harness for RetrieveGAN (Tseng et al., ECCV 2020)."""

__version__ = "0.1.0"
