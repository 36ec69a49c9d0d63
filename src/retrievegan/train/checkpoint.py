"""Checkpoints: atomic save, safe load (``weights_only``), RNG state capture/restore, file hashes.

A training checkpoint is a dict::

    format, version, method (registry name), method_config, train_config, spec, inputs, config_hash,
    step, epoch, world_size, networks {name: state_dict}, optimizers {name: state_dict},
    scalers {phase: state_dict}, rng {python, numpy, torch, cuda}
    [batch_sampler {kind, seed, batch_size, categories, probabilities_sha256, next_batch}: rarity.dataset only]

Every value is a tensor or a plain Python container/scalar, so ``torch.load(weights_only=True)``
reads it without unpickling arbitrary objects.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrievegan import io
from retrievegan.errors import InputError

FORMAT = "retrievegan-checkpoint"
VERSION = 1


def capture_rng() -> dict[str, Any]:
    """Global RNG states (python, numpy, torch CPU, every CUDA device). The harness draws from none of
    them, but third-party code might; a resumed run restores them all."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": _to_lists(random.getstate()),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_to_tuples(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_lists(v) for v in value]
    return value


def _to_tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuples(v) for v in value)
    return value


def save(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically (temporary file + rename)."""
    with io.atomic_open(path, "wb") as handle:
        torch.save(payload, handle)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save`` (``weights_only``: no arbitrary unpickling)."""
    path = Path(path)
    payload = io.read_torch(path, "checkpoint not found (run `retrievegan train`)", map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(path, f"not a {FORMAT} file")
    if payload.get("version") != VERSION:
        raise InputError(path, f"unsupported checkpoint version {payload.get('version')!r} (expected {VERSION})")
    return payload


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
