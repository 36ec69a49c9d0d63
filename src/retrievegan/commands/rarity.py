"""Stages: rarity (appearance-rarity scores of the training images), rarity-experiment (its diversity experiment)."""

from __future__ import annotations

import argparse

from retrievegan.commands.registry import TORCH_THREADS, stage
from retrievegan.config import from_json


def _rarity_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="{}", help="JSON of the `rarity` config section")
    parser.add_argument("--data-dir", required=True, help="canonical data folder (preprocess output)")
    parser.add_argument("--split", default="train", choices=["train", "val", "test"])
    parser.add_argument("--out-dir", required=True, help="folder for rarity.npz, categories.csv, run.json")
    TORCH_THREADS.add_to(parser)


@stage(
    "rarity",
    help="appearance-rarity scores of the training images (conditional IMLE supplement): per-category colour KDE",
    arguments=_rarity_arguments,
)
def rarity(args: argparse.Namespace) -> None:
    from retrievegan.data.rarity import RarityConfig, compute_rarity

    cfg = from_json(RarityConfig, args.params, "rarity")
    path = compute_rarity(args.data_dir, args.out_dir, cfg, args.split, progress=not args.no_progress)
    print(f"rarity scores -> {path}")


def _experiment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics/<arm>__s<seed>_<setting>.json")
    parser.add_argument("--compatibility", nargs="*", default=[], help="compatibility files of the RetrieveGAN arms")
    parser.add_argument("--confidence", type=float, default=0.95, help="t-interval level over training seeds")
    parser.add_argument("--out-dir", required=True)


@stage(
    "rarity-experiment",
    help="table + figure: diversity of sg2im / RetrieveGAN with and without rarity rebalancing",
    arguments=_experiment_arguments,
)
def rarity_experiment(args: argparse.Namespace) -> None:
    from retrievegan.eval.rarity_experiment import write_experiment

    for path in write_experiment(args.metrics, args.compatibility, args.out_dir, args.confidence):
        print(path)
