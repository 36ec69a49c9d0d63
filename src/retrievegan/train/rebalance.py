"""Rarity rebalancing in training (conditional IMLE supplement, Appendix A): the batch sampler (dataset
rebalancing) and the per-pixel rarity mask of the reconstruction losses (loss rebalancing).

**Dataset rebalancing** (:class:`RarityBatchSampler`): the ``rarity.top_categories`` (5) categories with the
largest total area over the training split each get an equal share of every global batch, and the image of a
slot is drawn, with replacement, with probability proportional to its rarity score for the slot's category
(``R_p(k) / sum_k R_p(k)``; images without the category: 0). The supplement says "a portion of the batch" per
category; equal portions are ours: slot ``j`` of global batch ``b`` belongs to category ``top[(b * B + j) mod T]``,
so over the run every category gets exactly ``1 / T`` of the slots, also when ``B`` is not a multiple of ``T``.

Determinism: the draws of global batch ``b`` come from ``seeds.numpy_rng(seed, tag, b)``,
so the stream is a function of the run's seed and the batch number only (not of DataLoader workers or
prefetching). Drawn with replacement, an image may fill several slots: each slot gets its own training noise
(``(seed, global batch, slot)``: ``Trainer.noise_keys``), never a copy of another draw's. DDP: every process
computes the same global batch and takes its contiguous ``B / K`` share of the slots (as ``EpochBatchSampler``):
the processes' streams are disjoint parts of one stream, and the world size does not change what is computed.
Resume: :meth:`RarityBatchSampler.state_dict` (kind, seed, batch size, categories, a hash of the draw
probabilities, the next batch) goes into the checkpoint;
:meth:`~RarityBatchSampler.load_state_dict` refuses a state of another stream and continues at its next batch.

**Loss rebalancing** (:meth:`Rebalancing.pixel_weights`): ``(N, 1, S, S)`` normalised rarity masks of a batch
(:func:`retrievegan.data.rarity.rarity_mask`), handed to the method in ``StepContext.pixel_weights``; methods
that declare ``supports_rarity_loss`` weight their pixel / perceptual reconstruction losses with it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrievegan.data.rarity import RarityConfig, RarityTable, label_maps, rarity_mask
from retrievegan.errors import ConfigError, InputError
from retrievegan.io import sha256_file
from retrievegan.seeds import numpy_rng, tag

REBALANCE_ORDER = tag("rarity-rebalance")
SAMPLER_KIND = "rarity"


class RarityBatchSampler:
    """Global batches of image rows drawn by rarity within the top categories (module docstring).

    scores (N, C) float: R_p(k), 0 where absent; categories (T,) the categories with a batch share.
    """

    def __init__(
        self, scores: np.ndarray, categories: np.ndarray, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ):
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
        self.categories = np.asarray(categories, dtype=np.int64)
        if len(self.categories) < 1:
            raise ValueError("the sampler needs at least one category")
        columns = np.asarray(scores, dtype=np.float64)[:, self.categories].T  # (T, N)
        totals = columns.sum(1)
        if not (np.isfinite(columns).all() and (columns >= 0).all() and (totals > 0).all()):
            raise ValueError("every category of the sampler needs finite, non-negative scores and one image")
        self.probabilities = columns / totals[:, None]  # (T, N)
        self._cdf = np.cumsum(columns, axis=1)
        self.num_items = columns.shape[1]
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.fingerprint = hashlib.sha256(np.ascontiguousarray(self.probabilities).tobytes()).hexdigest()

    def _slots(self, batch: int) -> np.ndarray:
        """(B,) index into ``categories`` of every slot of global batch ``batch``: equal portions, round robin."""
        return (batch * self.batch_size + np.arange(self.batch_size)) % len(self.categories)

    def slot_categories(self, batch: int) -> np.ndarray:
        """(B,) the category of every slot of global batch ``batch``."""
        return self.categories[self._slots(batch)]

    def global_batch(self, batch: int) -> np.ndarray:
        """(B,) int64 image rows of global batch ``batch`` (every process computes the same)."""
        rng = numpy_rng(self.seed, REBALANCE_ORDER, batch)
        which = self._slots(batch)
        u = rng.random(self.batch_size) * self._cdf[which, -1]
        rows = np.array([np.searchsorted(self._cdf[t], x, side="right") for t, x in zip(which, u)], dtype=np.int64)
        return np.minimum(rows, self.num_items - 1)

    @property
    def local_slots(self) -> range:
        """The slots of every global batch that this process takes: its contiguous ``B / K`` share."""
        share = self.batch_size // self.world_size
        return range(self.rank * share, (self.rank + 1) * share)

    def local_batch(self, batch: int) -> list[int]:
        """This process's contiguous share of global batch ``batch``."""
        slots = self.local_slots
        return self.global_batch(batch)[slots.start : slots.stop].tolist()

    def batches(self, first: int, count: int) -> BatchRange:
        """A DataLoader batch sampler over global batches ``first .. first + count - 1``."""
        return BatchRange(self, first, count)

    def state_dict(self, next_batch: int) -> dict[str, Any]:
        """What the checkpoint stores: the stream's definition and the next global batch."""
        return {
            "kind": SAMPLER_KIND,
            "seed": int(self.seed),
            "batch_size": int(self.batch_size),
            "categories": [int(c) for c in self.categories],
            "probabilities_sha256": self.fingerprint,
            "next_batch": int(next_batch),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> int:
        """Check a stored state against this sampler; returns its next global batch (ValueError if it is the
        state of another stream)."""
        mine = self.state_dict(0)
        for key in ("kind", "seed", "batch_size", "categories", "probabilities_sha256"):
            if state.get(key) != mine[key]:
                raise ValueError(f"the stored batch sampler has {key} {state.get(key)!r}, this run {mine[key]!r}")
        return int(state["next_batch"])


class BatchRange(torch.utils.data.Sampler[list[int]]):
    """Global batches ``first .. first + count - 1`` of a :class:`RarityBatchSampler` (this process's share)."""

    def __init__(self, sampler: RarityBatchSampler, first: int, count: int):
        self.sampler, self.first, self.count = sampler, first, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[list[int]]:
        for batch in range(self.first, self.first + self.count):
            yield self.sampler.local_batch(batch)


@dataclasses.dataclass
class Rebalancing:
    """The ``rarity`` switches of one training run: the scores, the sampler (``rarity.dataset``) and the
    per-pixel weights (``rarity.loss``). Built by :func:`rebalancing`; None when both switches are off."""

    cfg: RarityConfig
    table: RarityTable
    scores: np.ndarray  # (N, C) float64
    sampler: RarityBatchSampler | None
    scores_sha256: str  # of the scores file, hashed once

    def identity(self) -> dict[str, Any]:
        """What changes the computation (part of the training run's config hash)."""
        config = {k: v for k, v in dataclasses.asdict(self.cfg).items() if k != "batch_size"}  # chunking only
        return {"config": config, "scores_sha256": self.scores_sha256}

    def record(self) -> dict[str, Any]:
        """For run.json: the switches, the scores file, the sampler's categories."""
        out: dict[str, Any] = {"scores": str(self.table.path), "scores_sha256": self.scores_sha256}
        if self.sampler is not None:
            out["top_categories"] = [int(c) for c in self.sampler.categories]
        return out

    def pixel_weights(self, batch: Any) -> torch.Tensor | None:
        """(N, 1, S, S) float32 rarity mask of a (CPU) batch, or None without loss rebalancing."""
        if not self.cfg.loss:
            return None
        labels = label_maps(
            batch.objs, batch.boxes, batch.masks, batch.obj_to_img, batch.num_images, int(batch.images.shape[-1])
        )
        rows = torch.from_numpy(self.scores[batch.image_index.cpu().numpy()])
        return rarity_mask(labels, rows.to(labels.device))


def rebalancing(
    cfg: RarityConfig | None,
    scores_path: str | Path | None,
    dataset: Any,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> Rebalancing | None:
    """The rebalancing of a run (None when ``rarity.dataset`` and ``rarity.loss`` are off). ``dataset``: the
    training :class:`~retrievegan.data.dataset.SceneGraphDataset` (the scores must belong to it)."""
    if cfg is None or not cfg.enabled:
        return None
    if scores_path is None:
        raise ConfigError("rarity.dataset / rarity.loss need the rarity scores (--rarity-scores, `retrievegan rarity`)")
    table = RarityTable(scores_path)
    table.check_dataset(dataset.image_ids, dataset.graphs_path, dataset.spec.num_objects)
    scores = table.dense()
    sampler = None
    if cfg.dataset:
        try:
            sampler = RarityBatchSampler(
                scores, table.top_categories(cfg.top_categories), batch_size, seed, rank, world_size
            )
        except ValueError as exc:
            raise InputError(table.path, str(exc)) from exc
    return Rebalancing(cfg, table, scores, sampler, sha256_file(table.path))
