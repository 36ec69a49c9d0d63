"""The estimate's totals per paper table and its Markdown report."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from retrievegan.estimate.config import EstimateConfig
from retrievegan.estimate.flops import gpu_hour_range


def table_totals(rows: Sequence[Mapping[str, Any]], cfg: EstimateConfig) -> dict[str, dict[str, Any]]:
    """Total FLOPs and GPU-hours of Table 1 (all its runs, both datasets), Table 2 (the four variants on
    ``table2_dataset``) and both together (shared runs once), each over training, DAMSM pre-training,
    sampling and evaluation rows. DAMSM belongs to AttnGAN (Table 1); sg2im, which RetrieveGAN's pre-filter
    needs, is counted in Table 1 only."""
    from retrievegan.runs import TABLE1_ROWS, TABLE2_ROWS

    table1 = {m for ms in TABLE1_ROWS.values() for m in ms} | {"damsm", "real_data"}

    def in_table1(row: Mapping[str, Any]) -> bool:
        return row["method"] in table1

    def in_table2(row: Mapping[str, Any]) -> bool:
        return (
            row["dataset"] == cfg.table2_dataset
            and row["method"] in TABLE2_ROWS
            and row.get("setting", "pred_bbox") == "pred_bbox"
        )

    out = {}
    for name, test in (("table1", in_table1), ("table2", in_table2), ("both", lambda r: in_table1(r) or in_table2(r))):
        chosen = [r for r in rows if test(r)]
        total = sum(r["total_flops"] for r in chosen)
        training = [r for r in chosen if r["kind"] in ("train", "damsm")]
        measured = [r.get("measured_gpu_hours") for r in training]
        out[name] = {
            "training_runs": len(training),
            "rows": len(chosen),
            "total_flops": total,
            "measured_gpu_hours_training": sum(measured) if measured and None not in measured else None,
            "measured_gpu_hours_max": max(measured) if measured and None not in measured else None,
            "training_flops": sum(r["total_flops"] for r in training),
            "cpu_hours_training": sum(r.get("cpu_hours", 0.0) for r in training),
            "gpu_hours_fp32": list(gpu_hour_range(total, cfg.peak_tflops_fp32, cfg.utilization)),
            "gpu_hours_tf32": list(gpu_hour_range(total, cfg.peak_tflops_tf32, cfg.utilization)),
        }
    return out


def _num(value: float) -> str:
    """3 significant digits, thousands separators from 1,000 on."""
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _hours(pair: Sequence[float]) -> str:
    return f"{_num(pair[0])}–{_num(pair[1])}"


def render_markdown(result: Mapping[str, Any]) -> str:
    """The report's Markdown: training table, sampling / evaluation, totals per paper table, assumptions."""
    cfg = result["config"]
    low, high = cfg["utilization"]
    rows = result["rows"]
    measured = cfg.get("device") == "cuda" or cfg.get("measured", False)
    lines = [
        "# Paper-scale compute estimate"
        + (
            " (training steps measured on a GPU; the rest projected from FLOPs)"
            if measured
            else " (projection, not a measurement on a GPU)"
        ),
        "",
        f"GPU-hours projected for one **{cfg['reference_gpu']}** ({result['gpu_note']}) at a model FLOP "
        f"utilisation of {low:g}–{high:g} (the high utilisation gives the low number): GPU-hours = FLOPs / "
        "(peak x utilisation). FLOPs per step: one full training step at the paper batch (generator forward + "
        "backward + Adam, then discriminator forward + backward + Adam, `train.loop.Trainer.train_step`) counted "
        "with `torch.utils.flop_counter.FlopCounterMode` (matmul / convolution FLOPs, 2 per multiply-add; "
        "element-wise ops, normalisation and Adam not counted). Networks built by the training code from "
        f"{' and '.join(result['paper_configs'])} (layered on {result['base_config']}) on synthetic scene graphs "
        "drawn like the datasets; steps from the configs' schedules.",
        "",
    ]
    if measured:
        lines += _measured_section(result)
    else:
        lines += [
            f"**Measured CPU s/step**: this machine ({result['cpu']}, {result['threads']} torch threads, load "
            f"average {result['load_average'][0]:.2f} at the start: other jobs on the machine slow it down), fastest "
            f"of {cfg['timed_steps']} timed steps after {cfg['warmup_steps']} warm-up at the batch in brackets, "
            "scaled to the paper batch by the FLOP ratio of the two batches. CPU-hours = that x steps: a sanity "
            "number, not a plan.",
            "",
        ]
    lines += [
        "**Random weights (timing / FLOPs only, never a result):** " + "; ".join(result["random_weights"]) + ".",
        "",
        "## Training runs (FLOP projection)",
        "",
        "| method | dataset | params (M, trainable) | batch (objects) | GFLOPs/step | steps | epochs | measured CPU "
        "s/step (batch used) | CPU-hours | GPU-hours FP32 | GPU-hours TF32 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["kind"] not in ("train", "damsm"):
            continue
        name = "DAMSM pre-training (for AttnGAN)" if r["kind"] == "damsm" else r["method"]
        cpu = (
            f"{_num(r['cpu_seconds_per_step'])} ({r['timing_batch']}) | {_num(r['cpu_hours'])}"
            if r.get("cpu_seconds_per_step") is not None
            else "— | —"
        )
        lines.append(
            f"| {name} | {r['dataset']} | {r['params_trainable'] / 1e6:.2f} | {r['batch_size']} ({r['real_objects']}) | "
            f"{_num(r['flops_per_step'] / 1e9)} | {r['steps']:,} | {r['epochs']:.1f} | {cpu} | "
            f"{_hours(r['gpu_hours_fp32'])} | {_hours(r['gpu_hours_tf32'])} |"
        )
    samples = [r for r in rows if r["kind"] == "sample"]
    if samples:
        lines += [
            "",
            "## Sampling",
            "",
            "Two samples per test scene graph in each setting the tables need; forward only, FLOPs counted "
            "on the method's training batch and divided by its images.",
            "",
            "| method | dataset | setting | GFLOPs/image | images | GPU-hours FP32 | GPU-hours TF32 |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['method']} | {r['dataset']} | {r['setting']} | {_num(r['flops_per_step'] / 1e9)} | "
            f"{r['steps']:,} | {_hours(r['gpu_hours_fp32'])} | {_hours(r['gpu_hours_tf32'])} |"
            for r in samples
        ]
    evaluations = [r for r in rows if r["kind"] == "evaluate"]
    if evaluations:
        lines += [
            "",
            "## Evaluation",
            "",
            "FID + IS: one Inception-v3 pass at 299 px per sample0 image; DS: two AlexNet (LPIPS) passes per "
            "sample pair; real data: Inception on the test and val images, once per dataset.",
            "",
            "| dataset | sample runs evaluated | GFLOPs | GPU-hours FP32 | GPU-hours TF32 |",
            "|---|---:|---:|---:|---:|",
        ]
        for dataset in dict.fromkeys(r["dataset"] for r in evaluations):
            chosen = [r for r in evaluations if r["dataset"] == dataset]
            total = sum(r["total_flops"] for r in chosen)
            runs = sum(1 for r in chosen if r["method"] != "real_data")
            lines.append(
                f"| {dataset} | {runs} (+ real data) | {_num(total / 1e9)} | "
                f"{_hours(gpu_hour_range(total, cfg['peak_tflops_fp32'], cfg['utilization']))} | "
                f"{_hours(gpu_hour_range(total, cfg['peak_tflops_tf32'], cfg['utilization']))} |"
            )
    labels = {
        "table1": "Table 1 (all its methods x datasets, DAMSM, sampling, evaluation)",
        "table2": f"Table 2 (the four RetrieveGAN variants on {cfg['table2_dataset']})",
        "both": "Tables 1 + 2 (shared runs once)",
    }
    lines += [
        "",
        "## Totals",
        "",
        "| tables | training runs | total PFLOPs | CPU-hours (training) | GPU-hours FP32 | GPU-hours TF32 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, total in result["totals"].items():
        lines.append(
            f"| {labels[key]} | {total['training_runs']} | {_num(total['total_flops'] / 1e15)} | "
            f"{_num(total['cpu_hours_training'])} | {_hours(total['gpu_hours_fp32'])} | "
            f"{_hours(total['gpu_hours_tf32'])} |"
        )
    lines += ["", "## Assumptions", ""] + [f"- {a}" for a in result["assumptions"]] + [""]
    return "\n".join(lines)


def _measured_section(result: Mapping[str, Any]) -> list[str]:
    """The measured GPU table: per training run the median s/step of each mode, the fastest mode's projected
    GPU-hours (median x steps), peak memory and synchronisations per step, and the totals."""
    cfg, dev = result["config"], result["device"]
    modes = list(cfg["modes"])
    rows = [r for r in result["rows"] if r["kind"] in ("train", "damsm") and "measured" in r]
    where = (
        f"{dev['gpu']} (torch {dev['torch']}, CUDA {dev['cuda']}, cuDNN {dev['cudnn']}, {dev['gpu_memory_gib']} GiB)"
        if "gpu" in dev
        else f"the CPU ({result['cpu']}, torch {dev['torch']}, {dev['threads']} threads)"
    )
    lines = [
        f"## Measured on {where}",
        "",
        f"Real training steps (`Trainer.train_step`; Adam fused on CUDA) at the paper batch: median of "
        f"{cfg['measure_timed_steps']} steps after {cfg['measure_warmup_steps']} warm-up, device synchronised around "
        "each step. fp32 = IEEE float32 matmuls and convolutions; tf32 = TF32 tensor cores; bf16 / fp16 = autocast "
        "(fp16 with grad scalers); +compile = `torch.compile` (mode "
        f"`{cfg['compile_mode']}`). Projected GPU-hours = the fastest mode's median x the schedule's steps. "
        "Syncs = synchronising CUDA calls in one step (`torch.cuda.set_sync_debug_mode`). DAMSM is timed without "
        "compilation.",
        "",
        "| method | dataset | batch | "
        + " | ".join(f"{m} s/step" for m in modes)
        + " | fastest | GPU-hours (measured) | GPU-hours FLOP projection TF32 | peak GiB | syncs/step |",
        "|---|---|---:|" + "---:|" * len(modes) + "---|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = []
        for m in modes:
            entry = r["measured"].get(m)
            if entry is None:
                cells.append("n/a")
            elif entry["error"]:
                cells.append("**error**: " + entry["error"].replace("|", "/")[:80])
            else:
                cells.append(f"{entry['median_seconds']:.3f}")
        best = r["measured"].get(r["measured_mode"]) or {}
        name = "DAMSM pre-training" if r["kind"] == "damsm" else r["method"]
        lines.append(
            f"| {name} | {r['dataset']} | {r['batch_size']} | " + " | ".join(cells) + f" | {r['measured_mode']} | "
            f"{_num(r['measured_gpu_hours']) if r['measured_gpu_hours'] is not None else '—'} | "
            f"{_hours(r['gpu_hours_tf32'])} | {_or_dash(best.get('peak_memory_gib'))} | {_or_dash(best.get('syncs_per_step'))} |"
        )
    for key, label in (("table1", "Table 1"), ("table2", "Table 2"), ("both", "Tables 1 + 2")):
        total = result["totals"][key].get("measured_gpu_hours_training")
        if total is not None:
            lines.append(
                f"\n**{label}, training (all runs measured): {_num(total)} device-hours** on this device "
                f"(largest run: {_num(result['totals'][key]['measured_gpu_hours_max'])})."
            )
    return lines + [""]


def _or_dash(value: Any) -> str:
    return "—" if value is None else str(value)


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or platform.machine()


ASSUMPTIONS = (
    "Batch, steps, widths and image size are the paper configs' (sg2im 1M steps x 32, layout2im 300k x 8, AttnGAN "
    "120 epochs x 14, PasteGAN / RetrieveGAN 90 epochs x 16, DAMSM 600 epochs x 48; epochs = steps x batch / "
    "train images).",
    "Synthetic scene graphs: real objects per image uniform in the dataset's range (COCO-Stuff 3-8, Visual Genome "
    "3-9, + __image__), one relationship per object + its __in_image__ triple, vocab sizes of the paper's dataset "
    "statistics; the real object-count distribution shifts the per-object costs (crop encoder, object refiner, "
    "object discriminator, object perceptual loss) accordingly.",
    "Model FLOPs only: data loading, element-wise ops, the optimiser, checkpoints and logging are not counted "
    "(they are in the measured CPU time); the utilisation range is what covers them on a GPU.",
    "GPU-hours are single-GPU hours: several GPUs divide the wall time, not the GPU-hours.",
    "Not included: preprocessing, the patch bank, patch-feature extraction, the co-occurrence embedding and the "
    "pre-filter (RetrieveGAN's inputs; sg2im, whose GCN features the pre-filter uses, is in Table 1).",
    "FLOPs cannot be counted on meta tensors here: the methods use data-dependent ops (unique, nonzero, boolean "
    "masks), so the counted step runs for real on the CPU.",
)
