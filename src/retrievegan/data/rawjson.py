"""Loading raw annotation files with errors that name the file and the record."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from retrievegan import io
from retrievegan.errors import InputError


def load_json(path: str | Path) -> Any:
    return io.read_json(path)


def require(record: Any, key: str, path: str | Path, where: str) -> Any:
    if not isinstance(record, dict):
        raise InputError(path, f"expected an object, got {type(record).__name__}", where)
    if key not in record:
        raise InputError(path, f"missing field {key!r}", where)
    return record[key]


def require_list(value: Any, path: str | Path, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise InputError(path, f"expected a list, got {type(value).__name__}", where)
    return value


def check_box(
    x: Any, y: Any, w: Any, h: Any, width: int, height: int, tolerance: float, path: str | Path, where: str
) -> tuple[float, float, float, float]:
    """Validate an ``(x, y, w, h)`` pixel box against its image; return it as floats.

    Raises InputError for non-numbers, zero or negative width/height, or a box that leaves the
    image by more than ``tolerance`` px.
    """
    try:
        values = tuple(float(v) for v in (x, y, w, h))
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"box {[x, y, w, h]!r} is not four numbers", where) from exc
    if not all(math.isfinite(v) for v in values):
        raise InputError(path, f"box {list(values)} has a non-finite value", where)
    bx, by, bw, bh = values
    if bw <= 0 or bh <= 0:
        raise InputError(path, f"box {list(values)} has zero or negative area", where)
    if bx < -tolerance or by < -tolerance or bx + bw > width + tolerance or by + bh > height + tolerance:
        raise InputError(path, f"box {list(values)} lies outside the {width}x{height} image", where)
    return values
