"""Per training step: dispatched ops and would-be host synchronisations of every method.

For every registered method, one training step (``Trainer.step``, the second: the first creates optimiser state and
caches) on synthetic scene graphs, batch 2, at the embedded config's shapes (about a minute) and, with
``BENCH_STEP_OPS_PAPER=1``, also at the paper configs' shapes (``config/paper-coco.yaml``: widths, 128 px; several
minutes on 2 cores), counted with ``retrievegan.train.stepcount.count_ops`` (a ``TorchDispatchMode``), on the CPU:

* ``ops/step (CUDA config)``: every aten op the dispatcher sees (forward, backward, optimiser; ~ one kernel launch
  each on a GPU, views included) with fused Adam, the CUDA default. Reference: the same step with foreach Adam, the
  CPU default, counted in the same process;
* ``non-view ops/step``: the same without views, detaches and scalar reads: ~ kernel launches;
* ``host syncs/step``: what would make the host wait for a GPU (``.item()``, data-dependent shapes, host reads of
  device tensors, blocking host -> device copies), with where they happen;
* layout2im also with its opt-in ``batch_discriminator_calls`` (one discriminator call per phase; other arithmetic);
  reference: its default, in the same process.

The counter runs on the CPU: a composite op that CUDA runs as one library call (cuDNN's LSTM) is counted as the ops
the CPU runs it as. ``bench_compiled_ops`` counts launches eager and ``torch.compile``'d.

    python -m benchmarks.bench_step_ops
    BENCH_STEP_OPS_PAPER=1 python -m benchmarks.bench_step_ops
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, print_table, row  # noqa: E402

BASE = REPO / "config/config.yaml"
PAPER = REPO / "config/paper-coco.yaml"
STATS = REPO / "config/reference/dataset_stats.csv"


def _setup(config_path: Path, count: int, tmp: Path):
    """``count`` synthetic scene graphs at ``config_path``'s shapes and the methods' inputs, from fixed seeds
    (rng [0, 1234], DAMSM stand-in seed 0): the same data at every call."""
    import numpy as np
    import torch

    from retrievegan import estimate as est

    config = est.load_paper_config(BASE, config_path)
    scale = est.dataset_scale(config, est.read_dataset_stats(STATS), est.EstimateConfig())
    spec = est.synthetic_spec(scale)
    rng = np.random.default_rng([0, 1234])
    items = est.synthetic_items(scale, spec, count, rng)
    inputs = est.write_inputs(tmp, config, scale, sum(int((i.objs != 0).sum()) for i in items), rng)
    inputs["damsm"] = tmp / "damsm.pt"
    est.random_damsm(config, spec, torch.Generator().manual_seed(0), inputs["damsm"])
    return est, config, spec, items, inputs


def _trainer(est, config, spec, inputs, name: str, params: dict | None = None, **train):
    """A CPU ``Trainer`` of ``name`` (batch 2, the VGG stand-in from seed 1); ``train``: ``TrainConfig`` overrides."""
    import torch

    from retrievegan.config import from_mapping
    from retrievegan.train.config import TrainConfig
    from retrievegan.train.loop import Trainer
    from retrievegan.train.registry import create_method

    try:
        from retrievegan.runs import run_params, train_params
    except ImportError:  # a source tree without the run catalogue (reference/compare_trees.py records any tree)
        run_params, train_params = est.method_params, est.train_params

    cfg = from_mapping(
        TrainConfig,
        {**train_params(config, name), "device": "cpu", "num_workers": 0, "batch_size": 2, **train},
        "train",
    )
    method = create_method(name, {**run_params(config, name), **(params or {})}, spec, inputs)
    est.install_random_perceptual(method, torch.Generator().manual_seed(1))
    return Trainer(method, cfg, torch.device("cpu"))


def count_step(est, config, spec, items, inputs, name: str, params: dict | None = None, **train):
    """OpCounts of the second step (the first creates optimiser state and caches)."""
    from retrievegan.data.dataset import collate_scene_graphs
    from retrievegan.train.stepcount import count_ops, module_tensors

    trainer = _trainer(est, config, spec, inputs, name, params, deterministic=False, **train)
    trainer.train_step(collate_scene_graphs(items[:2]), 0, 0)
    batch, ctx = trainer.prepare(collate_scene_graphs(items[2:4]), 1, 0)
    _, counts = count_ops(lambda: trainer.step(batch, ctx), batch.tensors() + module_tensors(trainer.nets.values()))
    return counts


def run() -> list[dict]:
    import torch

    from retrievegan.train.registry import METHODS

    torch.set_num_threads(1)
    shapes = {"embedded": BASE} | ({"paper": PAPER} if os.environ.get("BENCH_STEP_OPS_PAPER") else {})
    rows = []
    for label, path in shapes.items():
        rows += _counts(label, path, METHODS)
    return rows


def _counts(label: str, path: Path, methods) -> list[dict]:
    from retrievegan.train.stepcount import VIEW_OPS

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_step_ops_") as tmp:
        data = _setup(path, 4, Path(tmp))
        for name in methods:
            cuda = count_step(*data, name, adam="fused")
            cpu = count_step(*data, name, adam="foreach")
            kernels = sum(n for op, n in cuda.ops_by_name.items() if op not in VIEW_OPS)
            shape = f"{label} shapes, batch 2"
            rows.append(
                row(
                    f"step {name}",
                    "ops/step (CUDA config: fused Adam)",
                    cuda.ops,
                    "ops",
                    reference=cpu.ops,
                    better="lower",
                    note=f"{shape}; reference: the CPU default (foreach Adam), same step, same process",
                )
            )
            rows.append(
                row(
                    f"step {name}",
                    "non-view ops/step (CUDA config)",
                    kernels,
                    "ops",
                    better="lower",
                    note=f"{shape}; without views / detach / scalar reads: ~ kernel launches",
                )
            )
            rows.append(
                row(
                    f"step {name}",
                    "host syncs/step (CUDA config)",
                    cuda.syncs,
                    "syncs",
                    better="lower",
                    note="; ".join(f"{n} x {s}" for s, n in sorted(cuda.sync_sites.items())) or "none",
                )
            )
            if name == "layout2im":
                batched = count_step(*data, name, {"batch_discriminator_calls": True}, adam="fused")
                rows.append(
                    row(
                        f"step {name}",
                        "ops/step (CUDA config, batch_discriminator_calls)",
                        batched.ops,
                        "ops",
                        reference=cuda.ops,
                        better="lower",
                        note=f"{shape}; opt-in: one D call per phase (other arithmetic: one spectral-norm "
                        "iteration per phase); reference: its default, one D call per input",
                    )
                )
    return rows


if __name__ == "__main__":
    print_table(run())
