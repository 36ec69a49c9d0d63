"""``run_estimate``: every training run (+ DAMSM, sampling, evaluation) of every paper config -> the report files."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from retrievegan import io, runinfo
from retrievegan.errors import ConfigError
from retrievegan.estimate.config import EstimateConfig
from retrievegan.estimate.flops import (
    count_flops,
    evaluation_flops_per_image,
    gpu_hour_range,
    gpu_note,
    steps_from_epochs,
)
from retrievegan.estimate.measure import StepTiming, fp32_precision, measure_step, time_steps, train_overrides
from retrievegan.estimate.paper import (
    DatasetScale,
    PaperData,
    damsm_note,
    dataset_scale,
    load_paper_config,
    read_dataset_stats,
)
from retrievegan.estimate.report import ASSUMPTIONS, cpu_name, render_markdown, table_totals
from retrievegan.runs import train_params


def _param_counts(nets: Mapping[str, nn.Module]) -> dict[str, dict[str, int]]:
    return {
        name: {
            "trainable": sum(p.numel() for p in net.parameters() if p.requires_grad),
            "frozen": sum(p.numel() for p in net.parameters() if not p.requires_grad),
        }
        for name, net in nets.items()
    }


def _row(
    kind: str,
    method: str,
    scale: DatasetScale,
    batch: int,
    steps: int,
    flops_per_step: float,
    cfg: EstimateConfig,
    **extra: Any,
) -> dict[str, Any]:
    total = flops_per_step * steps
    row = {
        "kind": kind,
        "method": method,
        "dataset": scale.source,
        "batch_size": batch,
        "steps": steps,
        "flops_per_step": flops_per_step,
        "total_flops": total,
        "gpu_hours_fp32": list(gpu_hour_range(total, cfg.peak_tflops_fp32, cfg.utilization)),
        "gpu_hours_tf32": list(gpu_hour_range(total, cfg.peak_tflops_tf32, cfg.utilization)),
    }
    row.update(extra)
    if row.get("cpu_seconds_per_step") is not None:
        row["cpu_hours"] = row["cpu_seconds_per_step"] * steps / 3600.0
    return row


def estimate_dataset(
    config: Mapping[str, Any],
    scale: DatasetScale,
    cfg: EstimateConfig,
    workdir: Path,
    progress: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """All rows (training, DAMSM, sampling, evaluation) of one paper config."""
    from retrievegan.runs import METHODS
    from retrievegan.seeds import SAMPLE_NOISE, image_generators
    from retrievegan.train.loop import Trainer

    methods = [
        m
        for m in cfg.methods
        if not (METHODS[m].ablation is not None and m != "retrievegan" and scale.source != cfg.table2_dataset)
    ]
    batches = {m: int(train_params(config, m)["batch_size"]) for m in methods}
    damsm_batch = int(config["damsm"]["batch_size"])
    largest = max([*batches.values(), damsm_batch if "attngan" in methods else 0])
    data = PaperData(config, scale, workdir, cfg.seed, largest, methods)
    rows: list[dict[str, Any]] = []

    def batches_for(size: int):
        small_size = min(size, cfg.timing_batch_size or size)
        return data.batch(size), data.batch(small_size), small_size

    if data.damsm is not None:
        rows.append(_damsm_row(data.damsm, scale, cfg, batches_for(damsm_batch), progress))

    device = torch.device(cfg.device)
    for method in methods:
        full, small, small_size = batches_for(batches[method])
        obj, notes = data.method(method)
        train_cfg = data.train_config(method, device=cfg.device, amp=False, compile=False, num_workers=0)
        steps = int(train_cfg.steps)
        common = {
            "epochs": steps * batches[method] / scale.train_images,
            "real_objects": int(full.real_objects.sum()),
            "notes": notes,
        }
        if cfg.measures_steps:
            progress(
                f"{scale.source}: {method} (batch {batches[method]}, measured on {cfg.device}: {', '.join(cfg.modes)})"
            )
            trainer = Trainer(
                obj, data.train_config(method, **train_overrides("fp32", cfg.compile_mode, cfg.device)), device
            )
            with fp32_precision("ieee"):
                flops, by_op = count_flops(lambda t=trainer: t.train_step(full, 0, 0))

            def make(overrides: dict[str, Any], method: str = method, obj: Any = obj, full: Any = full):
                fresh = Trainer(obj, data.train_config(method, **overrides), device)
                return lambda i: fresh.train_step(full, i, 0)

            timings = [time_steps(make, mode, cfg) for mode in cfg.modes]
            rows.append(
                _row(
                    "train",
                    method,
                    scale,
                    batches[method],
                    steps,
                    flops,
                    cfg,
                    flops_by_op=by_op,
                    **_param_fields(trainer.nets),
                    **_measured_fields(timings, steps),
                    **common,
                )
            )
            progress(f"{scale.source}: {method}: {measured_summary(timings, steps)}")
        else:
            progress(f"{scale.source}: {method} (batch {batches[method]}, timing batch {small_size})")
            trainer = Trainer(obj, train_cfg, device)
            counter = iter(range(1 << 30))

            def train_step(batch, trainer=trainer, counter=counter):
                trainer.train_step(batch, next(counter), 0)

            measured = measure_step(train_step, full, small, small_size, cfg, small_size == batches[method])
            rows.append(
                _row(
                    "train",
                    method,
                    scale,
                    batches[method],
                    steps,
                    measured.flops,
                    cfg,
                    **_param_fields(trainer.nets),
                    flops_by_op=measured.flops_by_op,
                    timing_batch=measured.timing_batch,
                    timing_flops=measured.timing_flops,
                    timed_seconds=list(measured.seconds),
                    cpu_seconds_per_step=measured.cpu_seconds,
                    threads=torch.get_num_threads(),
                    **common,
                )
            )
        if cfg.sampling:
            sample_batch = obj.host_prepare(full).to(device)
            for setting in _table_settings(method, cfg, scale):
                for net in trainer.nets.values():
                    net.eval()
                gens = image_generators((SAMPLE_NOISE, 0), full.image_ids.tolist(), device)
                with torch.no_grad():
                    flops, _ = count_flops(
                        lambda s=setting, g=gens, o=obj, t=trainer: o.sample(t.nets, sample_batch, s, g)
                    )
                # 2 samples (sample0, sample1) per test scene graph, per image of the method's batch
                rows.append(
                    _row(
                        "sample",
                        method,
                        scale,
                        batches[method],
                        2 * scale.test_images,
                        flops / batches[method],
                        cfg,
                        setting=setting,
                        unit="image",
                    )
                )
        del trainer, obj
    if cfg.evaluation:
        rows.extend(_evaluation_rows(rows, scale, cfg))
    return rows


def _param_fields(nets: Mapping[str, nn.Module]) -> dict[str, Any]:
    params = _param_counts(nets)
    return {
        "params_trainable": sum(v["trainable"] for v in params.values()),
        "params_frozen": sum(v["frozen"] for v in params.values()),
        "params_by_network": params,
    }


def _measured_fields(timings: Sequence[StepTiming], steps: int) -> dict[str, Any]:
    """Row fields of measured GPU steps: per mode the median s/step, the projected GPU-hours (median x steps),
    peak memory, synchronisations per step (or the error); the fastest mode's figures."""
    modes = {
        t.mode: {
            "median_seconds": t.median,
            "seconds": list(t.seconds),
            "gpu_hours": None if t.median is None else t.median * steps / 3600.0,
            "peak_memory_gib": None if t.peak_memory_gib is None else round(t.peak_memory_gib, 2),
            "syncs_per_step": t.syncs_per_step,
            "error": t.error,
        }
        for t in timings
    }
    ok = [t for t in timings if t.median is not None]
    best = min(ok, key=lambda t: t.median) if ok else None
    return {
        "measured": modes,
        "measured_mode": best.mode if best else None,
        "measured_seconds_per_step": best.median if best else None,
        "measured_gpu_hours": best.median * steps / 3600.0 if best else None,
    }


