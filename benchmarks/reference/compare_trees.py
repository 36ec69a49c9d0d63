"""Bit-identity of two source trees: 3 training steps (batches of 2, one thread, fp32, deterministic) of every method
and of RetrieveGAN's retrieval modes and claim arms on the embedded config's shapes (``bench_step_ops``' synthetic
scene graphs), losses as float hex and a sha256 of the networks' state; ``record OUT paper``: at the paper
configs' shapes (``config/paper-coco.yaml``, several minutes on 2 cores).

    PYTHONPATH=<tree A>/src:. python benchmarks/reference/compare_trees.py record A.json [paper]
    PYTHONPATH=<tree B>/src:. python benchmarks/reference/compare_trees.py record B.json
    python benchmarks/reference/compare_trees.py diff A.json B.json
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

RETRIEVEGANS = ("retrievegan", "retrievegan_no_gt_no_occur", "retrievegan_gt_only", "retrievegan_occur_only")
ARMS = (
    "retrievegan:non_iterative",
    "retrievegan:non_iterative_soft",
    "retrievegan_no_gt_no_occur:freeze_retriever",
    "retrievegan:freeze_retriever",
    "retrievegan:occur_mean",
    "retrievegan_occur_only:occur_mean",
    "retrievegan:occur_mean_relaxed",
)


def _params(retrieval: dict, arm: str) -> dict | None:
    """Method parameters of ``<method>:<arm>`` (retrieval mode, claim arm, L_occur form)."""
    return {
        "": None,
        "hard": {"retrieval": {**retrieval, "mode": "hard"}},
        "soft": {"retrieval": {**retrieval, "mode": "soft"}},
        "relaxed": {"retrieval": {**retrieval, "mode": "relaxed"}},
        "non_iterative": {"retrieval": {**retrieval, "greedy": False}},
        "non_iterative_soft": {"retrieval": {**retrieval, "greedy": False, "mode": "soft"}},
        "freeze_retriever": {"freeze_retriever": True},
        "occur_mean": {"occur_form": "mean"},
        "occur_mean_relaxed": {"occur_form": "mean", "retrieval": {**retrieval, "mode": "relaxed"}},
    }[arm]


def losses_and_state(est, config, spec, items, inputs, name: str, params: dict | None = None) -> dict:
    """3 steps (batches of 2): logs as float hex, sha256 of the networks' state. ``name``: a method, or
    ``<method>:<retrieval mode>``; ``params``: the method's parameters instead of the mode's."""
    from benchmarks.bench_step_ops import _trainer
    from retrievegan.data.dataset import collate_scene_graphs

    name, _, mode = name.partition(":")
    if params is None and mode:
        params = {"retrieval": {**config["retrieval"], "mode": mode}}
    trainer = _trainer(est, config, spec, inputs, name, params, deterministic=True, amp=False, compile=False)
    logs = []
    for step in range(3):
        out = trainer.train_step(collate_scene_graphs(items[2 * step : 2 * step + 2]), step, 0)
        logs.append({ph: {k: float(v).hex() for k, v in out[ph].items()} for ph in ("G", "D")})
    digest = hashlib.sha256()
    state = trainer.state()["networks"]
    for net in sorted(state):
        for key, value in sorted(state[net].items()):
            digest.update(f"{net}.{key}".encode())
            digest.update(value.detach().contiguous().cpu().numpy().tobytes())
    return {"logs": logs, "state_sha256": digest.hexdigest()}


def compare(found: dict, recorded: dict) -> tuple[bool, float]:
    """(bit-identical, worst relative loss difference)."""
    worst = 0.0
    for a, b in zip(found["logs"], recorded["logs"]):
        for phase in ("G", "D"):
            for key, value in b[phase].items():
                x, y = float.fromhex(a[phase].get(key, "nan")), float.fromhex(value)
                worst = max(worst, abs(x - y) / max(abs(y), 1e-12)) if x == x else float("inf")
    return worst == 0.0 and found["state_sha256"] == recorded["state_sha256"], worst


def record(out: Path, paper: bool = False) -> None:
    import torch

    import retrievegan
    from benchmarks import bench_step_ops as bench
    from retrievegan.train.registry import METHODS

    torch.set_num_threads(1)
    cases = [m for m in METHODS if m not in RETRIEVEGANS]
    cases += [f"{n}:{m}" for n in RETRIEVEGANS for m in ("hard", "soft", "relaxed")] + list(ARMS)
    result: dict = {"_src": retrievegan.__file__}
    with tempfile.TemporaryDirectory() as tmp:
        est, config, spec, items, inputs = bench._setup(bench.PAPER if paper else bench.BASE, 6, Path(tmp))
        for case in cases:
            name, _, arm = case.partition(":")
            result[case] = losses_and_state(est, config, spec, items, inputs, name, _params(config["retrieval"], arm))
    out.write_text(json.dumps(result, indent=1))


def diff(path_a: Path, path_b: Path) -> int:
    """Prints one line per case; returns the number of cases that differ."""
    a, b = (json.loads(p.read_text()) for p in (path_a, path_b))
    print("A:", a.pop("_src"), "\nB:", b.pop("_src"))
    bad = 0
    for case, found in a.items():
        other = b.get(case)
        if other is None:
            print(f"{case}: missing in B")
            bad += 1
            continue
        same, worst = compare(found, other)
        keys = sum(len(log[phase]) for log in other["logs"] for phase in ("G", "D"))
        bad += not same
        print(
            f"{case:45s} {'IDENTICAL' if same else 'DIFFERENT'}  losses {keys:3d}, worst relative difference "
            f"{worst:.2e}, state sha256 {found['state_sha256'][:12]} / {other['state_sha256'][:12]}"
        )
    print(f"{len(a) - bad} of {len(a)} cases bit-identical")
    return bad


if __name__ == "__main__":
    if len(sys.argv) in (3, 4) and sys.argv[1] == "record" and sys.argv[3:] in ([], ["paper"]):
        record(Path(sys.argv[2]), paper=sys.argv[3:] == ["paper"])
    elif len(sys.argv) == 4 and sys.argv[1] == "diff":
        sys.exit(min(diff(Path(sys.argv[2]), Path(sys.argv[3])), 1))
    else:
        sys.exit(__doc__)
