"""Evaluation: metrics (torch-fidelity FID/IS, LPIPS DS, compatibility), tables, figures, report."""
