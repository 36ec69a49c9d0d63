"""The data stage through Snakemake's SLURM executor plugin on a real single-node Slurm cluster.

The fixture starts munged, slurmctld and slurmd (Debian's slurm-wlm + munge, which `.ci/run` installs)
on loopback from a temporary slurm.conf (tests/slurmcluster.py) and stops them afterwards, also on
failure. It skips only when Slurm is missing or cannot be started here; `.ci/run` installs Slurm and sets
RETRIEVEGAN_REQUIRE_SLURM=1, which turns those skips into failures, so CI really runs this test.

Each cluster job costs seconds of Snakemake start-up inside the job plus the plugin's status polling, so
the test sends three jobs through sbatch (preprocess x2 in parallel, then patches); synth runs locally
first and dataset_table is a local rule.
"""

from __future__ import annotations

import os
import re
import sys
import time

import pytest
from slurmcluster import SlurmCluster, SystemConfigExists, unavailable_reason
from test_workflow import REPO, snakemake, tiny_workdir

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(900)]

REQUIRED = os.environ.get("RETRIEVEGAN_REQUIRE_SLURM", "") not in ("", "0")
MEM_MB, RUNTIME_MIN = 300, 7  # the tiny config's data class: checked in `scontrol show job`


def _unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"RETRIEVEGAN_REQUIRE_SLURM is set but Slurm is unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    if sys.platform != "linux":
        _unavailable("the Slurm test needs Linux")
    if os.geteuid() != 0:
        _unavailable("the Slurm test runs slurmd, which needs root")
    reason = unavailable_reason()
    if reason:
        _unavailable(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SystemConfigExists as exc:
        cluster.stop()
        _unavailable(str(exc))
    except BaseException as exc:
        logs = cluster.logs()
        cluster.stop()
        raise RuntimeError(f"could not start the Slurm cluster:\n{logs}") from exc
    try:
        yield cluster
    finally:
        cluster.stop()


def test_data_stage_through_sbatch(slurm_cluster, tmp_path, monkeypatch):
    cluster = slurm_cluster
    work = tiny_workdir(
        tmp_path,
        preprocess={"num_workers": 1},  # one CPU per job: both preprocess jobs fit the node at once
        patches={"num_workers": 1},
        cluster={
            "partition": cluster.partition,
            "resources": {"data": {"gpus": 0, "mem_mb": MEM_MB, "runtime": RUNTIME_MIN}},
        },
    )
    # snakemake() copies os.environ: make sbatch/squeue in the plugin read this cluster's slurm.conf.
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    snakemake(
        work, "--configfile", "tiny.yaml", "--cores", "2", "results/tiny/raw/coco/annotations/instances_train2017.json"
    )  # synth, locally

    targets = ["results/tiny/data/dataset_table.csv", "results/tiny/data/patches/patches.npy"]
    start = time.monotonic()
    proc = snakemake(
        work,
        "--profile",
        str(REPO / "workflow/profiles/slurm"),
        "--configfile",
        "tiny.yaml",
        "--jobs",
        "3",
        "--retries",
        "0",
        "--latency-wait",
        "5",
        # no accounting on the test cluster: squeue (MinJobAge=300) instead of sacct; poll quickly
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--seconds-between-status-checks",
        "2",
        "--slurm-keep-successful-logs",
        *targets,
        check=False,
    )
    elapsed = time.monotonic() - start
    log = proc.stdout + proc.stderr
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", log)
    print(f"\nSlurm job ids submitted by Snakemake: {submitted} ({elapsed:.0f} s)\n{cluster.job_table()}")
    assert proc.returncode == 0, f"{log[-6000:]}\n{cluster.job_table()}\n{cluster.logs()}"

    # Every job Snakemake submitted is a job slurmctld ran (and there are no others).
    assert sorted(submitted, key=int) == cluster.job_ids(), cluster.job_table()
    table = cluster.run("squeue", "-h", "-t", "all", "-o", "%i|%T|%k").stdout.split()
    jobs = {job_id: (state, comment) for job_id, state, comment in (row.split("|", 2) for row in table)}
    assert all(state == "COMPLETED" for state, _ in jobs.values()), jobs
    rules = sorted(re.match(r"rule_([a-z_]+?)(_wildcards|$)", c).group(1) for _, c in jobs.values())
    assert rules == ["patches", "preprocess", "preprocess"], rules  # dataset_table is a local rule

    # The cluster section of the config reached sbatch: partition, memory, time limit, CPUs = threads.
    for job_id in submitted:
        info = cluster.run("scontrol", "show", "job", job_id).stdout
        assert f"Partition={cluster.partition}" in info, info
        assert re.search(rf"\bMinMemoryNode={MEM_MB}M\b", info), info
        assert f"TimeLimit=00:{RUNTIME_MIN:02d}:00" in info, info
        assert "NumCPUs=1" in info, info

    assert (work / "results/tiny/data/patches/patches.npy").stat().st_size > 0
    assert len((work / "results/tiny/data/dataset_table.csv").read_text().splitlines()) == 3
    again = snakemake(work, "--configfile", "tiny.yaml", "--cores", "2", "-n", *targets)
    assert "Nothing to be done" in again.stdout + again.stderr
