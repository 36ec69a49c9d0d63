"""``run.json``: what every run folder records (resolved config, git SHA, seed, library versions)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from retrievegan import io

_TRACKED_LIBRARIES = (
    "retrievegan",
    "torch",
    "torchvision",
    "numpy",
    "pillow",
    "pycocotools",
    "torch-fidelity",
    "lpips",
    "snakemake",
    "dvc",
    "pandas",
)


def git_sha(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The checked-out commit, with ``-dirty`` if the work tree has uncommitted changes; None outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _TRACKED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, tuples and paths as plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def run_record(stage: str, config: Any, seed: int | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    record = {
        "stage": stage,
        "config": to_jsonable(config),
        "seed": seed,
        "git_sha": git_sha(),
        "versions": library_versions(),
        "command": sys.argv,
        "host": platform.node(),
        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        record.update(to_jsonable(extra))
    return record


def write_run_json(
    run_dir: str | os.PathLike[str], stage: str, config: Any, seed: int | None, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``<run_dir>/run.json`` atomically and return its path."""
    path = Path(run_dir) / "run.json"
    io.write_json(path, run_record(stage, config, seed, extra))
    return path
