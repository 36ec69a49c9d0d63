"""`python -m benchmarks` (`make benchmarks`): run every benchmarks/bench_*.py and the workflow figures.

Each bench module runs in its own process (``python -m benchmarks._worker``) with a time limit, so a
crash, a leaked thread pool or torch's thread settings cannot touch the others; its own printout goes to
the console and its rows (protocol: benchmarks/common.py, benchmarks/README.md) come back as JSON.
Then, for the workflow of ``--configfile`` (default config/config.yaml):

* end to end: the wall time and peak memory of every job from Snakemake's ``benchmark:`` files
  (``results/<dataset>/benchmarks/*.tsv``) and their sum;
* no-op re-run: ``snakemake -n`` on the finished workflow and, only if that reports nothing to do, a
  real second ``snakemake`` run (it has nothing to run, so it is safe);
* the complete run: with ``--reference-run DIR`` (a clone in which ``make reproduce`` ran; default: this
  repository), the elapsed time of its last Snakemake run that built every job of the workflow (Snakemake's
  own "Elapsed time" in ``DIR/.snakemake/log``) and, when ``DIR/.venv`` was installed right before it, the
  install time (``.venv/pyvenv.cfg`` to make's ``.venv/.installed`` stamp) and the total of both; the
  job times above then come from ``DIR``'s benchmark files too.

Everything lands in one table, ``results/benchmarks/benchmarks.md`` and ``.csv`` (written atomically),
with this machine's description. Exit status 1 if a benchmark failed (its error is in the table).
"""

from __future__ import annotations

import argparse
import csv
import io as _io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import COLUMNS, REPO, format_table, machine_info, row, validate

CSV_COLUMNS = ("module",) + COLUMNS + ("seconds",)


def discover(folder: Path, only: list[str] | None) -> list[str]:
    names = sorted(p.stem for p in folder.glob("bench_*.py"))
    if only:
        unknown = sorted(set(only) - set(names) - {n.removeprefix("bench_") for n in names})
        if unknown:
            raise SystemExit(f"unknown benchmark(s) {unknown}; found {names}")
        names = [n for n in names if n in only or n.removeprefix("bench_") in only]
    return names


