"""Per training step: dispatched ops, host synchronisations, and numbers unchanged (issue 13, the GPU path).

For every registered method, one training step (``Trainer.step``) on synthetic scene graphs, batch 2, at the embedded
config's shapes (about a minute) and, with ``BENCH_STEP_OPS_PAPER=1``, at the paper configs' shapes
(``config/paper-coco.yaml``: widths, 128 px; several minutes on 2 cores), counted with
``retrievegan.train.stepcount.count_ops`` (a ``TorchDispatchMode``):

* ``ops/step``: every aten op the dispatcher sees (forward, backward, optimiser; ~ one kernel launch each on a
  GPU, views included), in the CUDA configuration (fused Adam) and the CPU default (foreach Adam);
* ``syncs/step``: what would make the host wait for a GPU (``.item()``, data-dependent shapes, host reads of
  device tensors, blocking host -> device copies);
* reference: the same counts of commit 2119417 (before issue 13; recorded with the same counter on this machine
  type by ``benchmarks/reference/record_step_ops.py``, in ``benchmarks/reference/step_ops_2119417.json``):
  its CPU default (per-parameter Adam loop) and its CUDA default (foreach Adam);
* ``losses identical``: 3 training steps of every method on the embedded config's shapes give bit-identical losses
  and network states to the recorded ones of 2119417 (``step_losses_2119417.json``; float arithmetic depends on
  the CPU's kernels: bit-identity holds on the machine type that recorded it), at the same shapes (RetrieveGAN with
  L_occur differs on purpose: issue 11 made eq. 3's sum its default);
* ``patch methods identical``: the same for PasteGAN and every RetrieveGAN method in every retrieval mode against
  commit 7a8edca (before issue 13 phase 2: ``step_losses_7a8edca.json``, recorded by ``--record-patch``).

    python -m benchmarks.bench_step_ops
    PYTHONPATH=<7a8edca checkout>/src python -m benchmarks.bench_step_ops --record-patch OUT.json   # the reference
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, print_table, row  # noqa: E402

REFERENCE = REPO / "benchmarks/reference"
OPS_REFERENCE = REFERENCE / "step_ops_2119417.json"
LOSS_REFERENCE = REFERENCE / "step_losses_2119417.json"
PATCH_REFERENCE = REFERENCE / "step_losses_7a8edca.json"
RETRIEVEGANS = ("retrievegan", "retrievegan_no_gt_no_occur", "retrievegan_gt_only", "retrievegan_occur_only")
PATCH_CASES = {"embedded": tuple(f"{n}:{m}" for n in RETRIEVEGANS for m in ("hard", "soft", "relaxed")) + ("pastegan",),
               "paper": ("retrievegan:hard", "retrievegan:soft", "retrievegan:relaxed", "retrievegan_no_gt_no_occur:hard",
                         "pastegan")}
BASE = REPO / "config/config.yaml"
PAPER = REPO / "config/paper-coco.yaml"
STATS = REPO / "config/reference/dataset_stats.csv"


def _setup(config_path: Path, count: int, tmp: Path):
    """Scene graphs and inputs drawn exactly as the recorded references were (rng [0, 1234])."""
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
    import torch

    from retrievegan.config import from_mapping
    from retrievegan.train.config import TrainConfig
    from retrievegan.train.loop import Trainer
    from retrievegan.train.registry import create_method

    cfg = from_mapping(TrainConfig, {**est.train_params(config, name), "device": "cpu", "num_workers": 0,
                                     "batch_size": 2, **train}, "train")
    method = create_method(name, {**est.method_params(config, name), **(params or {})}, spec, inputs)
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


def losses_and_state(est, config, spec, items, inputs, name: str, params: dict | None = None) -> dict:
    """3 steps (batches of 2) as the recorded reference: logs as float hex, sha256 of the networks' state. ``name``:
    a method, or ``<method>:<retrieval mode>``; ``params``: the method's parameters instead of the mode's."""
    from retrievegan.data.dataset import collate_scene_graphs

    name, _, mode = name.partition(":")
    if params is None and mode:
        params = {"retrieval": {**config["retrieval"], "mode": mode}}
    trainer = _trainer(est, config, spec, inputs, name, params, deterministic=True, amp=False, compile=False)
    logs = []
    for step in range(3):
        out = trainer.train_step(collate_scene_graphs(items[2 * step:2 * step + 2]), step, 0)
        logs.append({ph: {k: float(v).hex() for k, v in out[ph].items()} for ph in ("G", "D")})
    digest = hashlib.sha256()
    state = trainer.state()["networks"]
    for net in sorted(state):
        for key, value in sorted(state[net].items()):
            digest.update(f"{net}.{key}".encode())
            digest.update(value.detach().contiguous().cpu().numpy().tobytes())
    return {"logs": logs, "state_sha256": digest.hexdigest()}


def _compare(found: dict, recorded: dict) -> tuple[bool, float]:
    """(bit-identical, worst relative loss difference)."""
    worst = 0.0
    for a, b in zip(found["logs"], recorded["logs"]):
        for phase in ("G", "D"):
            for key, value in b[phase].items():
                x, y = float.fromhex(a[phase].get(key, "nan")), float.fromhex(value)
                worst = max(worst, abs(x - y) / max(abs(y), 1e-12)) if x == x else float("inf")
    return worst == 0.0 and found["state_sha256"] == recorded["state_sha256"], worst


def run() -> list[dict]:
    import torch

    from retrievegan.train.registry import METHODS

    torch.set_num_threads(1)
    before = json.loads(OPS_REFERENCE.read_text())
    recorded = json.loads(LOSS_REFERENCE.read_text())
    rows = []
    shapes = {"embedded": BASE} | ({"paper": PAPER} if os.environ.get("BENCH_STEP_OPS_PAPER") else {})
    patch = json.loads(PATCH_REFERENCE.read_text())
    for label, path in shapes.items():
        rows += _counts(label, path, before[label], METHODS)
        rows += _unchanged(label, path, recorded[label], METHODS)
        rows += _unchanged(label, path, patch[label], PATCH_CASES[label], "7a8edca (before issue 13 phase 2)",
                           "PasteGAN and RetrieveGAN cases (method:retrieval mode)")
    return rows


def _counts(label: str, path: Path, before: dict, methods) -> list[dict]:
    from retrievegan.train.stepcount import VIEW_OPS

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_step_ops_") as tmp:
        data = _setup(path, 4, Path(tmp))
        for name in methods:
            ref = before[name]
            cuda = count_step(*data, name, adam="fused")
            cpu = count_step(*data, name, adam="foreach")
            kernels = sum(n for op, n in cuda.ops_by_name.items() if op not in VIEW_OPS)
            note = f"{label} shapes, batch 2; reference: commit 2119417, same counter"
            rows.append(row(f"step {name}", "ops/step (CUDA config: fused Adam)", cuda.ops, "ops",
                            reference=ref["ops_foreach"], better="lower",
                            note=note + " (its CUDA default: foreach Adam)"))
            rows.append(row(f"step {name}", "ops/step (CPU default: foreach Adam)", cpu.ops, "ops",
                            reference=ref["ops_loop"], better="lower", note=note + " (its CPU default: Adam loop)"))
            rows.append(row(f"step {name}", "non-view ops/step (CUDA config)", kernels, "ops", better="lower",
                            note="without views / detach / scalar reads: ~ kernel launches"))
            rows.append(row(f"step {name}", "host syncs/step (CUDA config)", cuda.syncs, "syncs",
                            reference=ref["syncs"], better="lower",
                            note="; ".join(f"{n} x {s}" for s, n in sorted(cuda.sync_sites.items())) or "none"))
            if name == "layout2im":
                batched = count_step(*data, name, {"batch_discriminator_calls": True}, adam="fused")
                rows.append(row(f"step {name}", "ops/step (CUDA config, batch_discriminator_calls)", batched.ops,
                                "ops", reference=ref["ops_foreach"], better="lower",
                                note="opt-in: one D call per phase (1 spectral-norm iteration per phase)"))
    return rows


def _unchanged(label: str, path: Path, recorded: dict, methods, commit: str = "2119417",
               what: str = "methods") -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bench_step_losses_") as tmp:
        data = _setup(path, 6, Path(tmp))
        same, notes = 0, []
        for name in methods:
            identical, worst = _compare(losses_and_state(*data, name), recorded[name])
            same += identical
            if not identical:
                notes.append(f"{name}: worst relative loss difference {worst:.2e}")
    return [row("numbers unchanged", f"{what} bit-identical to {commit} ({label} shapes, 3 steps)", same, "methods",
                reference=len(methods), note="; ".join(notes) or "losses and network states identical, every one")]


def record_patch(out: Path) -> None:
    """Write the ``PATCH_CASES``' losses and states with the ``retrievegan`` package on ``sys.path`` (the reference)."""
    import torch

    torch.set_num_threads(1)
    result = {"_about": "bench_step_ops.py --record-patch: 3 steps, batches of 2, 1 thread"}
    for label, path in {"embedded": BASE, "paper": PAPER}.items():
        with tempfile.TemporaryDirectory(prefix="bench_step_losses_") as tmp:
            data = _setup(path, 6, Path(tmp))
            result[label] = {case: losses_and_state(*data, case) for case in PATCH_CASES[label]}
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--record-patch":
        record_patch(Path(sys.argv[2]))
    else:
        print_table(run())
