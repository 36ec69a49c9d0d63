"""Every registered method: parameter counts (per network and total) and training throughput (embedded config).

For each name in ``retrievegan.runs.METHODS`` (sg2im, layout2im, AttnGAN, and PasteGAN / RetrieveGAN
with its ablations when registered), built from its section of the embedded config (``config/config.yaml``;
another with ``BENCH_METHODS_CONFIG``):

* ``params <method>``: one row per network (``parameters``; the note gives the trainable share, e.g. AttnGAN's
  frozen DAMSM encoders) and a ``total`` row;
* ``train <method>``: steady-state images/s of the shared loop's step (G update + D update) on this machine with
  **one** thread (the workflow runs one thread per job), CPU seconds per step, and the implied CPU time of
  the configured number of steps (the method's ``train`` overrides applied, as the rules do).

Data: the embedded workflow's canonical data and upstream files (patch bank, features, pre-filter, DAMSM)
under ``results/<dataset>/`` when they exist. Without them a small synthetic benchmark is generated in a
temporary folder and a throwaway DAMSM is initialised there (its size, not its weights, matters here); a
method whose other inputs are missing is skipped and named in the ``methods`` row.

Sizes: ``BENCH_METHODS_STEPS`` timed steps per method (default 4, after 1 warm-up step).

    python benchmarks/bench_methods.py      (or: python -m benchmarks.bench_methods)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `retrievegan train` sets it

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, print_table, row  # noqa: E402

STEPS = int(os.environ.get("BENCH_METHODS_STEPS", 4))
WARMUP = 1
CONFIG = Path(os.environ.get("BENCH_METHODS_CONFIG", REPO / "config/config.yaml"))


def workflow_inputs(res: Path) -> dict[str, Path]:
    """Where the workflow puts each named ``--input`` a method may declare."""
    return {
        "damsm": res / "models/damsm/checkpoint.pt",
        "patches": res / "data/patches/patches.npy",
        "candidates": res / "features/prefilter/candidates.npy",
        "patch_features": res / "features/patch_features.npy",
        "cooccur_embeddings": res / "features/cooccur_embeddings.npy",
    }


def _throwaway_damsm(config: dict, data_dir: Path, out: Path) -> Path:
    """An untrained DAMSM of the configured size (for parameter counts and timing only)."""
    import torch

    from retrievegan import runinfo
    from retrievegan.config import from_mapping
    from retrievegan.data.dataset import SceneGraphDataset
    from retrievegan.train.checkpoint import save
    from retrievegan.train.damsm import FORMAT, VERSION, DamsmConfig, new_damsm

    cfg = from_mapping(DamsmConfig, config.get("damsm", {}), "damsm")
    spec = SceneGraphDataset(data_dir, "train").spec
    model = new_damsm(cfg, spec, torch.Generator().manual_seed(0))
    save(
        out,
        {
            "format": FORMAT,
            "version": VERSION,
            "config": runinfo.to_jsonable(cfg),
            "spec": runinfo.to_jsonable(spec),
            "words": list(model.vocab.words),
            "step": 0,
            "text_encoder": model.text_encoder.state_dict(),
            "image_encoder": model.image_encoder.state_dict(),
        },
    )
    return out


def _measure(method, train_cfg, batches) -> tuple[float, float]:
    """(images/s wall clock, CPU seconds per step) of the loop's training step, one thread."""
    import torch

    from retrievegan.train.loop import Trainer

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(method, train_cfg, torch.device("cpu"))
        for step in range(WARMUP):
            trainer.train_step(batches[step % len(batches)], step, 0)
        start, cpu = time.perf_counter(), time.process_time()
        for step in range(STEPS):
            trainer.train_step(batches[(WARMUP + step) % len(batches)], WARMUP + step, 0)
        wall = time.perf_counter() - start
        return STEPS * train_cfg.batch_size / wall, (time.process_time() - cpu) / STEPS
    finally:
        torch.set_num_threads(previous)


