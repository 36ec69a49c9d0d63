"""Stage: paper-estimate (projected GPU-hours of the paper's Tables 1 and 2, ``retrievegan.estimate``)."""

from __future__ import annotations

import argparse

from retrievegan.commands.registry import TORCH_THREADS, stage


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="{}", help="JSON of the `estimate` config section (without paper_configs)")
    parser.add_argument("--base-config", required=True, help="the embedded config the paper configs layer on")
    parser.add_argument(
        "--paper-config",
        action="append",
        required=True,
        metavar="YAML",
        help="a paper config (e.g. config/paper-coco.yaml); repeatable",
    )
    parser.add_argument(
        "--dataset-stats",
        required=True,
        help="the paper's dataset statistics CSV (train/val/test images, categories, patches)",
    )
    parser.add_argument("--out-dir", required=True, help="folder for paper_estimate.{json,md} and run.json")
    TORCH_THREADS.add_to(parser)
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=None,
        help="cuda: time real training steps on the GPU per precision mode (overrides estimate.device)",
    )


@stage(
    "paper-estimate",
    help="projected GPU-hours of the paper's Tables 1 and 2 from FLOPs and timed CPU steps at paper scale",
    arguments=_arguments,
    passive_wait=True,
)
def paper_estimate(args: argparse.Namespace) -> None:
    import json

    from retrievegan.estimate import estimate_config, run_estimate

    params = json.loads(args.params) if args.params.strip() else {}
    if args.device is not None:
        params["device"] = args.device
    cfg = estimate_config(params)
    say = (lambda _message: None) if args.no_progress else (lambda message: print(message, flush=True))
    result = run_estimate(cfg, args.base_config, args.paper_config, args.dataset_stats, args.out_dir, say)
    both = result["totals"]["both"]
    low, high = both["gpu_hours_fp32"]
    print(
        f"paper estimate: Tables 1 + 2 = {both['total_flops'] / 1e18:.2f} EFLOPs, {low:,.0f}-{high:,.0f} "
        f"{cfg.reference_gpu} GPU-hours (FP32, utilisation {cfg.utilization[0]:g}-{cfg.utilization[1]:g}); "
        f"{result['wall_seconds']:.0f} s -> {args.out_dir}"
    )
    if both.get("measured_gpu_hours_training") is not None:
        print(
            f"measured on {result['device'].get('gpu', result['device']['device'])}: Tables 1 + 2 training = "
            f"{both['measured_gpu_hours_training']:,.1f} device-hours (largest run "
            f"{both['measured_gpu_hours_max']:,.1f})"
        )
