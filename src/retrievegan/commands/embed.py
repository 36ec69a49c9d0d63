"""Stages: category-cnn, patch-features, cooccur, prefilter (``retrievegan.embed``)."""

from __future__ import annotations

import argparse

from retrievegan.commands.registry import Threads, stage
from retrievegan.config import from_json

THREADS = Threads(default=None, help="torch CPU threads (default: torch's)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="{}", help="JSON of the stage's config section")
    THREADS.add_to(parser)


def _patches_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patches-dir", required=True, help="patch bank folder (patches.npy, patches.csv)")


def _category_cnn_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    _patches_dir(parser)
    parser.add_argument("--out-dir", required=True, help="folder for checkpoint.pt and run.json")


@stage(
    "category-cnn",
    help="train the small patch CNN on category labels (the default frozen patch-feature backbone)",
    arguments=_category_cnn_arguments,
)
def category_cnn(args: argparse.Namespace) -> None:
    from retrievegan import runinfo
    from retrievegan.embed.bank import load_bank
    from retrievegan.embed.features import FeaturesConfig, save_category_cnn, train_category_cnn

    cfg = from_json(FeaturesConfig, args.params, "features")
    bank, table = load_bank(args.patches_dir)
    model, record = train_category_cnn(bank, table, cfg, progress=not args.no_progress)
    save_category_cnn(f"{args.out_dir}/checkpoint.pt", model, cfg, record)
    runinfo.write_run_json(args.out_dir, "category-cnn", cfg, cfg.seed, {"patches_dir": args.patches_dir, **record})
    print(
        f"category CNN: {len(record['classes'])} categories, {record['train_patches']} train patches, "
        f"val accuracy {record.get('val_accuracy', float('nan')):.3f}"
    )


def _patch_features_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    _patches_dir(parser)
    parser.add_argument("--out-dir", required=True, help="folder for patch_features.npy and patch_features.run.json")
    parser.add_argument(
        "--category-cnn", default=None, help="checkpoint of `retrievegan category-cnn` (backbone category_cnn)"
    )


@stage(
    "patch-features",
    help="frozen multi-scale CNN features of every bank patch (input of the patch embedding E_p)",
    arguments=_patch_features_arguments,
)
def patch_features(args: argparse.Namespace) -> None:
    from retrievegan.embed.features import FeaturesConfig, extract_patch_features

    cfg = from_json(FeaturesConfig, args.params, "features")
    extra = extract_patch_features(
        args.patches_dir, cfg, args.out_dir, category_cnn=args.category_cnn, progress=not args.no_progress
    )
    probe = extra["probe"]
    line = f"patch features ({cfg.backbone}, {cfg.pooling}): {extra['shape'][0]} x {extra['shape'][1]}"
    if probe:
        line += f"; val 1-NN category accuracy {probe['category_1nn_accuracy']:.3f}"
        if "theme_10nn_precision" in probe:
            line += (
                f", theme 10-NN precision {probe['theme_10nn_precision']:.3f} "
                f"(chance {probe['theme_chance']:.3f}; evaluation only)"
            )
    print(line)


def _cooccur_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    _patches_dir(parser)
    parser.add_argument("--model-dir", required=True, help="folder for checkpoint.pt and run.json")
    parser.add_argument("--embeddings", required=True, help="(P, E) float32 .npy of every bank patch")
    parser.add_argument("--metrics", required=True, help="same-image recall@k JSON")


@stage(
    "cooccur",
    help="train the co-occurrence embedding F_occur (triplets: same image vs. other image), recall@k",
    arguments=_cooccur_arguments,
)
def cooccur(args: argparse.Namespace) -> None:
    from retrievegan.embed.cooccur import CooccurConfig, train_cooccur

    cfg = from_json(CooccurConfig, args.params, "cooccur")
    metrics = train_cooccur(
        args.patches_dir, cfg, args.model_dir, args.embeddings, args.metrics, progress=not args.no_progress
    )
    print(
        f"co-occurrence embedding, same-image recall@k on {metrics['split']} "
        f"({metrics['queries']} patches, {metrics['images']} images):"
    )
    for key in (k for k in metrics["trained"] if k.startswith("recall@")):
        print(
            f"  {key}: trained {metrics['trained'][key]:.3f}  untrained (random) "
            f"{metrics['untrained'][key]:.3f}  chance {metrics['chance'][key]:.3f}"
        )


def _prefilter_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--features", required=True, help="(P, D) GCN features .npy aligned with patches.csv")
    parser.add_argument("--patches-csv", required=True)
    parser.add_argument("--out-dir", required=True, help="folder for candidates.npy, distances.npy, run.json")


@stage(
    "prefilter",
    help="k nearest same-category training patches per object by GCN-feature L2 distance",
    arguments=_prefilter_arguments,
)
def prefilter(args: argparse.Namespace) -> None:
    from retrievegan.embed.prefilter import PrefilterConfig, run_prefilter

    cfg = from_json(PrefilterConfig, args.params, "prefilter")
    summary = run_prefilter(args.features, args.patches_csv, cfg, args.out_dir, progress=not args.no_progress)
    print(
        f"prefilter: {summary['rows']} objects x k={summary['k']} candidates; "
        f"{summary['rows_with_padding']} rows padded, {summary['rows_without_candidates']} without candidates"
    )
