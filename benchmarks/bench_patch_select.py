"""The patch gather's backward pass (``WeightedRows.backward``, RetrieveGAN's and PasteGAN's differentiable patch
selection): gathered in column chunks of ``SELECT_BACKWARD_BYTES`` (the library default) vs. all candidate rows in
one pass (the reference), in one process on the same tensors.

Shapes: the embedded benchmark's training step, ``BENCH_SELECT_B`` images (16) x ``BENCH_SELECT_N`` object slots (8)
x ``BENCH_SELECT_K`` candidates (32, ``retrieval.k``), bank rows of 3 x 32 x 32 float32 pixels (the patch crops),
``BENCH_SELECT_BANK`` rows (8000), one torch thread. The gradients must be identical bit for bit (each weight's
gradient is its own row's dot product, whatever the chunk); the table gives the median milliseconds per backward.

    python -m benchmarks.bench_patch_select
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, row  # noqa: E402

B = int(os.environ.get("BENCH_SELECT_B", 16))
N = int(os.environ.get("BENCH_SELECT_N", 8))
K = int(os.environ.get("BENCH_SELECT_K", 32))
BANK = int(os.environ.get("BENCH_SELECT_BANK", 8000))
REPEATS = int(os.environ.get("BENCH_SELECT_REPEATS", 15))
ONE_PASS = 1 << 40  # bytes: every candidate column in one gather (the reference)


def _backward_ms(module, limit: int, weights, values, index) -> tuple[float, object]:
    """Median milliseconds of one backward pass with ``module.SELECT_BACKWARD_BYTES = limit``, and the gradient."""
    import torch

    saved = module.SELECT_BACKWARD_BYTES
    module.SELECT_BACKWARD_BYTES = limit
    try:
        times, grad = [], None
        for _ in range(REPEATS + 1):
            w = weights.clone().requires_grad_(True)
            out = module.WeightedRows.apply(w, values, index, None, None)
            upstream = torch.ones_like(out)
            start = time.perf_counter()
            out.backward(upstream)
            times.append((time.perf_counter() - start) * 1e3)
            grad = w.grad
        return statistics.median(times[1:]), grad
    finally:
        module.SELECT_BACKWARD_BYTES = saved


def run() -> list[dict]:
    import torch

    from retrievegan.models import patch_method

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    values = torch.rand(BANK, 3 * 32 * 32, generator=gen)
    index = torch.randint(0, BANK, (B, N, K), generator=gen)
    index[:, -2:] = -1  # padded object slots, as in a batch of images with fewer objects
    weights = torch.softmax(torch.randn(B, N, K, generator=gen), dim=2)
    reference_ms, reference_grad = _backward_ms(patch_method, ONE_PASS, weights, values, index)
    chunked_ms, chunked_grad = _backward_ms(patch_method, patch_method.SELECT_BACKWARD_BYTES, weights, values, index)
    identical = bool(torch.equal(reference_grad, chunked_grad))
    note = f"B={B} N={N} K={K}, 3x32x32 rows, 1 thread; gradients identical: {identical}"
    rows = [
        row("patch_select", "backward ms (chunked)", chunked_ms, "ms", reference_ms, better="lower", note=note),
        row("patch_select", "gradients identical", float(identical), "bool", 1.0, note="bit for bit"),
    ]
    if not identical:
        raise AssertionError("chunked and one-pass gradients differ")
    return rows


if __name__ == "__main__":
    print_table(run())
