"""Stages: train, sample, gcn-features, box-l1, progress-figure."""

from __future__ import annotations

import argparse

from retrievegan.commands.registry import TORCH_THREADS, stage
from retrievegan.config import from_json
from retrievegan.errors import ConfigError

DEVICES = ["auto", "cpu", "cuda"]
SPLITS = ["train", "val", "test"]


def _inputs(pairs: list[str]) -> dict[str, str]:
    """``--input NAME=PATH`` options as a mapping; a malformed pair is a ConfigError."""
    out = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--input expects NAME=PATH, got {pair!r}")
        out[name] = path
    return out


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    TORCH_THREADS.add_to(parser)
    parser.add_argument("--method", required=True, help="registered method name (e.g. sg2im)")
    parser.add_argument("--params", default="{}", help="JSON of the method's config section")
    parser.add_argument("--train-params", default="{}", help="JSON of the `train` config section")
    parser.add_argument("--data-dir", required=True, help="canonical data folder (preprocess output)")
    parser.add_argument("--patches", default=None, help="patches.csv (methods that need patch ids)")
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="extra input file a method declares (repeatable)",
    )
    parser.add_argument("--out-dir", required=True, help="run folder (checkpoint.pt, run.json, losses.jsonl)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint of this config")
    parser.add_argument(
        "--rarity-params", default="{}", help="JSON of the `rarity` section (dataset / loss rebalancing; default: off)"
    )
    parser.add_argument(
        "--rarity-scores",
        default=None,
        help="rarity.npz of `retrievegan rarity` (needed when rarity.dataset or rarity.loss)",
    )


@stage(
    "train",
    help="train a registered method (checkpoint/resume, AMP, DDP under torchrun)",
    arguments=_train_arguments,
    passive_wait=True,
)
def train(args: argparse.Namespace) -> None:
    import json

    from retrievegan.data.rarity import RarityConfig
    from retrievegan.train.config import TrainConfig
    from retrievegan.train.loop import train as train_method

    cfg = from_json(TrainConfig, args.train_params, "train")
    rarity = from_json(RarityConfig, args.rarity_params, "rarity")
    try:
        params = json.loads(args.params) if args.params.strip() else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{args.method}: invalid JSON ({exc})") from exc
    result = train_method(
        args.method,
        params,
        cfg,
        args.data_dir,
        args.out_dir,
        patches_csv=args.patches,
        inputs=_inputs(args.input),
        resume=args.resume,
        progress=not args.no_progress,
        rarity=rarity,
        rarity_scores=args.rarity_scores,
    )
    resumed = "" if result.resumed_from is None else f" (resumed from step {result.resumed_from})"
    print(
        f"{args.method}: {result.steps} steps{resumed}, {result.wall_seconds:.1f} s, "
        f"{result.images_per_second:.1f} images/s -> {result.checkpoint}"
    )


def _sample_arguments(parser: argparse.ArgumentParser) -> None:
    TORCH_THREADS.add_to(parser)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--setting", required=True, choices=["pred_bbox", "gt_bbox"])
    parser.add_argument("--params", default="{}", help="JSON of the `sample` config section")
    parser.add_argument("--patches", default=None, help="patches.csv (methods that need patch ids)")
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="override an extra input path recorded in the checkpoint",
    )
    parser.add_argument("--out-dir", required=True, help="samples/<method>/<setting> folder")


@stage(
    "sample",
    help="two samples per test scene graph of a trained method in one setting (pred_bbox / gt_bbox)",
    arguments=_sample_arguments,
    passive_wait=True,
)
def sample(args: argparse.Namespace) -> None:
    from retrievegan.eval.sampler import SampleConfig
    from retrievegan.eval.sampler import sample as draw_samples

    cfg = from_json(SampleConfig, args.params, "sample")
    manifest = draw_samples(
        args.checkpoint,
        args.data_dir,
        args.setting,
        args.out_dir,
        cfg,
        patches_csv=args.patches,
        inputs=_inputs(args.input),
        progress=not args.no_progress,
    )
    print(f"{manifest['method']} {manifest['setting']}: {manifest['num_images']} scene graphs x 2 samples")


def _gcn_features_arguments(parser: argparse.ArgumentParser) -> None:
    TORCH_THREADS.add_to(parser)
    parser.add_argument("--checkpoint", required=True, help="trained sg2im checkpoint")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--patches", required=True, help="patches.csv: row order of the output")
    parser.add_argument("--out", required=True, help="gcn_features.npy to write")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", choices=DEVICES)


@stage(
    "gcn-features",
    help="graph-convolution features of a trained sg2im for every patch-bank object (pre-filtering)",
    arguments=_gcn_features_arguments,
    passive_wait=True,
)
def gcn_features(args: argparse.Namespace) -> None:
    from retrievegan.train.features import gcn_features as compute_gcn_features

    features = compute_gcn_features(
        args.checkpoint,
        args.data_dir,
        args.patches,
        args.out,
        args.batch_size,
        args.device,
        progress=not args.no_progress,
    )
    print(f"gcn features: {features.shape[0]} patches x {features.shape[1]} dims -> {args.out}")


def _box_l1_arguments(parser: argparse.ArgumentParser) -> None:
    TORCH_THREADS.add_to(parser)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--split", default="val", choices=SPLITS)
    parser.add_argument("--out", required=True, help="JSON to write")
    parser.add_argument("--device", default="auto", choices=DEVICES)


@stage(
    "box-l1",
    help="box regression L1 of a trained method vs. mean-box baselines",
    arguments=_box_l1_arguments,
    passive_wait=True,
)
def box_l1(args: argparse.Namespace) -> None:
    from retrievegan.eval.box_l1 import box_l1 as measure_box_l1

    result = measure_box_l1(args.checkpoint, args.data_dir, args.out, args.split, device_name=args.device)
    base = result["baselines"]
    print(
        f"{result['method']} box L1 on {args.split}: {result['box_l1']:.4f} (mean box "
        f"{base['mean_box']['l1']:.4f}, category mean box {base['category_mean_box']['l1']:.4f})"
    )


def _progress_figure_arguments(parser: argparse.ArgumentParser) -> None:
    TORCH_THREADS.add_to(parser)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--snapshots", required=True, help="the run's snapshots/ folder")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--split", default="val", choices=SPLITS)
    parser.add_argument("--num-images", type=int, default=8)
    parser.add_argument("--max-rows", type=int, default=5, help="snapshot rows (step 0 and the last included)")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--device", default="auto", choices=DEVICES)


@stage(
    "progress-figure",
    help="grid of a method's samples over training, from its generator snapshots",
    arguments=_progress_figure_arguments,
    passive_wait=True,
)
def progress_figure(args: argparse.Namespace) -> None:
    from retrievegan.eval.progress import progress_figure as draw_progress_figure

    info = draw_progress_figure(
        args.checkpoint,
        args.snapshots,
        args.data_dir,
        args.out,
        args.num_images,
        args.max_rows,
        args.split,
        device_name=args.device,
    )
    print(f"{info['method']}: steps {info['steps']} -> {args.out}")
