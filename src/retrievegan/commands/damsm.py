"""Stage: pretrain-damsm (AttnGAN's text and image encoders, ``retrievegan.train.damsm``)."""

from __future__ import annotations

import argparse

from retrievegan.commands.registry import TORCH_THREADS, stage
from retrievegan.config import from_json


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="{}", help="JSON of the `damsm` config section")
    parser.add_argument("--data-dir", required=True, help="canonical data folder (train.json, val.json, images)")
    parser.add_argument(
        "--out-dir", required=True, help="run folder: checkpoint.pt, losses.jsonl, evaluation.json, run.json"
    )
    parser.add_argument(
        "--eval-split",
        default="val",
        choices=["train", "val", "test"],
        help="split of the before/after matching evaluation",
    )
    TORCH_THREADS.add_to(parser)


@stage(
    "pretrain-damsm",
    help="pre-train AttnGAN's DAMSM text + image encoders on the scene-graph sentences",
    arguments=_arguments,
    passive_wait=True,
)
def pretrain_damsm(args: argparse.Namespace) -> None:
    from retrievegan.train.damsm import DamsmConfig
    from retrievegan.train.damsm import pretrain_damsm as pretrain

    cfg = from_json(DamsmConfig, args.params, "damsm")
    evaluation = pretrain(cfg, args.data_dir, args.out_dir, progress=not args.no_progress, eval_split=args.eval_split)
    before, after = evaluation["before"], evaluation["after"]
    print(
        f"DAMSM ({cfg.image_encoder} image encoder): {evaluation['steps']} steps, "
        f"{evaluation['train_seconds']:.1f} s; {evaluation['split']} matching loss {before['loss']:.3f} -> "
        f"{after['loss']:.3f}; in-batch R@1 (sentence) {before['r1_sentence']:.3f} -> {after['r1_sentence']:.3f} "
        f"(chance {evaluation['chance_r1']:.3f}) -> {args.out_dir}"
    )
