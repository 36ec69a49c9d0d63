"""Data: synthetic benchmark, COCO-Stuff and Visual Genome readers, canonical scene graphs, patch bank."""
