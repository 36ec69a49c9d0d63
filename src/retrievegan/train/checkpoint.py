"""Checkpoints: atomic, byte-stable save, safe load (``weights_only``), file hashes.

A training checkpoint is a dict::

    format, version, method (registry name), method_config, train_config, spec, inputs, config_hash,
    step, epoch, world_size, networks {name: state_dict}, optimizers {name: state_dict},
    scalers {phase: state_dict}
    [batch_sampler {kind, seed, batch_size, categories, probabilities_sha256, next_batch}: rarity.dataset only]

Every value is a tensor or a plain Python container/scalar, so ``torch.load(weights_only=True)``
reads it without unpickling arbitrary objects. No global RNG state is stored: the harness draws every
random number from explicit generators derived from the seeds (a resumed run needs none), and the
process-wide Python / NumPy states differ per process, which made every checkpoint's bytes differ
between two otherwise identical runs. Same computation, same bytes (``make verify``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from retrievegan import io
from retrievegan.errors import InputError

FORMAT = "retrievegan-checkpoint"
VERSION = 1


def save(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically (temporary file + rename), byte-stable (``io.save_torch``)."""
    io.save_torch(path, payload)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save`` (``weights_only``: no arbitrary unpickling)."""
    path = Path(path)
    payload = io.read_torch(path, "checkpoint not found (run `retrievegan train`)", map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(path, f"not a {FORMAT} file")
    if payload.get("version") != VERSION:
        raise InputError(path, f"unsupported checkpoint version {payload.get('version')!r} (expected {VERSION})")
    return payload
