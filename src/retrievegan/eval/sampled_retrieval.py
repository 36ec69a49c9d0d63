"""The test-time retrieval of a trained RetrieveGAN, without rendering images: what `retrievegan sample` retrieves
(random query candidate, Gumbel noise as ``sample_gumbel``, per-image generators of the sampler's seed rule), for
every scene graph of a split and every sample seed. Used by `retrievegan group-mass` (eq. 4's group masses) and
`retrievegan compat-trace` (compatibility of the retrievals of each training snapshot)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from retrievegan.errors import ConfigError


def require_retrieval(method: Any, name: str) -> None:
    if not hasattr(method, "sample_retrieval"):
        raise ConfigError(f"{name} has no differentiable retrieval (RetrieveGAN and its variants do)")


def sampled_retrievals(
    method: Any,
    nets: Mapping[str, Any],
    dataset: Any,
    seeds: Sequence[int],
    batch_size: int,
    device: Any,
    mode: str = "hard",
    desc: str = "retrieval",
    progress: bool = True,
) -> Iterator[tuple[Any, int, Any, Any, Any]]:
    """Yields ``(batch, sample index, candidate ids (B, N, k), mask (B, N, k), RetrievalOutput)`` for every batch
    of ``dataset`` (in order) and every seed of ``seeds``; ``batch`` is on ``device``. Runs under ``no_grad``."""
    import torch

    from retrievegan.data.dataset import sequential_loader
    from retrievegan.progressbar import progress_bar
    from retrievegan.seeds import SAMPLE_NOISE, image_generators

    with torch.no_grad():
        for batch in progress_bar(sequential_loader(dataset, batch_size, 0), desc=desc, disable=not progress):
            ids = batch.image_ids.tolist()
            batch = method.host_prepare(batch).to(device)  # host inputs made on the host (no device reads)
            for index, seed in enumerate(seeds):
                gens = image_generators((SAMPLE_NOISE, seed), ids, device)
                cand, mask, out = method.sample_retrieval(nets, batch, gens, mode)
                yield batch, index, cand, mask, out