def run() -> list[dict]:
    import dataclasses

    import torch

    from retrievegan.config import from_mapping, load_yaml
    from retrievegan.data.dataset import SceneGraphDataset, collate_scene_graphs
    from retrievegan.runs import METHODS, run_params, train_params
    from retrievegan.train.config import TrainConfig
    from retrievegan.train.registry import create_method, method_class

    config = load_yaml(CONFIG)
    res = REPO / config["results"] / config["dataset"]
    rows, skipped, measured = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench_methods_") as tmp:
        tmp = Path(tmp)
        data_dir = res / "data" / config["model_source"]
        inputs = workflow_inputs(res)
        if not (data_dir / "train.json").exists():
            from benchmarks.bench_train_throughput import _dataset

            data_dir = _dataset(tmp)
            inputs = {}
        source = "workflow data" if inputs else "a temporary synthetic benchmark (workflow not run)"
        if not inputs.get("damsm", Path("/nonexistent")).exists():
            inputs["damsm"] = _throwaway_damsm(config, data_dir, tmp / "damsm.pt")
        patches_csv = res / "data/patches/patches.csv"
        dataset_cache: dict[bool, SceneGraphDataset] = {}
        for name in METHODS:
            params = run_params(config, name)
            train_cfg = dataclasses.replace(
                from_mapping(TrainConfig, train_params(config, name), "train"), device="cpu"
            )
            try:
                cls = method_class(name)
                missing = [k for k in cls.required_inputs if k not in inputs or not Path(inputs[k]).exists()]
                if cls.needs_patch_ids and not patches_csv.exists():
                    missing.append("patches.csv")
                if missing:
                    skipped.append(f"{name} (missing {', '.join(missing)}: run the workflow first)")
                    continue
                if cls.needs_patch_ids not in dataset_cache:
                    dataset_cache[cls.needs_patch_ids] = SceneGraphDataset(
                        data_dir, "train", patches_csv if cls.needs_patch_ids else None
                    )
                ds = dataset_cache[cls.needs_patch_ids]
                method = create_method(name, params, ds.spec, {k: inputs[k] for k in cls.required_inputs})
                nets = method.build_networks(torch.Generator().manual_seed(0))
            except Exception as exc:  # noqa: BLE001 - report, measure the others
                skipped.append(f"{name} ({type(exc).__name__}: {exc})")
                continue
            total = trainable_total = 0
            for net_name, net in nets.items():
                count = sum(p.numel() for p in net.parameters())
                trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
                total, trainable_total = total + count, trainable_total + trainable
                rows.append(
                    row(
                        f"params {name}",
                        f"{net_name} ({method.roles()[net_name]})",
                        count,
                        "parameters",
                        note=f"trainable {trainable:,}" + ("" if trainable == count else " (rest frozen)"),
                    )
                )
            rows.append(row(f"params {name}", "total", total, "parameters", note=f"trainable {trainable_total:,}"))
            order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0)).tolist()
            size = train_cfg.batch_size
            batches = [
                collate_scene_graphs([ds[i] for i in order[k * size : (k + 1) * size]])
                for k in range(max(1, min(WARMUP + min(STEPS, 3), len(ds) // size)))
            ]  # cycled
            rate, cpu_per_step = _measure(method, train_cfg, batches)
            rows.append(
                row(
                    f"train {name}",
                    "images/s (1 thread)",
                    rate,
                    "images/s",
                    note=f"embedded config, batch {size}, {STEPS} timed steps after {WARMUP} warm-up; "
                    f"G + D updates; {ds.image_size} px; data: {source}",
                )
            )
            rows.append(
                row(
                    f"train {name}",
                    "CPU seconds per step (1 thread)",
                    cpu_per_step,
                    "s",
                    better="lower",
                    note="process CPU time: insensitive to other processes sharing the cores",
                )
            )
            rows.append(
                row(
                    f"train {name}",
                    f"CPU time of the configured {train_cfg.steps} steps",
                    cpu_per_step * train_cfg.steps,
                    "s",
                    better="lower",
                    note="steps x CPU s/step; excludes start-up, data loading, checkpoints",
                )
            )
            measured.append(name)
    rows.append(
        row(
            "methods",
            "registered methods measured",
            len(measured),
            "methods",
            reference=len(METHODS),
            note="measured: " + ", ".join(measured) + ("; skipped: " + "; ".join(skipped) if skipped else ""),
        )
    )
    return rows


def summary_table(rows: list[dict]) -> str:
    """One line per method: parameters (total, trainable) and throughput, as Markdown."""
    methods: dict[str, dict] = {}
    for item in rows:
        kind, _, name = item["benchmark"].partition(" ")
        if kind == "params" and item["metric"] == "total":
            methods.setdefault(name, {})["params"] = item["value"]
            methods[name]["trainable"] = item["note"].removeprefix("trainable ")
        elif kind == "params":
            methods.setdefault(name, {}).setdefault("networks", []).append(
                f"{item['metric'].split(' ')[0]} {item['value'] / 1e3:,.1f}k"
            )
        elif kind == "train" and item["metric"].startswith("images/s"):
            methods.setdefault(name, {})["rate"] = item["value"]
        elif kind == "train" and item["metric"].startswith("CPU seconds"):
            methods.setdefault(name, {})["cpu"] = item["value"]
    lines = [
        "| method | parameters (total) | trainable | per network | images/s (1 thread) | CPU s/step |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in methods.items():
        lines.append(
            f"| {name} | {m.get('params', 0):,.0f} | {m.get('trainable', '')} | "
            f"{', '.join(m.get('networks', []))} | {m.get('rate', float('nan')):.1f} | "
            f"{m.get('cpu', float('nan')):.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    result = run()
    print_table(result)
    print()
    print(summary_table(result))
    print(json.dumps({"steps": STEPS, "config": str(CONFIG)}))
