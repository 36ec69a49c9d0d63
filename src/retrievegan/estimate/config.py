"""The ``estimate`` config section (``retrievegan paper-estimate``) as a frozen dataclass."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from retrievegan.config import from_mapping

PRECISIONS = (
    "fp32",
    "tf32",
    "bf16",
    "fp16",
)  # fp32: IEEE; tf32: TF32 matmuls / convolutions (CUDA); bf16 / fp16: autocast


@dataclasses.dataclass(frozen=True)
class EstimateConfig:
    """The ``estimate`` config section (``paper_configs`` is read by the rule, which passes the files)."""

    reference_gpu: str = "NVIDIA A100-SXM4-40GB"  # the GPU the GPU-hours are projected for
    peak_tflops_fp32: float = 19.5  # A100 dense FP32 (datasheet)
    peak_tflops_tf32: float = 156.0  # A100 dense TF32 tensor cores (datasheet)
    utilization: tuple[float, float] = (0.15, 0.4)  # model FLOP utilisation range (ours: small-batch GANs)
    warmup_steps: int = 1  # untimed steps before timing (at the timing batch)
    timed_steps: int = 3  # timed CPU steps (the fastest counts: other processes only ever slow a step down)
    timing_batch_size: int | None = 4  # images per timed CPU step (None: the paper batch); scaled by FLOPs
    methods: tuple[str, ...] = (
        "sg2im",
        "attngan",
        "layout2im",
        "pastegan",
        "retrievegan",
        "retrievegan_no_gt_no_occur",
        "retrievegan_gt_only",
        "retrievegan_occur_only",
    )
    table2_dataset: Literal["coco_stuff", "visual_genome"] = "coco_stuff"  # paper: Table 2 is COCO-Stuff only
    sampling: bool = True  # estimate the sampling cost (2 samples x test graphs x settings)
    evaluation: bool = True  # estimate the FID / IS / DS cost
    vg_num_predicates: int = 46  # sg2im's Visual Genome vocab: 45 relationships + __in_image__
    seed: int = 0
    # --- measured steps: real training steps at the paper batch on `device`, per precision mode ---
    device: Literal["cpu", "cuda"] = "cpu"  # cuda: measure on the GPU (`retrievegan paper-estimate --device cuda`)
    measured: bool = False  # measure on `device` (always with cuda); false: CPU steps at the timing batch x FLOPs
    modes: tuple[str, ...] = ("fp32", "tf32", "bf16")  # fp32 | tf32 | bf16 | fp16, "+compile" to compile
    measure_warmup_steps: int = 3  # untimed steps per mode (cuDNN autotuning, allocator, compilation)
    measure_timed_steps: int = 15  # timed steps per mode (the median counts)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"  # for "+compile" modes

    @property
    def measures_steps(self) -> bool:
        return self.measured or self.device == "cuda"

    def __post_init__(self) -> None:
        low, high = self.utilization
        if not 0 < low <= high <= 1:
            raise ValueError("utilization must be (low, high) with 0 < low <= high <= 1")
        if self.peak_tflops_fp32 <= 0 or self.peak_tflops_tf32 <= 0:
            raise ValueError("peak TFLOP/s must be > 0")
        if self.warmup_steps < 0 or self.timed_steps < 1:
            raise ValueError("warmup_steps must be >= 0 and timed_steps >= 1")
        if self.timing_batch_size is not None and self.timing_batch_size < 1:
            raise ValueError("timing_batch_size must be >= 1 (or null: the paper batch)")
        if self.measure_warmup_steps < 0 or self.measure_timed_steps < 1:
            raise ValueError("measure_warmup_steps must be >= 0 and measure_timed_steps >= 1")
        bad = [m for m in self.modes if m.removesuffix("+compile") not in PRECISIONS]
        if bad or not self.modes:
            raise ValueError(f"modes must be a non-empty list of {PRECISIONS} (optionally +compile), got {bad}")
        from retrievegan.runs import METHODS

        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown or not self.methods:
            raise ValueError(f"methods must be a non-empty list of registered methods (unknown: {unknown})")


def estimate_config(params: Mapping[str, Any] | None) -> EstimateConfig:
    """The ``estimate`` config section as a frozen dataclass (unknown keys are errors)."""
    return from_mapping(EstimateConfig, params, "estimate")
