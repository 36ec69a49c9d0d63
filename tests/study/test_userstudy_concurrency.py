"""Many participants answering at once against one SQLite study database lose and duplicate nothing.

With the defaults a study runs with: the database created once (``Store(url, create=True)``, what
``retrievegan study-serve --init`` does), every server opening the existing file (``Store(url)``), WAL,
``synchronous = FULL``.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from userstudy_support import shared_root, study_config, tiny_study

from retrievegan.study.plan import make_plan
from retrievegan.study.pool import load_bundle
from retrievegan.study.store import Store

pytestmark = pytest.mark.slow  # processes, browsers or Snakemake runs: not in `make test-fast`


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_study(shared_root(tmp_path_factory), study_config(trials_per_pair=4, catch_trials=2))


def _participant(store: Store, bundle, pid: str, barrier: threading.Barrier | None) -> int:  # noqa: ANN001
    """One participant's whole session; every answer is sent twice (a double click). Returns rows inserted."""
    if barrier is not None:
        barrier.wait()
    plan = store.save_plan(make_plan(bundle, pid), "pid", "test")
    store.record_consent(pid, "c")
    inserted = 0
    for i, trial in enumerate(plan.trials):
        side = "left" if i % 2 else "right"
        inserted += store.record_response(plan, trial.trial_id, side, 100 + i, "test", "c")
        inserted += store.record_response(plan, trial.trial_id, "left", 999, "test", "c")  # duplicate: ignored
    assert store.complete(plan) is not None
    return inserted


def _check(url: str, bundle, pids: list[str]) -> None:  # noqa: ANN001
    store = Store(url)
    try:
        n_trials = len(make_plan(bundle, pids[0]).trials)
        rows = store.export_responses()
        assert len(rows) == len(pids) * n_trials
        assert not rows.duplicated(["participant_id", "trial_id"]).any()
        assert sorted(rows["participant_id"].unique()) == sorted(pids)
        assert (rows.groupby("participant_id").size() == n_trials).all()
        # the first answer stands: never the duplicate's response time
        assert (rows["response_time_ms"] != 999).all()
        progress = store.progress()
        assert len(progress) == len(pids) and progress["completed_at"].notna().all()
        assert store.integrity_check() == "ok"
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        store.dispose()


def test_sixty_participants_in_threads(bundle_dir: Path, tmp_path: Path) -> None:
    bundle = load_bundle(bundle_dir)
    url = f"sqlite:///{tmp_path / 'study.sqlite'}"
    Store(url, create=True).dispose()  # --init, once
    store = Store(url)  # one shared handle, as the Streamlit server shares one per process
    pids = [f"thread_{i:03d}" for i in range(60)]
    barrier = threading.Barrier(len(pids))
    with ThreadPoolExecutor(max_workers=len(pids)) as pool:
        inserted = list(pool.map(lambda pid: _participant(store, bundle, pid, barrier), pids))
    store.dispose()
    n_trials = len(make_plan(bundle, pids[0]).trials)
    assert inserted == [n_trials] * len(pids)
    _check(url, bundle, pids)


def _process_worker(args: tuple[str, str, list[str]]) -> int:
    study_dir, url, pids = args
    bundle = load_bundle(study_dir)
    store = Store(url)  # each process its own engine, like several app servers on one database file
    try:
        with ThreadPoolExecutor(max_workers=len(pids)) as pool:
            return sum(pool.map(lambda pid: _participant(store, bundle, pid, None), pids))
    finally:
        store.dispose()


def test_participants_in_several_processes(bundle_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.sqlite'}"
    Store(url, create=True).dispose()  # --init, once
    pids = [f"proc_{i:03d}" for i in range(52)]
    chunks = [pids[i::2] for i in range(2)]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        inserted = pool.map(_process_worker, [(str(bundle_dir), url, chunk) for chunk in chunks])
    bundle = load_bundle(bundle_dir)
    assert sum(inserted) == len(pids) * len(make_plan(bundle, pids[0]).trials)
    _check(url, bundle, pids)
