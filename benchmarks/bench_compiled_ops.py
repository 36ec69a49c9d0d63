"""Launches per training step, eager and ``torch.compile``'d.

``bench_step_ops`` counts dispatched ops with a ``TorchDispatchMode``, which cannot see compiled code (under the
mode it falls back to eager). This benchmark counts eager and compiled steps alike, with
``retrievegan.train.stepcount.count_launches`` (``torch.profiler``): the top-level aten ops (eager code, autograd's
backward ops, the compiled graphs' library calls such as convolutions and matrix products, the optimiser) and the
kernels inductor generated. For every registered method, on ``bench_step_ops``' synthetic scene graphs (batch 2,
the CUDA configuration: fused Adam, fp32), a third ``Trainer.train_step`` on the batch of the first two (they
compile; the same batch, so the counted step compiles nothing: checked), eager and with ``train.compile``
(inductor, mode ``default``), both in the same process:

* ``launches/step``: top-level aten ops + generated kernels, views included (like ``bench_step_ops``' ops);
  compiled, against the eager step as the reference;
* ``kernels/step``: without the views (no kernel behind them): about the kernel launches on a GPU; compiled,
  against the eager step.

The profiler counts a composite op (``linear``, ``lstm``) once, where ``bench_step_ops``' dispatch counter counts
the ops it is made of, so the two benchmarks' eager figures differ. On the CPU inductor generates C++ kernels; on
CUDA the same scheduler fuses into Triton kernels (not measured here). ``train_step`` includes the host side of a
step (``Trainer.prepare``).

    python -m benchmarks.bench_compiled_ops                             # embedded config's shapes
    BENCH_COMPILED_OPS_PAPER=1 python -m benchmarks.bench_compiled_ops  # the paper configs' shapes
    BENCH_COMPILED_OPS_METHODS=attngan,pastegan python -m benchmarks.bench_compiled_ops  # some methods only

Compilation takes one to several minutes per method on 2 cores.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's "no GPU" message

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_step_ops import BASE, PAPER, _setup, _trainer  # noqa: E402
from benchmarks.common import print_table, row  # noqa: E402


def count_step_launches(est, config, spec, items, inputs, name: str, compile: bool):
    """(LaunchCounts of the third step on one batch, seconds of the first two) for ``name``."""
    import torch
    import torch._inductor.config as inductor_config
    from torch._dynamo.utils import counters

    from retrievegan.data.dataset import collate_scene_graphs
    from retrievegan.train.stepcount import count_launches

    torch._dynamo.reset()
    with inductor_config.patch({"cpp.enable_kernel_profile": True}):
        trainer = _trainer(est, config, spec, inputs, name, None, deterministic=False, adam="fused", compile=compile)
        batch = collate_scene_graphs(items[:2])
        start = time.perf_counter()
        for step in range(2):
            trainer.train_step(batch, step, 0)
        seconds = time.perf_counter() - start
        graphs = dict(counters["stats"])
        _, counts = count_launches(lambda: trainer.train_step(batch, 2, 0))
        if dict(counters["stats"]) != graphs:
            raise RuntimeError(f"{name}: the counted step compiled again ({graphs} -> {dict(counters['stats'])})")
    return counts, seconds


def run() -> list[dict]:
    import torch

    from retrievegan.train.registry import METHODS

    torch.set_num_threads(1)
    label, path = ("paper", PAPER) if os.environ.get("BENCH_COMPILED_OPS_PAPER") else ("embedded", BASE)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_compiled_ops_") as tmp:
        data = _setup(path, 4, Path(tmp))
        chosen = os.environ.get("BENCH_COMPILED_OPS_METHODS")
        for name in chosen.split(",") if chosen else METHODS:
            eager, _ = count_step_launches(*data, name, compile=False)
            compiled, seconds = count_step_launches(*data, name, compile=True)
            note = f"{label} shapes, batch 2, fused Adam"
            rows.append(
                row(
                    f"launches {name}",
                    "launches/step, eager",
                    eager.launches,
                    "launches",
                    better="lower",
                    note=f"{note}; {eager.views} of them views",
                )
            )
            rows.append(
                row(
                    f"launches {name}",
                    "launches/step, compiled",
                    compiled.launches,
                    "launches",
                    reference=eager.launches,
                    better="lower",
                    note=f"{note}; reference: the eager step, same process; {compiled.aten} aten ops + "
                    f"{compiled.generated} generated kernels; first two steps {seconds:.0f} s "
                    "(compilation, or inductor's cache)",
                )
            )
            rows.append(
                row(
                    f"launches {name}",
                    "kernels/step (no views), eager",
                    eager.kernels,
                    "kernels",
                    better="lower",
                    note=note,
                )
            )
            rows.append(
                row(
                    f"launches {name}",
                    "kernels/step (no views), compiled",
                    compiled.kernels,
                    "kernels",
                    reference=eager.kernels,
                    better="lower",
                    note="~ kernel launches on a GPU; reference: the eager step, same process",
                )
            )
    return rows


if __name__ == "__main__":
    print_table(run())
