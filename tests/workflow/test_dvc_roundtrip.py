"""DVC round trip on a tiny copy of the project: `dvc repro` + push from one clone, `dvc pull` in a fresh
clone, then Snakemake has nothing to do; corrupted objects in the remote or the cache are detected.

The project copy uses the repository's own dvc.yaml, .dvc/config (default remote
`../retrievegan-dvc-remote`, `verify = true`), .dvcignore, Snakefile and rules; only config/config.yaml
is replaced by the tiny benchmark (the layered config of tests/workflow/test_workflow.py, merged), so the real
stage definitions and remote layout are what is tested.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_workflow import REPO, tiny_workdir

from retrievegan import dvcsync
from retrievegan.config import load_yaml, merge

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
TARGETS = ["results/tiny/data/dataset_table.csv", "results/tiny/data/patches/patches.npy"]
REMOTE = "retrievegan-dvc-remote"  # the default remote, a sibling of the clone (.dvc/config)
ENV = dict(
    os.environ,
    PATH=f"{BIN}:{os.environ['PATH']}",
    GIT_AUTHOR_NAME="t",
    GIT_AUTHOR_EMAIL="t@t",
    GIT_COMMITTER_NAME="t",
    GIT_COMMITTER_EMAIL="t@t",
    DVC_NO_ANALYTICS="1",
)


def run(cwd: Path, *cmd: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, env=env or ENV, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def sync(cwd: Path, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, "-m", "retrievegan.dvcsync", *args, check=check, env=env)


def dry_run(cwd: Path) -> str:
    proc = run(cwd, str(BIN / "snakemake"), "-n", "--cores", "1", *TARGETS)
    return proc.stdout + proc.stderr


def planned_jobs(log: str) -> dict[str, int]:
    """{rule: count} from a dry run's job-stats table."""
    lines = log.split("Job stats:", 1)[1].splitlines()[3:] if "Job stats:" in log else []
    jobs = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    return jobs


