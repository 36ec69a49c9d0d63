"""Stages: synth, preprocess, dataset-table, patches."""

from __future__ import annotations

import argparse

from retrievegan.config import from_json


def configure(stage: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="{}", help="JSON of the stage's config section")
    if stage == "synth":
        parser.add_argument("--out-coco", required=True, help="folder for the COCO-Stuff-format files")
        parser.add_argument("--out-vg", required=True, help="folder for the Visual-Genome-format files")
        parser.add_argument("--workers", type=int, default=1, help="rendering processes (output is identical)")
    elif stage == "preprocess":
        parser.add_argument("--source", required=True, choices=["coco_stuff", "visual_genome"])
        parser.add_argument("--dataset", required=True, help="dataset name recorded in the stats (e.g. synth)")
        parser.add_argument("--preprocess-params", default="{}", help="JSON of the `preprocess` config section")
        parser.add_argument("--out-dir", required=True)
    elif stage == "dataset-table":
        parser.add_argument("--stats", nargs="+", required=True, help="stats.json files of preprocessed sources")
        parser.add_argument("--out", required=True, help="CSV to write")
    elif stage == "patches":
        parser.add_argument("--data-dir", required=True, help="canonical data folder (preprocess output)")
        parser.add_argument("--out-dir", required=True)
    else:
        raise ValueError(stage)


def run(stage: str, args: argparse.Namespace) -> None:
    progress = not args.no_progress
    if stage == "synth":
        from retrievegan import runinfo
        from retrievegan.data.synth import SynthConfig, generate

        cfg = from_json(SynthConfig, args.params, "synth")
        counts = generate(cfg, args.out_coco, args.out_vg, progress=progress, workers=args.workers)
        runinfo.write_run_json(args.out_coco, "synth", cfg, cfg.seed, {"counts": counts})
    elif stage == "preprocess":
        from retrievegan.data.coco import CocoStuffConfig
        from retrievegan.data.preprocess import PreprocessConfig, preprocess
        from retrievegan.data.vg import VisualGenomeConfig

        cls = CocoStuffConfig if args.source == "coco_stuff" else VisualGenomeConfig
        source_cfg = from_json(cls, args.params, args.source)
        pp_cfg = from_json(PreprocessConfig, args.preprocess_params, "preprocess")
        stats = preprocess(args.source, source_cfg, pp_cfg, args.out_dir, args.dataset, progress=progress)
        row = stats["table_row"]
        print(f"{args.source}: train {row['train']}, val {row['val']}, test {row['test']}, "
              f"{row['categories']} categories, {row['patches']} training patches")
    elif stage == "dataset-table":
        from retrievegan.data.preprocess import dataset_table

        dataset_table(args.stats, args.out)
    elif stage == "patches":
        from retrievegan.data.patches import PatchConfig, build_patch_bank

        cfg = from_json(PatchConfig, args.params, "patches")
        table = build_patch_bank(args.data_dir, cfg, args.out_dir, progress=progress)
        print(f"patch bank: {len(table)} patches ({int((table['split'] == 'train').sum())} from train)")
    else:
        raise ValueError(stage)
