"""Scale infrastructure, fast parts: cluster resources and launcher, dvcsync helpers, benchmark protocol."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_workflow import REPO, snakemake, tiny_workdir

from retrievegan import dvcsync
from retrievegan.cluster import launcher, slurm_resources
from retrievegan.errors import ConfigError

sys.path.insert(0, str(REPO))  # the benchmarks package lives at the repository root
from benchmarks import common as bench  # noqa: E402
from benchmarks.__main__ import core_occupancy, run_module, snakemake_benchmarks, write_outputs  # noqa: E402

GPU_CLUSTER = {
    "partition": "cpu",
    "account": "proj42",
    "gpu_model": "a100",
    "resources": {
        "train": {"gpus": 4, "mem_mb": 64000, "runtime": 2880, "partition": "gpu", "slurm_extra": "--qos=long"},
        "data": {"gpus": 0, "mem_mb": 8000, "runtime": 120},
    },
}


# --- cluster resources -----------------------------------------------------------------------------
def test_slurm_resources_per_class():
    train = slurm_resources(GPU_CLUSTER, "train")
    assert train == {
        "mem_mb": 64000,
        "runtime": 2880,
        "gpu": 4,
        "gpu_model": "a100",
        "slurm_partition": "gpu",
        "slurm_account": "proj42",
        "slurm_extra": "--qos=long",
    }
    data = slurm_resources(GPU_CLUSTER, "data")  # CPU class: no gpu_model (it would ask for --gpus=a100:0)
    assert data == {"mem_mb": 8000, "runtime": 120, "gpu": 0, "slurm_partition": "cpu", "slurm_account": "proj42"}
    assert slurm_resources(None, "report") == {"mem_mb": 4000, "runtime": 60, "gpu": 0}


def test_slurm_resources_reach_the_plugin_options():
    """The keys are the ones snakemake-executor-plugin-slurm reads: --gpus, --mem, -t, --cpus-per-task."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    job = SimpleNamespace(resources=Resources(slurm_resources(GPU_CLUSTER, "train")), threads=8)
    assert set_gres_string(job).strip() == "--gpus=a100:4"
    call = get_submit_command(
        job,
        {
            "run_uuid": "u",
            "slurm_logfile": "l",
            "comment_str": "c",
            "account": "-A proj42",
            "partition": "-p gpu",
            "workdir": "/w",
        },
    )
    assert "--mem 64000" in call and "-t 2880" in call and "--cpus-per-task=8" in call, call
    assert "--qos=long" in call, call
    cpu_job = SimpleNamespace(resources=Resources(slurm_resources(GPU_CLUSTER, "data")), threads=2)
    assert set_gres_string(cpu_job) == ""


def test_unknown_resource_class_and_bad_values_are_errors():
    with pytest.raises(ConfigError, match="unknown resource class 'trian'"):
        slurm_resources(GPU_CLUSTER, "trian")
    with pytest.raises(ConfigError, match="unknown key"):
        slurm_resources({"resources": {"train": {"gpu": 2}}}, "train")
    with pytest.raises(ConfigError, match="gpus must be >= 0"):
        slurm_resources({"resources": {"train": {"gpus": -1}}}, "train")


def test_launcher_prefix():
    assert launcher(GPU_CLUSTER, "data") == "retrievegan"
    assert launcher({"resources": {"train": {"gpus": 1}}}, "train") == "retrievegan"
    assert launcher(GPU_CLUSTER, "train") == ("torchrun --standalone --nnodes=1 --nproc_per_node=4 -m retrievegan.cli")


