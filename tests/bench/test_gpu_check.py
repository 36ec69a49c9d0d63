"""benchmarks/gpu_check.sh: its config snapshots are current, it runs on the CPU (dry run), and on a GPU machine
(CUDA only; skipped here with the reason) the whole check passes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import gpu_check  # noqa: E402
from retrievegan.config import load_yaml  # noqa: E402


@pytest.mark.parametrize("name", ["config", "paper-coco", "paper-vg"])
def test_json_config_snapshots_are_current(name):
    """The GPU checks read these when PyYAML is missing; remake them with
    `python -m retrievegan.config export benchmarks/gpu_configs config/config.yaml config/paper-*.yaml`."""
    snapshot = json.loads((ROOT / f"benchmarks/gpu_configs/{name}.json").read_text())
    assert snapshot == load_yaml(ROOT / f"config/{name}.yaml"), f"benchmarks/gpu_configs/{name}.json is stale"


# what benchmarks/gpu_check.sh promises the training path does not need (a GPU node with only the PyTorch stack)
NOT_NEEDED = (
    "yaml",
    "tqdm",
    "PIL",
    "torchvision",
    "scipy",
    "jsonschema",
    "snakemake",
    "pycocotools",
    "torch_fidelity",
    "lpips",
    "sqlalchemy",
    "streamlit",
    "dvc",
    "matplotlib",
)


def test_training_path_imports_with_only_the_pytorch_stack():
    """Every method, the loop, checkpoints and the paper estimate's data import in a Python where the project's
    other requirements are not installed (emulated: importing them raises ModuleNotFoundError, as when missing;
    ``importlib.util.find_spec`` still finds them, as torch's own optional-import probes expect)."""
    script = textwrap.dedent(f"""
        import importlib.abc, importlib.machinery, sys
        HIDDEN = {NOT_NEEDED!r}

        class Missing(importlib.abc.Loader):
            def create_module(self, spec):
                raise ModuleNotFoundError(f"No module named {{spec.name!r}} (hidden by the test)", name=spec.name)

            def exec_module(self, module):
                raise AssertionError("unreachable")

        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in HIDDEN:
                    return importlib.machinery.ModuleSpec(name, Missing())
                return None

        sys.meta_path.insert(0, Hide())
        from retrievegan.runs import METHODS
        from retrievegan.train.registry import method_class
        for name in METHODS:
            method_class(name)
        import retrievegan.estimate.paper, retrievegan.train.checkpoint, retrievegan.train.loop
        print("imported", len(METHODS), "methods")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "imported" in done.stdout


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    status = gpu_check.main(
        ["--device", "cpu", "--quick", "--only", "environment,amp,resume,ddp,estimate", "--out", str(tmp_path)]
    )
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    states = {r["check"]: r["status"] for r in report["results"]}
    assert states == {"environment": "pass", "amp": "pass", "resume": "pass", "ddp": "skip", "estimate": "pass"}, (
        json.dumps(report["results"], indent=1)[-3000:]
    )
    assert status == 0 and (tmp_path / "gpu_estimate/paper_estimate.md").is_file()
    amp = next(r for r in report["results"] if r["check"] == "amp")["details"]
    assert {row["casts"] for row in amp.values()} == {"cuda autocast's, emulated on the cpu"}, amp


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU (run benchmarks/gpu_check.sh on a GPU "
    "machine: AMP, compile, resume on CUDA, NCCL DDP, estimate)",
)
def test_gpu_check_passes_on_this_gpu(tmp_path):
    assert gpu_check.main(["--out", str(tmp_path)]) == 0, (tmp_path / "gpu_check.md").read_text()


def test_a_method_that_fails_to_compile_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    """One method's compilation error is its own row (with where it was raised); the next method still runs, so one
    run on a GPU machine reports every method. The training steps are stood in for: this checks the reporting."""
    ran = []

    def steps(trainer, data, count, progress=None):
        name = trainer.method.name
        ran.append(name)
        if name == "sg2im":
            raise AssertionError()  # as inductor's code generation raises it: no message
        return [
            {"step": i, "logs": {"G": {"loss": 1.0}}, "objects": 4, "triples": 3, "graphs": 2 + i, "seconds": 0.1}
            for i in range(count)
        ]

    monkeypatch.setattr(gpu_check, "steps_on_new_batches", steps)
    ctx = gpu_check.Context("cpu", True, tmp_path, tmp_path)
    with pytest.raises(AssertionError) as failed:
        gpu_check.check_compile(ctx)
    assert ran == ["sg2im", "layout2im"]
    report = json.loads(str(failed.value).partition(" | ")[2])
    assert report["sg2im"]["error"] == "AssertionError: "
    assert any("test_gpu_check.py" in frame and "in steps" in frame for frame in report["sg2im"]["where"])
    assert report["layout2im"]["graphs_after_step"] == [2, 3] and report["layout2im"]["graph_breaks"] == 0


def test_a_run_stopped_during_a_check_keeps_the_report_of_the_checks_before_it(tmp_path, monkeypatch):
    """The report is written after every check: a run killed by a time limit (here: interrupted inside its second
    check) leaves the first check's row on disk, marked as 1 of 2 checks."""

    def interrupted(ctx):
        raise KeyboardInterrupt  # not an Exception: what a stop from outside looks like to the runner

    monkeypatch.setattr(gpu_check, "check_amp", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gpu_check.main(["--device", "cpu", "--quick", "--only", "environment,amp", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [(r["check"], r["status"]) for r in report["results"]] == [("environment", "pass")]
    assert report["info"]["finished"] == "1 of 2 checks"
    assert "| environment | pass |" in (tmp_path / "gpu_check.md").read_text()