def make_project(dst: Path) -> Path:
    """A git repository holding a tiny copy of the project (config/config.yaml = tiny benchmark)."""
    dst.mkdir(parents=True)
    for name in ("Snakefile", "dvc.yaml", ".dvcignore", ".gitignore", "workflow", "config"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst / name)
    (dst / ".dvc").mkdir()
    shutil.copy2(REPO / ".dvc/config", dst / ".dvc/config")
    for stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values():
        for dep in stage.get("deps", []):  # code deps, so that their hashes exist (upstream outs do not)
            src = REPO / dep
            if "${" not in dep and src.exists() and not (dst / dep).exists():
                (dst / dep).parent.mkdir(parents=True, exist_ok=True)
                if src.is_dir():
                    shutil.copytree(src, dst / dep, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(src, dst / dep)
    tiny = tiny_workdir(dst.parent / "tiny-config")
    config = merge(load_yaml(REPO / "config/config.yaml"), load_yaml(tiny / "tiny.yaml"))
    (dst / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run(dst, "git", "init", "-q")
    run(dst, "git", "add", "-A")
    run(dst, "git", "commit", "-qm", "tiny project")
    return dst


def clone(project: Path, dst: Path) -> Path:
    run(project.parent, "git", "clone", "-q", str(project), str(dst))
    return dst


def cache_object_of(project: Path, relpath: str) -> Path:
    """The cache object holding results/tiny/data/<relpath> (looked up in the stage's .dir manifest)."""
    stage = dvcsync.load_lock(project)["data"]
    out = next(o for o in stage.outs if o.path == "results/tiny/data")
    cache = project / ".dvc/cache"
    manifest = yaml.safe_load(dvcsync.cache_object(cache, out.md5).read_text())
    return dvcsync.cache_object(cache, next(e["md5"] for e in manifest if e["relpath"] == relpath))


def corrupt(path: Path) -> bytes:
    """Flip bytes in the middle of ``path`` (same size, so only a hash can tell); returns the original."""
    original = path.read_bytes()
    os.chmod(path, 0o644)  # DVC makes cache objects read-only
    middle = len(original) // 2
    path.write_bytes(
        original[:middle] + bytes(b ^ 0xFF for b in original[middle : middle + 8]) + original[middle + 8 :]
    )
    return original


@pytest.fixture(scope="module")
def pushed(tmp_path_factory) -> Path:
    """`dvc repro` + `git commit dvc.lock` + push in a tiny project; returns the project (remote beside it)."""
    project = make_project(tmp_path_factory.mktemp("dvc") / "project")
    run(project, str(BIN / "dvc"), "repro", "data")
    run(project, "git", "add", "dvc.lock")
    run(project, "git", "commit", "-qm", "dvc.lock")
    sync(project, "push", "data")
    assert any((project.parent / REMOTE / "files/md5").rglob("*")), "nothing reached the default remote"
    return project


def test_fresh_clone_pull_then_snakemake_has_nothing_to_do(pushed):
    fresh = clone(pushed, pushed.parent / "fresh")
    run(fresh, str(BIN / "dvc"), "pull", "data")
    # DVC does not keep mtimes: the worst checkout order (processed data written before the raw
    # files it came from) makes Snakemake want to redo the whole data stage ...
    earlier = os.stat(fresh / "dvc.lock").st_mtime - 3600
    for path in (fresh / "results/tiny/data").rglob("*"):
        os.utime(path, (earlier, earlier))
    assert planned_jobs(dry_run(fresh)).get("preprocess") == 2
    # ... until the outputs are verified against dvc.lock and touched in DAG order.
    report = sync(fresh, "touch", "data")
    assert "touched (up to date for Snakemake): data" in report.stdout, report.stdout
    log = dry_run(fresh)
    assert "Nothing to be done" in log, log[-3000:]

    # A config value changed before the hand-over (fresh metadata again): the stage is touched with the
    # values dvc.lock recorded, so Snakemake's params trigger re-runs only the rule the value feeds.
    shutil.rmtree(fresh / ".snakemake")
    config = fresh / "config/config.yaml"
    changed = yaml.safe_load(config.read_text())
    assert changed["patches"]["crop_size"] == 16
    changed["patches"]["crop_size"] = 8
    config.write_text(yaml.safe_dump(changed, sort_keys=False))
    report = sync(fresh, "pull", "data")  # dvc pull (nothing new to fetch) + verify + touch
    assert "config changed since the push: data" in report.stdout, report.stdout
    assert planned_jobs(dry_run(fresh)) == {"patches": 1}


def test_corrupted_remote_object_is_detected(pushed, tmp_path):
    remote = tmp_path / REMOTE
    shutil.copytree(pushed.parent / REMOTE, remote)
    obj = cache_object_of(pushed, "patches/patches.csv")
    corrupt(remote / obj.relative_to(pushed / ".dvc/cache"))
    fresh = clone(pushed, tmp_path / "fresh")  # its default remote resolves to tmp_path/REMOTE

    failed = sync(fresh, "pull", "data", check=False)  # verify = true: the download is hashed
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "dvc pull" in failed.stderr and "results/tiny/data" in failed.stderr, failed.stderr
    assert not (fresh / ".snakemake/metadata").exists()  # nothing was touched

    # Without the remote's verify, DVC takes the object; the hash check before touching still refuses.
    (fresh / ".dvc/config.local").write_text("['remote \"localdir\"']\n    verify = false\n")
    failed = sync(fresh, "pull", "data", check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "do NOT match dvc.lock" in failed.stdout, failed.stdout
    assert "results/tiny/data/patches/patches.csv: md5" in failed.stdout, failed.stdout
    assert "touched (up to date" not in failed.stdout and not (fresh / ".snakemake/metadata").exists()


def test_corrupted_cache_object_is_not_pushed(pushed):
    obj = cache_object_of(pushed, "coco_stuff/vocab.json")
    original = corrupt(obj)
    try:
        check = sync(pushed, "verify", "--cache", "data", check=False)
        assert check.returncode == 1 and "results/tiny/data/coco_stuff/vocab.json: md5" in check.stdout, check.stdout
        refused = sync(pushed, "push", "data", check=False)
        assert refused.returncode == 1 and "refusing to push" in refused.stderr, refused.stderr
        assert "coco_stuff/vocab.json" in refused.stderr
    finally:
        obj.write_bytes(original)
    assert sync(pushed, "verify", "--cache", "data").returncode == 0
