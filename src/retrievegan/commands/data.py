"""Stages: synth, preprocess, dataset-table, patches."""

from __future__ import annotations

import argparse

from retrievegan.commands.registry import stage
from retrievegan.config import from_json


def _params(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="{}", help="JSON of the stage's config section")


def _synth_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    parser.add_argument("--out-coco", required=True, help="folder for the COCO-Stuff-format files")
    parser.add_argument("--out-vg", required=True, help="folder for the Visual-Genome-format files")
    parser.add_argument("--workers", type=int, default=1, help="rendering processes (output is identical)")


@stage(
    "synth",
    help="write the embedded synthetic benchmark in COCO-Stuff and Visual Genome formats",
    arguments=_synth_arguments,
)
def synth(args: argparse.Namespace) -> None:
    from retrievegan import runinfo
    from retrievegan.data.synth import SynthConfig, generate

    cfg = from_json(SynthConfig, args.params, "synth")
    counts = generate(cfg, args.out_coco, args.out_vg, progress=not args.no_progress, workers=args.workers)
    runinfo.write_run_json(args.out_coco, "synth", cfg, cfg.seed, {"counts": counts})


def _preprocess_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    parser.add_argument("--source", required=True, choices=["coco_stuff", "visual_genome"])
    parser.add_argument("--dataset", required=True, help="dataset name recorded in the stats (e.g. synth)")
    parser.add_argument("--preprocess-params", default="{}", help="JSON of the `preprocess` config section")
    parser.add_argument("--out-dir", required=True)


@stage(
    "preprocess",
    help="raw COCO-Stuff / Visual Genome -> canonical scene graphs, resized images, stats",
    arguments=_preprocess_arguments,
)
def preprocess(args: argparse.Namespace) -> None:
    from retrievegan.data.coco import CocoStuffConfig
    from retrievegan.data.preprocess import PreprocessConfig
    from retrievegan.data.preprocess import preprocess as run_preprocess
    from retrievegan.data.vg import VisualGenomeConfig

    cls = CocoStuffConfig if args.source == "coco_stuff" else VisualGenomeConfig
    source_cfg = from_json(cls, args.params, args.source)
    pp_cfg = from_json(PreprocessConfig, args.preprocess_params, "preprocess")
    stats = run_preprocess(args.source, source_cfg, pp_cfg, args.out_dir, args.dataset, progress=not args.no_progress)
    row = stats["table_row"]
    print(
        f"{args.source}: train {row['train']}, val {row['val']}, test {row['test']}, "
        f"{row['categories']} categories, {row['patches']} training patches"
    )


def _dataset_table_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    parser.add_argument("--stats", nargs="+", required=True, help="stats.json files of preprocessed sources")
    parser.add_argument("--out", required=True, help="CSV to write")


@stage(
    "dataset-table",
    help="merge preprocess stats into the dataset table (Train/Val/Test/#Category/#Patches)",
    arguments=_dataset_table_arguments,
)
def dataset_table(args: argparse.Namespace) -> None:
    from retrievegan.data.preprocess import dataset_table as write_dataset_table

    write_dataset_table(args.stats, args.out)


def _patches_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    parser.add_argument("--data-dir", required=True, help="canonical data folder (preprocess output)")
    parser.add_argument("--out-dir", required=True)


@stage("patches", help="crop the patch bank at ground-truth boxes", arguments=_patches_arguments)
def patches(args: argparse.Namespace) -> None:
    from retrievegan.data.patches import PatchConfig, build_patch_bank

    cfg = from_json(PatchConfig, args.params, "patches")
    table = build_patch_bank(args.data_dir, cfg, args.out_dir, progress=not args.no_progress)
    print(f"patch bank: {len(table)} patches ({int((table['split'] == 'train').sum())} from train)")