def run_module(name: str, timeout: float) -> tuple[list[dict[str, Any]], float, str | None]:
    """(rows, seconds, error) of one bench module, run in a fresh interpreter."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = Path(tmp) / "rows.json"
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks._worker", name, str(out)],
                cwd=REPO,
                timeout=timeout,
                env=dict(os.environ, PYTHONPATH=_pythonpath()),
            )
        except subprocess.TimeoutExpired:
            return [], time.perf_counter() - start, f"timed out after {timeout:.0f} s"
        seconds = time.perf_counter() - start
        if proc.returncode != 0 or not out.is_file():
            error = out.with_suffix(".err")
            text = error.read_text().strip().splitlines()[-1] if error.is_file() else f"exit status {proc.returncode}"
            return [], seconds, text
        try:
            return validate(json.loads(out.read_text()), name), seconds, None
        except ValueError as exc:
            return [], seconds, str(exc)


def _pythonpath() -> str:
    return os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))


def _snakemake() -> str:
    exe = Path(sys.executable).with_name("snakemake")
    return str(exe) if exe.exists() else "snakemake"


def workflow_config(configfile: str | None) -> dict[str, Any]:
    from retrievegan.config import load_yaml, merge

    config = load_yaml(REPO / "config/config.yaml")
    return merge(config, load_yaml(REPO / configfile)) if configfile else config


def snakemake_benchmarks(results: Path, label: str) -> list[dict[str, Any]]:
    """One row per Snakemake `benchmark:` file (wall time), their sum, and the peak memory."""
    rows, total, peak = [], 0.0, (0.0, "")
    for tsv in sorted(results.glob("*.tsv")):
        with open(tsv, newline="") as handle:
            records = list(csv.DictReader(handle, delimiter="\t"))
        if not records:
            continue
        wall = sum(float(r["s"]) for r in records) / len(records)
        total += wall
        rss = max(float(r.get("max_rss") or 0) for r in records)
        if rss > peak[0]:
            peak = (rss, tsv.stem)
        rows.append(
            row(
                label,
                f"{tsv.stem} wall time",
                wall,
                "s",
                better="lower",
                note=f"Snakemake benchmark file {tsv.relative_to(REPO) if tsv.is_relative_to(REPO) else tsv}"
                + (f" (mean of {len(records)} repeats)" if len(records) > 1 else ""),
            )
        )
    if rows:
        rows.append(
            row(
                label,
                "sum of job wall times",
                total,
                "s",
                better="lower",
                note=f"{len(rows)} jobs with a benchmark file; serial sum, not elapsed time",
            )
        )
        rows.append(row(label, "peak job memory (max_rss)", peak[0], "MB", better="lower", note=peak[1]))
    return rows


def workflow_jobs(configfile: str | None) -> int | None:
    """Number of jobs of the whole workflow (``snakemake -n --forceall``), None if it cannot be planned."""
    extra = ["--configfile", configfile] if configfile else []
    proc = subprocess.run(
        [_snakemake(), "-n", "--forceall", "--cores", "1", *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"),
    )
    found = re.search(r"^total\s+(\d+)", proc.stdout + proc.stderr, re.M)
    return int(found.group(1)) if proc.returncode == 0 and found else None


_ELAPSED = re.compile(r"^Elapsed time: (?:(\d+) days?, )?(\d+):(\d\d):(\d\d(?:\.\d+)?)$", re.M)
_STEPS = re.compile(r"^(\d+) of (\d+) steps \(100%\) done$", re.M)


def complete_run(run_dir: Path, jobs: int | None) -> tuple[Path, float, float] | None:
    """(log, start epoch, elapsed s) of the newest Snakemake log in ``run_dir`` that finished all ``jobs`` jobs."""
    from datetime import datetime

    for log in sorted((run_dir / ".snakemake/log").glob("*.snakemake.log"), reverse=True):
        text = log.read_text(errors="replace")
        steps, elapsed = _STEPS.findall(text), _ELAPSED.search(text)
        if not steps or not elapsed or (jobs is not None and int(steps[-1][1]) != jobs):
            continue
        days, hours, minutes, seconds = elapsed.groups()
        total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        start = datetime.strptime(log.name.split(".snakemake.log")[0], "%Y-%m-%dT%H%M%S.%f").timestamp()
        return log, start, total
    return None


_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_JOB = re.compile(r"^\s+jobid: (\d+)$")
_THREADS = re.compile(r"^\s+threads: (\d+)$")
_DONE = re.compile(r"^Finished jobid: (\d+)")
_CORES = re.compile(r"^Provided cores: (\d+)$", re.M)


def core_occupancy(text: str) -> tuple[int, int, int, int] | None:
    """``(cores, elapsed s, idle core-seconds, busy core-seconds)`` of a Snakemake log: from each job's start and
    finish stamps (1 s resolution) and its ``threads`` (1 when the log names none), the seconds x cores that no job
    held between the first start and the last finish, and those the jobs held (None: no finished job). The busy
    core-seconds are the work (a job's threads held for its duration); the idle ones, how well the scheduler packed
    it: the elapsed time is (busy + idle) / cores."""
    from datetime import datetime

    found = _CORES.search(text)
    if found is None:
        return None
    cores = int(found.group(1))
    now, current = None, None
    start: dict[str, datetime] = {}
    end: dict[str, datetime] = {}
    threads: dict[str, int] = {}
    for line in text.splitlines():
        if stamp := _STAMP.match(line):
            now = datetime.strptime(stamp.group(1), "%a %b %d %H:%M:%S %Y")
        elif (job := _JOB.match(line)) and now is not None:
            current = job.group(1)
            start.setdefault(current, now)
        elif (used := _THREADS.match(line)) and current is not None:
            threads[current] = int(used.group(1))
        elif (done := _DONE.match(line)) and now is not None:
            end[done.group(1)] = now
    finished = [job for job in end if job in start]
    if not finished:
        return None
    first = min(start[job] for job in finished)
    elapsed = int((max(end[job] for job in finished) - first).total_seconds())
    held = [0] * elapsed
    for job in finished:
        for second in range(int((start[job] - first).total_seconds()), int((end[job] - first).total_seconds())):
            held[second] += min(threads.get(job, 1), cores)
    return cores, elapsed, sum(max(0, cores - n) for n in held), sum(min(cores, n) for n in held)


def reference_run_rows(run_dir: Path, label: str, configfile: str | None) -> list[dict[str, Any]]:
    """Elapsed time of the complete workflow run in ``run_dir`` and, if it was a fresh ``make reproduce``,
    the ``.venv`` install before it and the total."""
    jobs = workflow_jobs(configfile)
    found = complete_run(run_dir, jobs)
    if found is None:
        return [
            row(
                label,
                "complete workflow runs found",
                0,
                "runs",
                note=f"no Snakemake log in {run_dir}/.snakemake/log finished all {jobs} jobs (run `make "
                "reproduce` in a fresh clone and pass it with --reference-run)",
            )
        ]
    log, start, elapsed = found
    rows = [
        row(
            label,
            f"workflow elapsed ({jobs} jobs, --cores as run)",
            elapsed,
            "s",
            better="lower",
            note=f"Snakemake's 'Elapsed time' in {log}",
        )
    ]
    occupancy = core_occupancy(log.read_text(errors="replace"))
    if occupancy is not None:
        cores, span, idle, busy = occupancy
        rows.append(
            row(
                label,
                "idle core-seconds (no job held the core)",
                idle,
                "core-s",
                better="lower",
                note=f"{cores} cores x {span} s from the first job's start to the last one's finish, less "
                "each running job's threads, per second of the log's stamps",
            )
        )
        rows.append(
            row(
                label,
                "busy core-seconds (jobs' threads x their durations)",
                busy,
                "core-s",
                better="lower",
                note="the work the run held cores for (the same stamps); elapsed ~ (busy + idle) / cores",
            )
        )
    stamp, venv_cfg = run_dir / ".venv/.installed", run_dir / ".venv/pyvenv.cfg"
    if stamp.is_file() and venv_cfg.is_file():
        installed, created = stamp.stat().st_mtime, venv_cfg.stat().st_mtime
        if created <= installed <= start and start - installed < 60:  # `make reproduce`: install, then run
            rows.append(
                row(
                    label,
                    "make venv (fresh .venv, requirements.lock)",
                    installed - created,
                    "s",
                    better="lower",
                    note=f"{venv_cfg} to make's stamp {stamp} (mtimes)",
                )
            )
            rows.append(
                row(
                    label,
                    "make reproduce on a fresh clone (venv + workflow)",
                    start + elapsed - created,
                    "s",
                    better="lower",
                    note="from .venv/pyvenv.cfg to the end of the Snakemake run; excludes `git clone` "
                    "and the second or so of `python -m venv` before pyvenv.cfg is written",
                )
            )
    return rows


def noop_rerun(label: str, configfile: str | None, cores: int) -> list[dict[str, Any]]:
    extra = ["--configfile", configfile] if configfile else []
    start = time.perf_counter()
    dry = subprocess.run(
        [_snakemake(), "-n", "--cores", str(cores), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"),
    )
    dry_s = time.perf_counter() - start
    log = dry.stdout + dry.stderr
    if dry.returncode != 0:
        return [
            row(
                label,
                "snakemake -n (no-op check)",
                dry_s,
                "s",
                better="lower",
                note=f"snakemake -n failed ({dry.returncode}): {log.strip().splitlines()[-1] if log.strip() else ''}",
            )
        ]
    nothing = "Nothing to be done" in log
    pending = re.search(r"^total\s+(\d+)", log, re.M)
    rows = [
        row(
            label,
            "snakemake -n on the workflow",
            dry_s,
            "s",
            better="lower",
            note="finished workflow: nothing to do"
            if nothing
            else f"workflow not finished: {pending.group(1) if pending else '?'} jobs pending",
        )
    ]
    if nothing:
        start = time.perf_counter()
        again = subprocess.run(
            [_snakemake(), "--cores", str(cores), *extra],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"),
        )
        seconds = time.perf_counter() - start
        rows.append(
            row(
                label,
                "second snakemake run (no-op)",
                seconds,
                "s",
                better="lower",
                note="ran nothing" if again.returncode == 0 else f"failed ({again.returncode})",
            )
        )
    return rows


def write_outputs(out_dir: Path, rows: list[dict[str, Any]], machine: dict[str, str]) -> None:
    from retrievegan import io

    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for item in rows:
        writer.writerow({k: ("" if item.get(k) is None else item.get(k)) for k in CSV_COLUMNS})
    io.write_text(out_dir / "benchmarks.csv", buffer.getvalue())
    md = ["# Benchmarks", "", "Measured by `python -m benchmarks` on this machine:", ""]
    md += [f"* {key}: {value}" for key, value in machine.items()]
    md += [
        "",
        "`ratio` = value / reference (`better` says which way is good); `module` is the bench file, "
        "`seconds` the time it took.",
        "",
        format_table(rows, CSV_COLUMNS),
        "",
    ]
    io.write_text(out_dir / "benchmarks.md", "\n".join(md))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="bench module names (bench_data or data)")
    parser.add_argument("--out", type=Path, default=REPO / "results/benchmarks", help="output folder")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per bench module")
    parser.add_argument("--configfile", help="workflow config layered on config/config.yaml (paper configs)")
    parser.add_argument("--cores", type=int, default=2, help="cores for the no-op snakemake run")
    parser.add_argument("--no-workflow", action="store_true", help="skip the Snakemake figures")
    parser.add_argument(
        "--reference-run",
        type=Path,
        default=REPO,
        help="clone in which `make reproduce` ran: its Snakemake log, .venv and benchmark "
        "files give the end-to-end figures (default: this repository)",
    )
    args = parser.parse_args(argv)

    rows: list[dict[str, Any]] = []
    failed = []
    for name in discover(REPO / "benchmarks", args.only):
        print(f"== {name}", flush=True)
        found, seconds, error = run_module(name, args.timeout)
        if error:
            failed.append(name)
            print(f"!! {name} failed: {error}", file=sys.stderr, flush=True)
            rows.append(
                {
                    **{k: None for k in COLUMNS},
                    "benchmark": name,
                    "metric": "FAILED",
                    "note": error,
                    "module": name,
                    "seconds": round(seconds, 1),
                }
            )
        rows += [{**r, "module": name, "seconds": round(seconds, 1)} for r in found]
    if not args.no_workflow:
        config = workflow_config(args.configfile)
        label = f"workflow {config['dataset']}"
        run_dir = args.reference_run.resolve()
        wf_rows = snakemake_benchmarks(run_dir / config["results"] / config["dataset"] / "benchmarks", label)
        wf_rows += reference_run_rows(run_dir, label, args.configfile)
        print(f"== workflow ({len(wf_rows)} rows from {run_dir}); no-op re-run", flush=True)
        wf_rows += noop_rerun(label, args.configfile, args.cores)
        rows += [{**r, "module": "__main__", "seconds": None} for r in wf_rows]
    machine = machine_info()
    write_outputs(args.out, rows, machine)
    print(format_table(rows, CSV_COLUMNS))
    print(f"\nwrote {args.out / 'benchmarks.md'} and {args.out / 'benchmarks.csv'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
