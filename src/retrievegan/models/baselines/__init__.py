"""Baseline methods (sg2im, PasteGAN, layout2im, AttnGAN), each a registered training method."""
