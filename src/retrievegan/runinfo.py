"""``run.json``: what every run folder records, and the provenance that stays out of it.

Two records, kept apart so that the same commit, config and machine type give byte-identical outputs
(``make verify`` compares every DVC-tracked file with ``dvc.lock``):

* ``run.json`` (a declared, DVC-tracked output) holds what defines the result: the stage, the resolved
  config, the seed, the library versions and whatever the caller adds (input hashes, counts, notes).
  Nothing in it depends on where, when or by whom the run was made.
* the **provenance** (``provenance(...)``): git SHA of the work tree, command line, working directory,
  host, time, plus measured wall times and throughputs. It varies from run to run, so it is never written
  into a declared output: ``report_provenance`` prints it as one line on stderr, which every Snakemake rule
  sends to its job log (``results/<ds>/logs/<rule>.log``, not tracked by DVC)::

      [provenance] results/synth/models/sg2im/run.json {"command": [...], "git_sha": "...", ...}

  ``read_provenance(log)`` parses those lines back.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from retrievegan import io
from retrievegan.errors import InputError

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
PROVENANCE_TAG = "[provenance]"


def git_sha(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The checked-out commit, with ``-dirty`` if the work tree has uncommitted changes; None outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
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
    """The deterministic ``run.json`` content: stage, resolved config, seed, library versions (+ ``extra``).

    ``extra`` must not hold anything that varies between runs of the same commit and config (times,
    hosts, absolute paths): those go to ``report_provenance``.
    """
    record = {
        "stage": stage,
        "config": to_jsonable(config),
        "seed": seed,
        "versions": library_versions(),
    }
    if extra:
        record.update(to_jsonable(extra))
    return record


def provenance(measured: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where, when and from which commit this process ran (+ ``measured`` wall times etc.)."""
    record = {
        "git_sha": git_sha(),
        "command": list(sys.argv),
        "cwd": os.getcwd(),
        "host": platform.node(),
        "recorded_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if measured:
        record.update(to_jsonable(measured))
    return record


def report_provenance(
    output: str | os.PathLike[str], measured: dict[str, Any] | None = None, stream: TextIO | None = None
) -> dict[str, Any]:
    """Print the provenance of ``output`` as one ``[provenance] <output> {json}`` line on stderr (the job log
    under Snakemake; never a declared output) and return it."""
    record = provenance(measured)
    print(
        f"{PROVENANCE_TAG} {Path(output).as_posix()} {json.dumps(record, sort_keys=True)}",
        file=stream or sys.stderr,
        flush=True,
    )
    return record


def read_provenance(lines: Iterable[str]) -> dict[str, dict[str, Any]]:
    """output path -> provenance record, from the ``[provenance]`` lines of a job log (the last one wins)."""
    found: dict[str, dict[str, Any]] = {}
    for line in lines:
        if line.startswith(PROVENANCE_TAG + " "):
            path, _, text = line[len(PROVENANCE_TAG) + 1 :].rstrip("\n").partition(" ")
            found[path] = json.loads(text)
    return found


def write_run_json(
    run_dir: str | os.PathLike[str],
    stage: str,
    config: Any,
    seed: int | None,
    extra: dict[str, Any] | None = None,
    measured: dict[str, Any] | None = None,
) -> Path:
    """Write ``<run_dir>/run.json`` atomically (deterministic content) and report its provenance
    (+ ``measured``: wall times, throughput, resume step) to the job log; return its path."""
    path = Path(run_dir) / "run.json"
    io.write_json(path, run_record(stage, config, seed, extra))
    report_provenance(path, measured)
    return path


def logged_provenance(logs_dir: str | os.PathLike[str]) -> tuple[list[str], str]:
    """(the distinct commits, the latest date) of the ``[provenance]`` lines in the job logs ``logs_dir/*.log`` of a
    finished run: the commit(s) and day its outputs were made at. An :class:`InputError` when no line has them."""
    commits, dates = set(), []
    for log in sorted(Path(logs_dir).glob("*.log")):
        with open(log, encoding="utf-8", errors="replace") as lines:
            for rec in read_provenance(lines).values():
                if rec.get("git_sha"):
                    commits.add(str(rec["git_sha"]))
                if rec.get("recorded_utc"):
                    dates.append(str(rec["recorded_utc"])[:10])
    if not commits or not dates:
        raise InputError(
            logs_dir,
            "no [provenance] line with git_sha / recorded_utc in the job logs: cannot record the run's commit and date",
        )
    return sorted(commits), max(dates)
