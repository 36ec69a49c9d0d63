"""Timing training steps: CPU steps scaled by FLOPs, and measured CUDA steps in each precision mode."""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from retrievegan.estimate.config import EstimateConfig
from retrievegan.estimate.flops import count_flops


@dataclasses.dataclass(frozen=True)
class StepMeasurement:
    flops: int  # one step at the full batch
    flops_by_op: dict[str, int]  # aten op -> FLOPs (full batch)
    timing_batch: int
    timing_flops: int  # one step at the timing batch
    seconds: tuple[float, ...]  # the timed steps at the timing batch

    @property
    def cpu_seconds(self) -> float:
        """Fastest measured seconds per step, scaled to the full batch by the FLOP ratio."""
        return min(self.seconds) * self.flops / max(self.timing_flops, 1)


def measure_step(
    step: Callable[[Any], Any], full: Any, small: Any, timing_batch: int, cfg: EstimateConfig, same: bool
) -> StepMeasurement:
    """Count the FLOPs of ``step(full)``; time ``step(small)`` (``same``: small is full)."""
    flops, by_op = count_flops(lambda: step(full))
    timing_flops = flops if same else count_flops(lambda: step(small))[0]
    for _ in range(cfg.warmup_steps):
        step(small)
    seconds = []
    for _ in range(cfg.timed_steps):
        start = time.perf_counter()
        step(small)
        seconds.append(time.perf_counter() - start)
    return StepMeasurement(flops, by_op, timing_batch, timing_flops, tuple(seconds))


# --- measured steps (CUDA, or the CPU) -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def fp32_precision(value: str) -> Iterator[None]:
    """How float32 matmuls, convolutions and RNNs run on CUDA: ``ieee`` (true fp32) or ``tf32`` (tensor cores);
    PyTorch's new precision API only (mixing it with ``allow_tf32`` is an error); restored afterwards."""
    import torch

    targets = [torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn]
    saved = [t.fp32_precision for t in targets]
    for target in targets:
        target.fp32_precision = value
    try:
        yield
    finally:
        for target, old in zip(targets, saved):
            target.fp32_precision = old


def train_overrides(mode: str, compile_mode: str, device: str = "cuda") -> dict[str, Any]:
    """``train`` keys of a measured mode (``fp32``, ``tf32``, ``bf16``, ``fp16``, each optionally ``+compile``)."""
    precision = mode.removesuffix("+compile")
    amp = precision in ("bf16", "fp16")
    return {
        "device": device,
        "amp": amp,
        "amp_dtype": "float16" if precision == "fp16" else "bfloat16",
        "compile": mode.endswith("+compile"),
        "compile_mode": compile_mode,
        "adam": "auto",
        "deterministic": False,
        "num_workers": 0,
    }


@dataclasses.dataclass(frozen=True)
class StepTiming:
    """Timed training steps of one method in one mode (or the error that stopped them)."""

    mode: str
    seconds: tuple[float, ...] = ()  # each timed step (host clock; on CUDA synchronised around each step)
    peak_memory_gib: float | None = None  # CUDA: peak allocated memory
    syncs_per_step: int | None = None  # CUDA: synchronising calls in one step (torch.cuda.set_sync_debug_mode)
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None


def time_steps(make: Callable[[dict[str, Any]], Callable[[int], Any]], mode: str, cfg: EstimateConfig) -> StepTiming:
    """Time ``cfg.measure_timed_steps`` steps after ``cfg.measure_warmup_steps`` in ``mode`` on ``cfg.device``.
    ``make(train_overrides)`` builds a fresh trainer for the mode and returns ``step(i)``, one full training step
    on the paper batch. A mode that fails (e.g. a dtype error under autocast) is a result: its error is kept."""
    import torch

    from retrievegan.train.stepcount import cuda_sync_count

    cuda = cfg.device == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    precision = mode.removesuffix("+compile")
    try:
        with fp32_precision("ieee" if precision == "fp32" else "tf32"):
            step = make(train_overrides(mode, cfg.compile_mode, cfg.device))
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            for i in range(cfg.measure_warmup_steps):
                step(i)
            sync()
            syncs = None
            if cuda:
                _, syncs, _ = cuda_sync_count(lambda: step(cfg.measure_warmup_steps))
                sync()
            seconds = []
            for i in range(cfg.measure_timed_steps):
                start = time.perf_counter()
                step(cfg.measure_warmup_steps + 1 + i)
                sync()
                seconds.append(time.perf_counter() - start)
        memory = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        return StepTiming(mode, tuple(seconds), memory, syncs)
    except Exception as exc:  # noqa: BLE001 - a mode that fails is a result, not a crash of the estimate
        return StepTiming(mode, error=f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}")
    finally:
        if cuda:
            torch.cuda.empty_cache()