def measured_summary(timings: Sequence[StepTiming], steps: int) -> str:
    """One line of a method's measured modes, printed as soon as they are timed (a run stopped by a time limit
    keeps them in its log): median s/step and projected GPU-hours per mode, or the mode's error."""
    parts = []
    for t in timings:
        if t.median is None:
            parts.append(f"{t.mode} failed ({(t.error or 'no timed step')[:120]})")
        else:
            parts.append(f"{t.mode} {t.median:.4f} s/step = {t.median * steps / 3600.0:.1f} GPU-h")
    return "; ".join(parts)


def _table_settings(method: str, cfg: EstimateConfig, scale: DatasetScale) -> list[str]:
    """Settings whose samples the paper's tables need: Table 1 (both where the method applies), Table 2 (pred)."""
    from retrievegan.runs import METHODS, TABLE1_ROWS

    info = METHODS[method]
    settings = [s for s, rows in TABLE1_ROWS.items() if method in rows and info.applies_to(s)]
    if info.ablation is not None and scale.source == cfg.table2_dataset and "pred_bbox" not in settings:
        settings.append("pred_bbox")
    return settings


def _damsm_row(damsm, scale: DatasetScale, cfg: EstimateConfig, batches, progress) -> dict[str, Any]:
    """AttnGAN's DAMSM pre-training step (as ``train.damsm.pretrain_damsm``: both matching losses, backward,
    gradient clipping of the text encoder, Adam), on the CPU (timing batch, scaled by FLOPs) or measured on the
    device at its batch in each ``modes`` precision (no compilation: the step is not the training loop's)."""
    from retrievegan.models.damsm import damsm_losses, identical_texts

    full, small, small_size = batches
    c = damsm.config
    device = torch.device(cfg.device)
    where = f"measured on {cfg.device}" if cfg.measures_steps else f"timing batch {small_size}"
    progress(f"{scale.source}: damsm pre-training (batch {c.batch_size}, {where})")

    def make(overrides: dict[str, Any]):
        text, image = damsm.text_encoder.to(device).train(), damsm.image_encoder.to(device).train()
        params = [p for net in (text, image) for p in net.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(
            params, lr=c.lr, betas=c.betas, **({"fused": True} if device.type == "cuda" else {})
        )
        dropout = torch.Generator(device).manual_seed(cfg.seed)
        dtype = torch.float16 if overrides.get("amp_dtype") == "float16" else torch.bfloat16
        scaler = torch.amp.GradScaler(device.type, enabled=overrides.get("amp", False) and dtype == torch.float16)
        prepared: dict[int, Any] = {}

        def step(batch):
            if id(batch) not in prepared:  # host side once per batch, as the loader would
                tokens, lengths = damsm.tokens(batch)
                prepared[id(batch)] = (tokens.to(device), lengths, batch.images.to(device))
            tokens, lengths, images = prepared[id(batch)]
            with torch.autocast(device.type, dtype=dtype, enabled=overrides.get("amp", False)):
                words, sentence = text(tokens, lengths, dropout)
                regions, code = image(images)
                terms = damsm_losses(
                    regions,
                    code,
                    words,
                    sentence,
                    lengths.to(device),
                    c.gamma1,
                    c.gamma2,
                    c.gamma3,
                    identical_texts(tokens),
                )
                loss = terms["w0"] + terms["w1"] + terms["s0"] + terms["s1"]
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(text.parameters(), c.rnn_grad_clip)
            scaler.step(optimizer)
            scaler.update()

        return step

    steps = steps_from_epochs(c.epochs, scale.train_images, c.batch_size)
    counts = _param_counts({"text_encoder": damsm.text_encoder, "image_encoder": damsm.image_encoder})
    fields = {
        "params_trainable": sum(v["trainable"] for v in counts.values()),
        "params_frozen": sum(v["frozen"] for v in counts.values()),
        "params_by_network": counts,
    }
    if cfg.measures_steps:
        step = make(train_overrides("fp32", cfg.compile_mode, cfg.device))
        with fp32_precision("ieee"):
            flops, by_op = count_flops(lambda: step(full))
        timings = [
            time_steps(lambda o: lambda i, s=make(o): s(full), mode, cfg)
            for mode in cfg.modes
            if not mode.endswith("+compile")
        ]
        fields.update(flops_by_op=by_op, **_measured_fields(timings, steps))
        progress(f"{scale.source}: damsm pre-training: {measured_summary(timings, steps)}")
    else:
        measured = measure_step(make({}), full, small, small_size, cfg, small_size == c.batch_size)
        flops = measured.flops
        fields.update(
            flops_by_op=measured.flops_by_op,
            timing_batch=measured.timing_batch,
            timing_flops=measured.timing_flops,
            timed_seconds=list(measured.seconds),
            cpu_seconds_per_step=measured.cpu_seconds,
            threads=torch.get_num_threads(),
        )
    damsm.text_encoder.cpu().eval(), damsm.image_encoder.cpu().eval()
    return _row(
        "damsm",
        "damsm",
        scale,
        c.batch_size,
        steps,
        flops,
        cfg,
        epochs=float(c.epochs),
        real_objects=int(full.real_objects.sum()),
        notes=[damsm_note(c)],
        **fields,
    )


def _evaluation_rows(rows: Sequence[Mapping[str, Any]], scale: DatasetScale, cfg: EstimateConfig) -> list[dict]:
    """FID / IS on sample0 + DS (LPIPS, two AlexNet passes per pair) per sampled (method, setting); the real
    statistics (test + val through Inception) once per dataset."""
    per_image = evaluation_flops_per_image(scale.image_size)
    out = []
    for row in rows:
        if row["kind"] == "sample":
            flops = per_image["inception"] + 2 * per_image["alexnet"]
            out.append(
                _row(
                    "evaluate",
                    row["method"],
                    scale,
                    1,
                    scale.test_images,
                    flops,
                    cfg,
                    setting=row["setting"],
                    unit="image",
                )
            )
    out.append(
        _row(
            "evaluate",
            "real_data",
            scale,
            1,
            scale.test_images + scale.val_images,
            per_image["inception"],
            cfg,
            unit="image",
        )
    )
    return out


def run_estimate(
    cfg: EstimateConfig,
    base_config: str | Path,
    paper_configs: Sequence[str | Path],
    dataset_stats: str | Path,
    out_dir: str | Path,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Estimate every paper config; write ``paper_estimate.json``, ``paper_estimate.md`` and ``run.json``."""
    import os
    import resource

    from retrievegan.device import describe, pick_device

    pick_device(cfg.device, "estimate.device")  # cuda without a GPU: a clear error before any work
    out_dir = Path(out_dir)
    stats = read_dataset_stats(dataset_stats)
    load = os.getloadavg()
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    scales = {}
    for paper in paper_configs:
        config = load_paper_config(base_config, paper)
        scale = dataset_scale(config, stats, cfg)
        if scale.source in scales:
            raise ConfigError(f"two paper configs for {scale.source}")
        scales[scale.source] = dataclasses.asdict(scale)
        with tempfile.TemporaryDirectory(prefix="paper-estimate-") as tmp:
            rows.extend(estimate_dataset(config, scale, cfg, Path(tmp), progress))
    random_weights = sorted({n for r in rows for n in r.get("notes", [])}) or ["none"]
    result = {
        "config": runinfo.to_jsonable(cfg),
        "paper_configs": [str(p) for p in paper_configs],
        "base_config": str(base_config),
        "dataset_stats": str(dataset_stats),
        "gpu_note": gpu_note(cfg),
        "cpu": cpu_name(),
        "device": describe(cfg.device),
        "threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in load],
        "datasets": scales,
        "random_weights": random_weights,
        "rows": rows,
        "totals": table_totals(rows, cfg),
        "assumptions": list(ASSUMPTIONS),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    io.write_json(out_dir / "paper_estimate.json", result)
    io.write_text(out_dir / "paper_estimate.md", render_markdown(result))
    runinfo.write_run_json(
        out_dir,
        "paper-estimate",
        cfg,
        cfg.seed,
        {
            "base_config": str(base_config),
            "paper_configs": [str(p) for p in paper_configs],
            "dataset_stats": str(dataset_stats),
            "wall_seconds": result["wall_seconds"],
            "threads": result["threads"],
            "load_average": result["load_average"],
            "peak_rss_mb": result["peak_rss_mb"],
            "random_weights": random_weights,
            "device": result["device"],
        },
    )
    return result
