"""CPU seconds per training step (one thread) of every method at the embedded config's shapes, against another checkout.

The embedded ``make reproduce`` budget (15 minutes on 2 cores) is mostly CPU training, so a change to a method's step
is measured here: for every registered method at its embedded config (``config/config.yaml``: widths, image size,
its training batch) and RetrieveGAN with the variants' retrieval modes (``soft``, ``relaxed``), one warm-up step then
``BENCH_STEP_TIME_STEPS`` (default 3) timed ``Trainer.train_step`` calls on synthetic scene graphs drawn like
COCO-Stuff (``retrievegan.estimate.paper.paper_data``, fixed seed: the same batches in every run), process CPU time
per step (insensitive to other processes sharing the cores; one thread, as the workflow's training jobs).

Reference: another checkout's ``src`` folder in ``BENCH_STEP_TIME_REFERENCE`` (e.g. ``git worktree add /tmp/ref
<commit>``, then ``/tmp/ref/src``). Each run is a fresh Python process; this tree's and the reference's runs alternate
(``BENCH_STEP_TIME_REPEATS`` pairs, default 3) and each figure is the median over its runs, so a busy machine slows
both alike. Without a reference only this tree is measured.

    BENCH_STEP_TIME_REFERENCE=/tmp/ref/src python -m benchmarks.bench_step_time
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, print_table, row  # noqa: E402

BASE = REPO / "config/config.yaml"
STATS = REPO / "config/reference/dataset_stats.csv"
STEPS = int(os.environ.get("BENCH_STEP_TIME_STEPS", 3))
REPEATS = int(os.environ.get("BENCH_STEP_TIME_REPEATS", 3))
MODES = ("soft", "relaxed")  # RetrieveGAN's other retrieval modes (the embedded config's variants)


def cases(methods) -> list[str]:
    """Every registered method, then ``retrievegan:<mode>`` for the other retrieval modes."""
    return list(methods) + [f"retrievegan:{mode}" for mode in MODES]


def measure() -> dict[str, float]:
    """CPU seconds per step of every case in this process (the ``retrievegan`` package on ``sys.path``)."""
    import torch

    from retrievegan.estimate.paper import paper_data
    from retrievegan.train.loop import Trainer
    from retrievegan.train.registry import METHODS

    torch.set_num_threads(1)
    result = {}
    with tempfile.TemporaryDirectory(prefix="bench_step_time_") as tmp:
        data = paper_data(BASE, BASE, STATS, Path(tmp), count=16 * (STEPS + 1), methods=tuple(METHODS))
        for case in cases(METHODS):
            name, _, mode = case.partition(":")
            method, _ = data.method(name, {"retrieval": {**data.config["retrieval"], "mode": mode}} if mode else None)
            cfg = data.train_config(name, device="cpu", num_workers=0)
            size = cfg.batch_size
            batches = [data.batch(size, size * i) for i in range(STEPS + 1)]
            trainer = Trainer(method, cfg, torch.device("cpu"))
            trainer.train_step(batches[0], 0, 0)
            start = time.process_time()
            for step in range(1, STEPS + 1):
                trainer.train_step(batches[step], step, 0)
            result[case] = (time.process_time() - start) / STEPS
    return result


def _worker(src: Path) -> dict[str, float]:
    """``measure()`` in a fresh process importing ``retrievegan`` from ``src``."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(REPO)])}
        subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_step_time", "--worker", out.name], env=env, cwd=REPO, check=True
        )
        return json.loads(Path(out.name).read_text())


def run() -> list[dict]:
    reference = os.environ.get("BENCH_STEP_TIME_REFERENCE")
    runs: dict[str, list[dict[str, float]]] = {"this": [], "reference": []}
    for _ in range(REPEATS):
        if reference:
            runs["reference"].append(_worker(Path(reference)))
        runs["this"].append(_worker(REPO / "src"))
    rows = []
    for case in runs["this"][0]:
        value = statistics.median(r[case] for r in runs["this"])
        ref = (
            statistics.median(r[case] for r in runs["reference"])
            if reference and case in runs["reference"][0]
            else None
        )
        rows.append(
            row(
                f"step time {case}",
                "CPU seconds per step (1 thread)",
                value,
                "s",
                reference=ref,
                better="lower",
                note=f"embedded config shapes, its training batch; median of {REPEATS} "
                f"processes x {STEPS} steps" + (f"; reference: {reference}, runs alternating" if reference else ""),
            )
        )
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        Path(sys.argv[2]).write_text(json.dumps(measure()))
    else:
        print_table(run())
