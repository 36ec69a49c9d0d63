"""The benchmark protocol shared by `benchmarks/bench_*.py` and the runner (`python -m benchmarks`).

A bench module exposes ``run() -> list[dict]``; each dict is one figure measured on this machine:

==============  ========  ===========================================================================
key             required  meaning
==============  ========  ===========================================================================
``benchmark``   yes       what is measured, e.g. ``"synth"``, ``"fid"``
``metric``      yes       the figure, e.g. ``"images/s (workers=2)"``
``value``       yes       a finite number
``unit``        yes       ``"images/s"``, ``"s"``, ``"MB"`` ...
``reference``   no        the same figure for a reference measured in the same process (a naive or
                          serial implementation, the previous approach) or a published number; None
``ratio``       no        ``value / reference`` (``row()`` fills it in); None without a reference
``better``      no        ``"higher"`` (default) or ``"lower"``: which way ``ratio`` should go
``note``        no        anything a reader needs (sizes, threads, "byte-identical: yes")
==============  ========  ===========================================================================

Use ``row(...)`` to build rows and, at the bottom of the module,
``if __name__ == "__main__": print_table(run())`` so ``python -m benchmarks.bench_x`` prints its table.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

REQUIRED = ("benchmark", "metric", "value", "unit")
OPTIONAL = ("reference", "ratio", "better", "note")
COLUMNS = REQUIRED + OPTIONAL
REPO = Path(__file__).resolve().parents[1]


def row(
    benchmark: str,
    metric: str,
    value: float,
    unit: str,
    reference: float | None = None,
    better: str = "higher",
    note: str = "",
) -> dict[str, Any]:
    ratio = value / reference if reference not in (None, 0) else None
    return {
        "benchmark": benchmark,
        "metric": metric,
        "value": float(value),
        "unit": unit,
        "reference": None if reference is None else float(reference),
        "ratio": ratio,
        "better": better,
        "note": note,
    }


def validate(rows: Any, source: str) -> list[dict[str, Any]]:
    """Check rows against the protocol; raise ValueError naming ``source`` and the bad row."""
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{source}: run() must return a non-empty list of dicts, got {type(rows).__name__}")
    out = []
    for i, item in enumerate(rows):
        if not isinstance(item, Mapping):
            raise ValueError(f"{source}: row {i} is not a dict: {item!r}")
        missing = [k for k in REQUIRED if k not in item]
        unknown = sorted(set(item) - set(COLUMNS))
        if missing or unknown:
            raise ValueError(f"{source}: row {i} missing {missing} / unknown keys {unknown}: {dict(item)!r}")
        value = item["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{source}: row {i} value must be a finite number, got {value!r}")
        if item.get("better", "higher") not in ("higher", "lower"):
            raise ValueError(f"{source}: row {i} better must be 'higher' or 'lower'")
        clean = {k: item.get(k) for k in COLUMNS}
        clean["better"] = clean["better"] or "higher"
        clean["note"] = clean["note"] or ""
        if clean["ratio"] is None and clean["reference"] not in (None, 0):
            clean["ratio"] = float(value) / float(clean["reference"])
        out.append(clean)
    return out


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """(best wall-clock seconds over ``repeat`` calls, the last result)."""
    best, result = math.inf, None
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def format_table(rows: Iterable[Mapping[str, Any]], columns: tuple[str, ...] = COLUMNS) -> str:
    """A Markdown table of ``rows`` (numbers to 3 significant digits)."""
    rows = list(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for item in rows:
        lines.append("| " + " | ".join(_fmt(item.get(c)).replace("|", "/") for c in columns) + " |")
    return "\n".join(lines)


def print_table(rows: list[dict[str, Any]]) -> None:
    print(format_table(validate(rows, "benchmark")))


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
    try:
        import torch

        torch_version = f"{torch.__version__} (CUDA: {torch.cuda.is_available()})"
    except ImportError:
        torch_version = "not installed"
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cpus": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "load average (1 min)": f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a",
        "python": platform.python_version(),
        "torch": torch_version,
        "git": (sha.stdout.strip() or "n/a") + (" + uncommitted changes" if dirty.stdout.strip() else ""),
        "date (UTC)": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
