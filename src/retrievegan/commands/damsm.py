"""Stage: pretrain-damsm (AttnGAN's text and image encoders, ``retrievegan.train.damsm``)."""

from __future__ import annotations

import argparse

from retrievegan.config import from_json


def configure(stage: str, parser: argparse.ArgumentParser) -> None:
    if stage != "pretrain-damsm":
        raise ValueError(stage)
    parser.add_argument("--params", default="{}", help="JSON of the `damsm` config section")
    parser.add_argument("--data-dir", required=True, help="canonical data folder (train.json, val.json, images)")
    parser.add_argument("--out-dir", required=True,
                        help="run folder: checkpoint.pt, losses.jsonl, evaluation.json, run.json")
    parser.add_argument("--eval-split", default="val", choices=["train", "val", "test"],
                        help="split of the before/after matching evaluation")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")


def run(stage: str, args: argparse.Namespace) -> None:
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `retrievegan train` (commands/training.py)
    import torch

    from retrievegan.train.damsm import DamsmConfig, pretrain_damsm

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = from_json(DamsmConfig, args.params, "damsm")
    evaluation = pretrain_damsm(cfg, args.data_dir, args.out_dir, progress=not args.no_progress,
                                eval_split=args.eval_split)
    before, after = evaluation["before"], evaluation["after"]
    print(f"DAMSM ({cfg.image_encoder} image encoder): {evaluation['steps']} steps, "
          f"{evaluation['train_seconds']:.1f} s; {evaluation['split']} matching loss {before['loss']:.3f} -> "
          f"{after['loss']:.3f}; in-batch R@1 (sentence) {before['r1_sentence']:.3f} -> {after['r1_sentence']:.3f} "
          f"(chance {evaluation['chance_r1']:.3f}) -> {args.out_dir}")
