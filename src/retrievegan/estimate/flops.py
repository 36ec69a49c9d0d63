"""FLOP counting (``FlopCounterMode``) and the FLOP -> GPU-hour arithmetic of the estimate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from retrievegan.errors import ConfigError
from retrievegan.estimate.config import EstimateConfig
from retrievegan.models.init import meta_device


def steps_from_epochs(epochs: int, images: int, batch_size: int) -> int:
    """Optimisation steps of ``epochs`` passes over ``images`` at ``batch_size`` (last partial batch dropped)."""
    if batch_size < 1 or images < batch_size:
        raise ConfigError(f"batch size {batch_size} does not fit {images} images")
    return epochs * (images // batch_size)


def gpu_hours(total_flops: float, peak_tflops: float, utilization: float) -> float:
    """Hours one GPU of ``peak_tflops`` TFLOP/s needs for ``total_flops`` at model FLOP utilisation ``utilization``."""
    if peak_tflops <= 0 or not 0 < utilization <= 1:
        raise ValueError("peak_tflops must be > 0 and utilization in (0, 1]")
    return total_flops / (peak_tflops * 1e12 * utilization) / 3600.0


def gpu_hour_range(total_flops: float, peak_tflops: float, utilization: tuple[float, float]) -> tuple[float, float]:
    """(low, high) GPU-hours: the high utilisation gives the low number."""
    return gpu_hours(total_flops, peak_tflops, utilization[1]), gpu_hours(total_flops, peak_tflops, utilization[0])


def gpu_note(cfg: EstimateConfig) -> str:
    """How the peak numbers are meant (the defaults are the NVIDIA A100 datasheet's dense numbers)."""
    return (
        f"peak {cfg.peak_tflops_fp32:g} TFLOP/s FP32 and {cfg.peak_tflops_tf32:g} TFLOP/s TF32 tensor cores, "
        "dense; the paper configs train in FP32 (amp: false), and PyTorch runs cuDNN convolutions in TF32 by "
        "default on Ampere (torch.backends.cudnn.allow_tf32), matmuls in FP32"
    )


def count_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """Run ``fn`` under FlopCounterMode: (total FLOPs, FLOPs per aten op, e.g. ``convolution`` (forward) and
    ``convolution_backward``). Per-module numbers are not returned: FlopCounterMode's module tracker attributes
    backward ops of a generator to the discriminator whose backward runs at the same time."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    by_op = {
        str(op).removeprefix("aten.").split(".")[0]: int(n)
        for op, n in counter.get_flop_counts().get("Global", {}).items()
    }
    return int(counter.get_total_flops()), by_op


def evaluation_flops_per_image(image_size: int) -> dict[str, int]:
    """Forward FLOPs per image of the paper's evaluation networks (meta tensors, no weights): torch-fidelity's
    Inception-v3 at 299 px (FID + IS share one pass) and LPIPS's AlexNet trunk at the image size."""
    from torchvision.models import alexnet, inception_v3

    with meta_device():
        inception = inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
        alex = alexnet(weights=None).features[:12].eval()  # LPIPS taps relu1..relu5 (no last max-pool)
        with torch.no_grad():
            fid = count_flops(lambda: inception(torch.zeros(1, 3, 299, 299)))[0]
            lpips = count_flops(lambda: alex(torch.zeros(1, 3, image_size, image_size)))[0]
    return {"inception": fid, "alexnet": lpips}
