"""The committed dvc.lock and reference-run/ describe the code as it is (fast: no results needed).

dvc.lock is the reference run that `make verify` compares a user's run with. If code, rule files or config
values that a stage depends on change, its recorded outputs no longer follow from the code: this test fails
until the reference run is regenerated (README, "Release checklist": `make reproduce`, `make dvc-commit`,
commit dvc.lock + reference-run/, then `make verify` in fresh clones). It also fails when the git-tracked
reference copies of the metrics and tables (what `make verify` computes numeric differences against) do not
hash to what dvc.lock records.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from retrievegan import verify

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:dvc.*")

REPO = Path(__file__).resolve().parents[2]
REGENERATE = (
    "regenerate the reference run: `make reproduce && make dvc-commit`, then commit dvc.lock and "
    "reference-run/ (README, release checklist)"
)


@pytest.fixture(scope="module")
def repo():
    from dvc.repo import Repo

    with Repo(str(REPO)) as opened:
        yield opened


def test_lock_has_every_stage_with_its_command(repo):
    lock = yaml.safe_load((REPO / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    stages = {stage.addressing: stage for stage in repo.index.stages}
    assert set(lock) == set(stages), (
        f"dvc.lock stages {sorted(set(lock) ^ set(stages))} differ from dvc.yaml; {REGENERATE}"
    )
    changed = sorted(name for name, stage in stages.items() if lock[name]["cmd"] != stage.cmd)
    assert not changed, f"stage commands changed since dvc.lock: {changed}; {REGENERATE}"
    unhashed = sorted(name for name, stage in stages.items() if not all(out.hash_info for out in stage.outs))
    assert not unhashed, f"outputs without a recorded hash in dvc.lock: {unhashed}; {REGENERATE}"


def test_recorded_code_and_config_are_the_current_ones(repo):
    """Every code / rule / config dependency and config value of every stage hashes as dvc.lock records."""
    outs = [out.def_path for stage in repo.index.stages for out in stage.outs]
    stale = {stage.addressing: changed for stage in repo.index.stages if (changed := verify._changed_deps(stage, outs))}
    assert not stale, (
        "dvc.lock is stale (the reference outputs no longer follow from the code): "
        + "; ".join(
            f"{name}: {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}" for name, items in stale.items()
        )
        + f"; {REGENERATE}"
    )


def test_reference_copies_match_the_lock(repo):
    problems = verify.reference_problems(repo, REPO)
    assert not problems, f"{problems[:10]}; {REGENERATE}"
