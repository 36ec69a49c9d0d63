"""benchmarks/gpu_check.sh: its config snapshots are current, it runs on the CPU (dry run), and on a GPU machine
(CUDA only; skipped here with the reason) the whole check passes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import gpu_check  # noqa: E402
from retrievegan.config import load_yaml  # noqa: E402


@pytest.mark.parametrize("name", ["config", "paper-coco", "paper-vg"])
def test_json_config_snapshots_are_current(name):
    """The GPU checks read these when PyYAML is missing; remake them with
    `python -m retrievegan.config export benchmarks/gpu_configs config/config.yaml config/paper-*.yaml`."""
    snapshot = json.loads((ROOT / f"benchmarks/gpu_configs/{name}.json").read_text())
    assert snapshot == load_yaml(ROOT / f"config/{name}.yaml"), f"benchmarks/gpu_configs/{name}.json is stale"


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    status = gpu_check.main(["--device", "cpu", "--quick", "--only", "environment,amp,resume,ddp,estimate",
                             "--out", str(tmp_path)])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    states = {r["check"]: r["status"] for r in report["results"]}
    assert states == {"environment": "pass", "amp": "pass", "resume": "pass", "ddp": "skip", "estimate": "pass"}, \
        json.dumps(report["results"], indent=1)[-3000:]
    assert status == 0 and (tmp_path / "gpu_estimate/paper_estimate.md").is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run benchmarks/gpu_check.sh on a GPU "
                                                          "machine: AMP, compile, resume on CUDA, NCCL DDP, estimate)")
def test_gpu_check_passes_on_this_gpu(tmp_path):
    assert gpu_check.main(["--out", str(tmp_path)]) == 0, (tmp_path / "gpu_check.md").read_text()
