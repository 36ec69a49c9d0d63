"""Stages: rarity (appearance-rarity scores of the training images), rarity-experiment (its diversity experiment)."""

from __future__ import annotations

import argparse

from retrievegan.config import from_json


def configure(stage: str, parser: argparse.ArgumentParser) -> None:
    if stage == "rarity":
        parser.add_argument("--params", default="{}", help="JSON of the `rarity` config section")
        parser.add_argument("--data-dir", required=True, help="canonical data folder (preprocess output)")
        parser.add_argument("--split", default="train", choices=["train", "val", "test"])
        parser.add_argument("--out-dir", required=True, help="folder for rarity.npz, categories.csv, run.json")
        parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    elif stage == "rarity-experiment":
        parser.add_argument("--metrics", nargs="+", required=True, help="metrics/<arm>__s<seed>_<setting>.json")
        parser.add_argument("--compatibility", nargs="*", default=[], help="compatibility files of the RetrieveGAN arms")
        parser.add_argument("--confidence", type=float, default=0.95, help="t-interval level over training seeds")
        parser.add_argument("--out-dir", required=True)
    else:
        raise ValueError(stage)


def run(stage: str, args: argparse.Namespace) -> None:
    if stage == "rarity":
        import torch

        from retrievegan.data.rarity import RarityConfig, compute_rarity

        if args.threads:
            torch.set_num_threads(args.threads)
        cfg = from_json(RarityConfig, args.params, "rarity")
        path = compute_rarity(args.data_dir, args.out_dir, cfg, args.split, progress=not args.no_progress)
        print(f"rarity scores -> {path}")
    elif stage == "rarity-experiment":
        from retrievegan.eval.rarity_experiment import write_experiment

        for path in write_experiment(args.metrics, args.compatibility, args.out_dir, args.confidence):
            print(path)
    else:
        raise ValueError(stage)
