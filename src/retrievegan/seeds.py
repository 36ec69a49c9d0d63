"""Derived seeds: every random draw gets its own generator, seeded from a tuple of integers.

``derive_seed(seed, image_id, ...)`` hashes the tuple with numpy's ``SeedSequence`` so that nearby
tuples give unrelated streams. Per-image generators make results independent of batch size, batch
composition, worker count and the number of distributed processes.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

import numpy as np

# Domain tags keep the streams of different uses apart (fixed forever: changing one changes results).
INIT = 1  # network initialisation
TRAIN_NOISE = 2  # per-image noise while training
SAMPLE_NOISE = 3  # per-image noise while sampling
TRAIN_SLOT_NOISE = 4  # per-slot noise while training on batches that may repeat an image (rarity sampler)


def tag(name: str) -> int:
    """A stable integer for a string (e.g. a method or network name) to use inside a seed tuple."""
    return zlib.crc32(name.encode("utf-8"))


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from a tuple of non-negative integers (order matters)."""
    if not parts:
        raise ValueError("derive_seed needs at least one part")
    values = [int(p) for p in parts]
    if any(v < 0 for v in values):
        raise ValueError(f"seed parts must be non-negative, got {values}")
    state = np.random.SeedSequence(values).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


def numpy_rng(*parts: int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(*parts))


def torch_generator(seed: int, device: object = "cpu"):
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def image_generators(prefix: Sequence[int], image_ids: Iterable[int], device: object = "cpu") -> list:
    """One ``torch.Generator`` per image, seeded with ``derive_seed(*prefix, image_id)``."""
    return [torch_generator(derive_seed(*prefix, int(i)), device) for i in image_ids]
