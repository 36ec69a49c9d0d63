"""Atomic file writes: every declared output is written to a temporary file and moved into place.

A crash or an error therefore never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from retrievegan.errors import InputError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``, else delete it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the file normal permissions
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; it replaces ``path`` only if the block succeeds."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def dumps_json(obj: Any) -> str:
    """Canonical JSON text: sorted keys, 1-space indent, trailing newline (byte-stable)."""
    return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, dumps_json(obj))


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Save ``array`` as a .npy file (memory-mappable with ``np.load(mmap_mode='r')``)."""
    with atomic_open(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)


NPZ_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # the earliest zip date: entries carry no build time


def save_npz(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> None:
    """An ``np.load``-able ``.npz`` of ``arrays`` (uncompressed, no pickles), byte-stable: ``np.savez`` stamps
    every entry with the current time, which makes two identical runs write different files."""
    import zipfile

    with atomic_open(path, "wb") as handle:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, array in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=NPZ_TIMESTAMP)
                info.external_attr = 0o644 << 16
                with archive.open(info, "w", force_zip64=True) as entry:
                    np.lib.format.write_array(entry, np.asanyarray(array), allow_pickle=False)


@contextlib.contextmanager
def atomic_memmap(path: str | os.PathLike[str], shape: tuple[int, ...], dtype: np.dtype | str) -> Iterator[np.memmap]:
    """Yield a writable .npy memmap of ``shape``; it appears at ``path`` only when the block succeeds."""
    with atomic_path(path) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype), shape=shape)
        try:
            yield array
            array.flush()
        finally:
            del array


def read_json(path: str | os.PathLike[str], missing: str = "file not found") -> Any:
    """Parse a JSON file; a missing, non-UTF-8 or malformed file is an InputError naming it
    (``missing`` is the message for an absent file, e.g. which stage writes it)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError as exc:
        raise InputError(path, missing) from exc
    except json.JSONDecodeError as exc:
        raise InputError(path, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text: {exc}") from exc


def read_torch(path: str | os.PathLike[str], missing: str = "file not found", map_location: Any = "cpu") -> Any:
    """The one reader of torch files: ``torch.load(path, weights_only=True)`` (no arbitrary unpickling); a
    missing, truncated or otherwise unreadable file is an InputError naming it (``missing``: the message for
    an absent file, e.g. which stage writes it or where the weights come from)."""
    import pickle

    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise InputError(path, missing) from exc
    # torch's errors for a corrupt or truncated archive, a non-weights pickle, a folder or a permission problem
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as exc:
        raise InputError(path, f"cannot read the torch file: {exc}") from exc


def load_array(
    path: str | os.PathLike[str],
    missing: str = "file not found",
    *,
    mmap: bool = True,
    ndim: int | None = None,
    dtype: np.dtype | str | None = None,
    kind: str | None = None,
    shape: tuple[int | None, ...] | None = None,
) -> np.ndarray:
    """The one loader of ``.npy`` arrays (memory-mapped unless ``mmap`` is False), checked on the way in.

    ``ndim``, ``dtype``, ``kind`` (numpy dtype kind letters, e.g. ``"f"`` or ``"iu"``) and ``shape`` (None
    entries match any size) are what the caller expects. A missing file (message ``missing``), a truncated
    or corrupt file, a pickled object or an array of another shape or type is an InputError naming the file.
    """
    path = Path(path)
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError as exc:
        raise InputError(path, missing) from exc
    # numpy's errors for a bad header, a truncated body ("mmap length is greater than file size"), an empty
    # file, a pickle, a folder or a permission problem
    except (ValueError, EOFError, OSError) as exc:
        raise InputError(path, f"not a readable .npy array: {exc}") from exc
    expected = []
    if shape is not None:
        ndim = len(shape)
    if ndim is not None and array.ndim != ndim:
        expected.append(f"{ndim}-D")
    if (
        shape is not None
        and array.ndim == len(shape)
        and any(want is not None and got != want for got, want in zip(array.shape, shape))
    ):
        expected.append("shape (" + ", ".join("*" if w is None else str(w) for w in shape) + ")")
    if dtype is not None and array.dtype != np.dtype(dtype):
        expected.append(str(np.dtype(dtype)))
    if kind is not None and array.dtype.kind not in kind:
        expected.append(f"dtype kind {kind!r}")
    if expected:
        raise InputError(path, f"expected a {' '.join(expected)} array, got shape {array.shape} {array.dtype}")
    return array


def _canonical(obj: Any) -> Any:
    """A copy of a torch payload whose pickle does not depend on object identity: pickle writes a string it
    has seen before *as the same object* as a back-reference, so a state dict whose keys are shared literals
    (a fresh run) and one whose keys came out of another pickle (a resumed run) gave different bytes for the
    same values. Every string is interned, every container rebuilt (``OrderedDict`` keeps its
    ``_metadata``, the module versions ``load_state_dict`` reads); tensors and scalars are kept."""
    import collections

    if isinstance(obj, str):
        return sys.intern(str(obj))
    if isinstance(obj, collections.OrderedDict):
        copy = collections.OrderedDict((_canonical(k), _canonical(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            copy._metadata = _canonical(obj._metadata)  # type: ignore[attr-defined]
        return copy
    if type(obj) is dict:
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if type(obj) is list:
        return [_canonical(v) for v in obj]
    if type(obj) is tuple:
        return tuple(_canonical(v) for v in obj)
    return obj


def save_torch(path: str | os.PathLike[str], obj: Any) -> None:
    """``torch.save(obj)`` atomically and byte-stable: the same values give the same bytes. Written through a
    file handle, so the zip records are named ``archive/...`` (``torch.save`` to a path names them after the
    file, here a random temporary name), and pickled from a canonical copy (``_canonical``)."""
    import torch

    with atomic_open(path, "wb") as handle:
        torch.save(_canonical(obj), handle)


def load_table_array(
    path: str | os.PathLike[str], dtype: np.dtype | str, num_rows: int | None = None, missing: str = "file not found"
) -> np.ndarray:
    """A 2-D ``.npy`` array row-aligned with the patch table, memory-mapped: ``(P, D)`` of ``dtype``;
    a missing or unreadable file, another shape or dtype, or a row count other than ``num_rows`` is an InputError."""
    array = load_array(path, missing, ndim=2, dtype=dtype)
    if num_rows is not None and len(array) != num_rows:
        raise InputError(path, f"{len(array)} rows but the patch table has {num_rows}")
    return array


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The SHA-256 hex digest of a file, read in ``chunk``-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def read_loss_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a training run's ``losses.jsonl``: one JSON object with a ``step`` key per non-empty line.
    A missing file or a malformed line is an :class:`InputError` naming the file and the line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise InputError(path, "loss log not found") from exc
    records = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"malformed JSON: {exc.msg}", f"line {n}") from exc
        if not isinstance(record, dict) or "step" not in record:
            raise InputError(path, "each line must be a JSON object with a 'step' key", f"line {n}")
        records.append(record)
    return records