@pytest.mark.slow
def test_torchrun_launcher_starts_one_cli_per_gpu():
    """The multi-GPU prefix really starts retrievegan once per worker (CPU: torchrun does not need GPUs)."""
    prefix = launcher({"resources": {"train": {"gpus": 2}}}, "train").split()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", OMP_NUM_THREADS="1")
    proc = subprocess.run([*prefix, "--help"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("usage: retrievegan") == 2, proc.stdout


@pytest.mark.slow
def test_workflow_rules_read_the_cluster_section(tmp_path):
    work = tiny_workdir(tmp_path, cluster=GPU_CLUSTER)
    log = snakemake(work, "--configfile", "tiny.yaml", "-n", "--cores", "2", "results/tiny/data/patches/patches.npy")
    text = log.stdout + log.stderr
    for rule in ("synth", "preprocess", "patches"):
        block = text.split(f"rule {rule}:", 1)[1].split("\n\n", 1)[0]
        assert "mem_mb=8000" in block and "runtime=120" in block and "slurm_partition=cpu" in block, block
        assert "slurm_account=proj42" in block and "gpu=0" in block, block


def test_schema_rejects_bad_cluster_config(tmp_path):
    work = tiny_workdir(tmp_path)
    (work / "bad.yaml").write_text("cluster: {resources: {train: {gpus: 2, memory: 3}}}\n")
    proc = snakemake(work, "--configfile", "tiny.yaml", "bad.yaml", "-n", "--cores", "1", check=False)
    assert proc.returncode != 0 and "memory" in proc.stdout + proc.stderr


def test_slurm_profile_selects_the_plugin():
    import yaml

    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.v8+.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["latency-wait"] >= 30 and profile["rerun-incomplete"] is True


# --- dvcsync helpers -------------------------------------------------------------------------------
def _stage(name, deps=(), outs=(), params=None, cmd="snakemake --cores 1 t"):
    return dvcsync.LockedStage(
        name, cmd, tuple(deps), params or {}, tuple(dvcsync.LockedOut(o, "x", "md5") for o in outs)
    )


def test_stage_dag_from_lock_paths():
    stages = {
        s.name: s
        for s in (
            _stage("data", deps=["src/retrievegan/data"], outs=["results/s/raw", "results/s/data"]),
            _stage("train", deps=["results/s/data/patches", "src/retrievegan/train"], outs=["results/s/models/x"]),
            _stage("sample", deps=["results/s/models/x"], outs=["results/s/samples/x"]),
            _stage("other", deps=["results/s/data_extra"], outs=["results/s/o"]),
        )
    }
    parents = dvcsync.upstream(stages)
    assert parents == {"data": set(), "train": {"data"}, "sample": {"train"}, "other": set()}
    assert dvcsync.with_ancestors(["sample"], parents) == {"sample", "train", "data"}


def test_configfiles_are_found_as_snakemake_parses_them():
    argv, files = dvcsync.snakemake_argv("snakemake --profile p --cores 2 a b --configfile x.yaml y.yaml --cores 1")
    assert files == ["x.yaml", "y.yaml"] and argv[0] == "snakemake"
    assert dvcsync.snakemake_argv("snakemake --configfile=x.yaml t")[1] == ["x.yaml"]
    assert dvcsync.snakemake_argv("snakemake t")[1] == []
    with pytest.raises(dvcsync.SyncError, match="single snakemake call"):
        dvcsync.snakemake_argv("snakemake a && rm -rf b")
    with pytest.raises(dvcsync.SyncError, match="single snakemake call"):
        dvcsync.snakemake_argv("python train.py")


def test_locked_config_layers_like_snakemake():
    stage = _stage(
        "s",
        params={
            "config/config.yaml": {"patches": {"crop_size": 16, "num_workers": 2}},
            "config/paper.yaml": {"patches": {"crop_size": 64}},
            "other.yaml": {"x": 1},
        },
    )
    assert dvcsync.locked_config(stage, []) == {"patches": {"crop_size": 16, "num_workers": 2}}
    assert dvcsync.locked_config(stage, ["config/paper.yaml"]) == {"patches": {"crop_size": 64, "num_workers": 2}}


def test_only_param_changes_count_as_params_only():
    assert dvcsync._params_only([{"changed deps": {"config/config.yaml": {"patches": "modified"}}}])
    assert not dvcsync._params_only([{"changed deps": {"workflow/rules/data.smk": "modified"}}])
    assert not dvcsync._params_only([{"changed outs": {"results/x": "modified"}}])
    assert not dvcsync._params_only(["always changed"])


# --- benchmark protocol ----------------------------------------------------------------------------
def test_benchmark_rows_are_validated():
    good = bench.row("synth", "images/s", 20.0, "images/s", reference=10.0)
    assert good["ratio"] == 2.0 and bench.validate([good], "m")[0]["better"] == "higher"
    assert (
        bench.validate([{"benchmark": "b", "metric": "m", "value": 3, "unit": "s", "reference": 6}], "m")[0]["ratio"]
        == 0.5
    )
    for bad, message in (
        ([], "non-empty"),
        ([{"benchmark": "b", "metric": "m", "unit": "s"}], "missing"),
        ([{**good, "value": float("nan")}], "finite"),
        ([{**good, "colour": 1}], "unknown"),
        ([{**good, "better": "up"}], "better"),
    ):
        with pytest.raises(ValueError, match=message):
            bench.validate(bad, "m")


def test_runner_reports_a_failing_module():
    rows, seconds, error = run_module("bench_does_not_exist", timeout=120)
    assert rows == [] and error and "ModuleNotFoundError" in error


def test_workflow_benchmark_files_and_outputs(tmp_path):
    bench_dir = tmp_path / "benchmarks"
    bench_dir.mkdir()
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (bench_dir / "synth.tsv").write_text(header + "66.0\t0:01:06\t635.4\t1\t1\t1\t0\t0\t66\t44\n")
    (bench_dir / "patches.tsv").write_text(header + "2.0\t0:00:02\t163.9\t1\t1\t1\t0\t0\t99\t2\n")
    rows = snakemake_benchmarks(bench_dir, "workflow tiny")
    figures = {r["metric"]: r["value"] for r in rows}
    assert figures == {
        "patches wall time": 2.0,
        "synth wall time": 66.0,
        "sum of job wall times": 68.0,
        "peak job memory (max_rss)": 635.4,
    }
    write_outputs(tmp_path / "out", [{**r, "module": "__main__", "seconds": None} for r in rows], {"cpu": "x"})
    with open(tmp_path / "out/benchmarks.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["metric"] for r in table] == [r["metric"] for r in rows] and table[0]["unit"] == "s"
    assert "| workflow tiny | synth wall time | 66 |" in (tmp_path / "out/benchmarks.md").read_text()


def _job(stamp: str, jobid: int, rule: str, threads: int | None) -> str:
    return (
        f"[Sun Nov 29 08:{stamp} 2026]\nlocalrule {rule}:\n    output: x{jobid}\n    jobid: {jobid}\n"
        + (f"    threads: {threads}\n" if threads else "")
        + "    resources: tmpdir=/tmp\n\n"
    )


def _done(stamp: str, jobid: int) -> str:
    return f"[Sun Nov 29 08:{stamp} 2026]\nFinished jobid: {jobid} (Rule: r)\n1 of 3 steps (33%) done\n"


def test_core_occupancy_counts_the_cores_no_job_held():
    """2 cores: a 2-thread job 0-10 s, then a 1-thread job 10-30 s beside a 1-thread job 10-20 s (no threads
    line: 1): the second core idles 20-30 s, 10 core-seconds of 60; the jobs held 20 + 20 + 10."""
    log = (
        "Provided cores: 2\nRules claiming more threads will be scaled down.\n\n"
        + _job("00:00", 1, "a", 2)
        + _done("00:10", 1)
        + _job("00:10", 2, "b", 1)
        + _job("00:10", 3, "c", None)
        + _done("00:20", 3)
        + _done("00:30", 2)
    )
    assert core_occupancy(log) == (2, 30, 10, 50)
    assert core_occupancy(log.replace("Provided cores: 2", "Provided cores: 1")) == (1, 30, 0, 30)  # threads capped
    assert core_occupancy("Provided cores: 2\n" + _job("00:00", 1, "a", 1)) is None  # nothing finished
