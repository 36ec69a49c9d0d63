"""User study library: bundle, plans, storage, simulated participants, analysis, CLI (tiny fixtures)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from userstudy_support import SETTING, fake_retrievals, shared_root, study_config, tiny_dataset, tiny_study

from retrievegan import cli
from retrievegan.errors import InputError
from retrievegan.study.analysis import analyze, check_responses, holm, load_responses, wilson
from retrievegan.study.config import AnalysisConfig, SimulationConfig
from retrievegan.study.plan import make_plan, plan_seed, validate_participant_id
from retrievegan.study.pool import build_bundle, load_bundle
from retrievegan.study.render import escape_markdown, graph_markdown, patch_grid, patch_set_alt
from retrievegan.study.simulate import coherence, patch_themes, simulate, truth, truth_shares
from retrievegan.study.store import DatabaseMissing, Store, StoreError

CFG = study_config(trials_per_pair=4, catch_trials=2)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_root(tmp_path_factory)


@pytest.fixture(scope="module")
def bundle_dir(root: Path) -> Path:
    return tiny_study(root, CFG)


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path):  # noqa: ANN201
    return load_bundle(bundle_dir)


@pytest.fixture(scope="module")
def themes(root: Path, bundle) -> dict[int, int]:  # noqa: ANN001
    return patch_themes(root / "data" / "patches" / "patches.csv", bundle)


# --- bundle ----------------------------------------------------------------------------------------


def test_bundle_contents(bundle, themes: dict[int, int], root: Path) -> None:  # noqa: ANN001
    assert bundle.reference == "retrievegan" and bundle.methods == CFG.methods
    table = pd.read_csv(root / "data" / "patches" / "patches.csv")
    bank = np.load(root / "data" / "patches" / "patches.npy")
    for items in bundle.pairs.values():
        assert len(items) >= CFG.plan.trials_per_pair
        for item in items:
            assert item.reference != item.other  # identical sets are left out
            objects, _ = bundle.graphs[item.image_id]
            assert len(objects) == len(item.reference) == len(item.other)
            assert list(table.loc[list(item.other), "category_name"]) == list(objects)
            np.testing.assert_array_equal(bundle.patch_images(item.other), bank[list(item.other)])
    assert len(bundle.catch) == CFG.plan.catch_pool
    for c in bundle.catch:
        real = table.loc[list(c.real)]
        foil = table.loc[list(c.foil)]
        assert (real["image_id"] == c.image_id).all() and (real["split"] == "test").all()
        assert list(real["category"]) == list(foil["category"])  # same objects, only compatibility differs
        assert c.image_id not in set(foil["image_id"]) and foil["image_id"].is_unique
        assert coherence(c.real, themes) == len(c.real)  # one real image: one theme


def test_bundle_is_deterministic(root: Path, bundle_dir: Path) -> None:
    again = tiny_study(root, CFG, name="study-again")
    assert again != bundle_dir
    assert (
        json.loads((again / "trials.json").read_text())["study_id"]
        == json.loads((bundle_dir / "trials.json").read_text())["study_id"]
    )
    assert (again / "patches.npy").read_bytes() == (bundle_dir / "patches.npy").read_bytes()


def _retrievals(root: Path) -> dict[str, Path]:
    return {m: root / "samples" / m / SETTING / "retrievals.json" for m in (CFG.reference, *CFG.methods)}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(method="other"), "method is 'other'"),
        (lambda d: d.update(setting="gt_bbox"), "setting is 'gt_bbox'"),
        (lambda d: d["records"][0].update(image_id=123), "record 0, image_id 123): image_id is not in the test split"),
        (lambda d: d["records"][1]["patch_ids"].pop(), "record 1"),
        (lambda d: d["records"][2]["patch_ids"].__setitem__(0, 10**9), "is not in the patch bank"),
        (lambda d: d["records"][0].update(patch_ids="x"), "patch_ids must be a list of integers"),
        (lambda d: d["records"].append(dict(d["records"][0])), "second sample-0 record"),
    ],
)
def test_bad_retrievals_name_file_and_record(root: Path, tmp_path: Path, mutate, message: str) -> None:  # noqa: ANN001
    data_dir, patch_dir = tiny_dataset(root)
    paths = _retrievals(root)
    data = json.loads(paths["pastegan"].read_text())
    mutate(data)
    bad = tmp_path / "bad_retrievals.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(InputError, match="bad_retrievals.json") as err:
        build_bundle({**paths, "pastegan": bad}, data_dir, patch_dir, CFG, tmp_path / "out")
    assert message in str(err.value)
    assert not (tmp_path / "out" / "trials.json").exists()


def test_retrieved_patch_of_wrong_split_or_category(root: Path, tmp_path: Path) -> None:
    data_dir, patch_dir = tiny_dataset(root)
    table = pd.read_csv(patch_dir / "patches.csv")
    paths = _retrievals(root)
    data = json.loads(paths["pastegan"].read_text())
    first = data["records"][0]
    graph_cat = int(table.loc[first["patch_ids"][0], "category"])
    test_patch = int(table[(table["split"] == "test") & (table["category"] == graph_cat)]["patch_id"].iloc[0])
    other_cat = int(table[(table["split"] == "train") & (table["category"] != graph_cat)]["patch_id"].iloc[0])
    for patch, message in ((test_patch, "is a test patch, not from the training bank"), (other_cat, "has category")):
        first["patch_ids"][0] = patch
        bad = tmp_path / "r.json"
        bad.write_text(json.dumps(data))
        with pytest.raises(InputError, match=message):
            build_bundle({**paths, "pastegan": bad}, data_dir, patch_dir, CFG, tmp_path / "out")


def test_missing_retrievals_file(root: Path, tmp_path: Path) -> None:
    data_dir, patch_dir = tiny_dataset(root)
    paths = {**_retrievals(root), "pastegan": tmp_path / "nope.json"}
    with pytest.raises(InputError, match="nope.json: retrievals of method 'pastegan' not found"):
        build_bundle(paths, data_dir, patch_dir, CFG, tmp_path / "out")


# --- plans -----------------------------------------------------------------------------------------


def test_participant_id_validation() -> None:
    assert validate_participant_id("5f0c0ffee0ddba11deadbeef") == "5f0c0ffee0ddba11deadbeef"
    assert validate_participant_id("a-b_C9") == "a-b_C9"
    for bad in ("", " ", "x" * 65, "<b>", "a'b", "a;b", "ä", None, 12, "a\nb"):
        assert validate_participant_id(bad) is None


def test_plan_design(bundle) -> None:  # noqa: ANN001
    plan = make_plan(bundle, "participant_1")
    assert plan == make_plan(bundle, "participant_1")  # a function of the seed only
    assert plan.seed == plan_seed(0, "participant_1") and plan.study_id == bundle.study_id
    assert [t.trial_id for t in plan.trials] != [t.trial_id for t in make_plan(bundle, "participant_2").trials]
    n_pairs = len(bundle.methods) * bundle.trials_per_pair
    assert len(plan.trials) == n_pairs + bundle.catch_trials
    assert len({t.trial_id for t in plan.trials}) == len(plan.trials)
    kinds = Counter(t.kind for t in plan.trials)
    assert kinds == {"pair": n_pairs, "catch": bundle.catch_trials}
    for other in bundle.methods:
        trials = [t for t in plan.trials if other in (t.left_method, t.right_method)]
        assert len(trials) == bundle.trials_per_pair
        assert all(bundle.reference in (t.left_method, t.right_method) for t in trials)
        # the reference is left in exactly half of the pair's trials
        assert sum(t.left_method == bundle.reference for t in trials) == bundle.trials_per_pair // 2
        assert len({t.image_id for t in trials}) == len(trials)
    catch = [t for t in plan.trials if t.kind == "catch"]
    assert sum(t.left_method == "catch_real" for t in catch) == len(catch) // 2
    # enough scene graphs in the fixture: no scene graph is seen twice by one participant
    assert len({t.image_id for t in plan.trials}) == len(plan.trials)
    # over many participants, positions and orders vary
    firsts = {make_plan(bundle, f"p{i}").trials[0].trial_id for i in range(30)}
    assert len(firsts) > 10
    with pytest.raises(ValueError):
        make_plan(bundle, "bad id")


# --- storage ---------------------------------------------------------------------------------------


def test_store_opens_only_an_existing_database(bundle, tmp_path: Path) -> None:  # noqa: ANN001
    url = f"sqlite:///{tmp_path / 'sub' / 's.sqlite'}"
    with pytest.raises(DatabaseMissing, match=r"no study database at .*s\.sqlite \(create it once with"):
        Store(url)
    assert not (tmp_path / "sub").exists()  # refusing created nothing
    (tmp_path / "other.sqlite").write_bytes(b"")
    with pytest.raises(DatabaseMissing, match="no 'plans' table"):
        Store(f"sqlite:///{tmp_path / 'other.sqlite'}")
    Store(url, create=True).dispose()
    store = Store(url)  # now it exists
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    store.dispose()


def test_store_append_only_and_unique(bundle, tmp_path: Path) -> None:  # noqa: ANN001
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}", create=True)
    plan = make_plan(bundle, "p1")
    stored = store.save_plan(plan, "pid", "v1")
    assert stored == plan
    other = make_plan(bundle, "p2")
    assert store.save_plan(type(plan)("p1", plan.study_id, other.seed, other.trials), "pid", "v1") == plan  # first wins
    assert store.record_consent("p1", "c1") and not store.record_consent("p1", "c1")
    assert store.has_consent("p1", "c1") and not store.has_consent("p1", "c2")
    t0, t1 = plan.trials[0].trial_id, plan.trials[1].trial_id
    store.record_display("p1", t0)
    assert store.record_response(plan, t0, "left", 1200, "v1", "c1", "b" * 32) is True
    assert store.record_response(plan, t0, "right", 50, "v1", "c1") is False
    assert store.complete(plan) is None
    with pytest.raises(StoreError):
        store.record_response(plan, "pastegan:1", "left", 1, "v1", "c1")
    with pytest.raises(StoreError):
        store.record_response(plan, t1, "middle", 1, "v1", "c1")
    with pytest.raises(StoreError):
        store.record_consent("<script>", "c1")
    rows = store.export_responses()
    assert len(rows) == 1 and rows["chosen_side"].iloc[0] == "left" and rows["response_time_ms"].iloc[0] == 1200
    assert rows["chosen_method"].iloc[0] == plan.trials[0].left_method
    assert pd.notna(rows["first_shown_at"].iloc[0])  # the first display time is kept with the answer
    assert store.answered_in_browser("p1", "b" * 32) and not store.answered_in_browser("p1", "c" * 32)
    assert not store.answered_in_browser("p1", "")
    with store.engine.begin() as conn, pytest.raises(sa.exc.DatabaseError, match="append-only"):
        conn.execute(sa.text("UPDATE responses SET chosen_side = 'right'"))
    with store.engine.begin() as conn, pytest.raises(sa.exc.DatabaseError, match="append-only"):
        conn.execute(sa.text("DELETE FROM plans"))
    for trial in plan.trials[1:]:
        assert store.complete(plan) is None
        store.record_response(plan, trial.trial_id, "right", 800, "v1", "c1")
    code = store.complete(plan)
    assert code is not None and store.complete(plan) == code
    progress = store.progress()
    assert progress.loc[0, "answered"] == len(plan.trials) and progress.loc[0, "completed_at"] is not None
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    assert store.integrity_check() == "ok"
    store.dispose()


# --- simulated participants and analysis -------------------------------------------------------------


def _simulate(bundle, themes, tmp_path: Path, **kw):  # noqa: ANN001, ANN202
    cfg = SimulationConfig(enabled=True, **kw)
    store = Store(f"sqlite:///{tmp_path / 'sim.sqlite'}", create=True)
    people = simulate(bundle, themes, cfg, store)
    responses = store.export_responses()
    plans = [store.get_plan(p) for p in people["participant_id"]]
    store.dispose()
    return (
        people,
        responses,
        truth(bundle, themes, cfg, plans, dict(zip(people["participant_id"], people["attentive"]))),
    )


def test_wilson_and_holm_reference_values() -> None:
    low, high = wilson(8, 10, 0.95)  # textbook: 0.4902, 0.9433
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])


def test_analysis_recovers_simulated_preference(bundle, themes: dict[int, int], tmp_path: Path) -> None:  # noqa: ANN001
    people, responses, expected = _simulate(
        bundle, themes, tmp_path, participants=80, noise=0.3, inattentive=0.1, seed=7
    )
    check_responses(responses, "mem")
    attentive_share = truth_shares(expected[expected["attentive"]])
    # the fixture methods: coherent vs random (strong), vs mixed (weaker), vs another coherent (none)
    assert attentive_share["pastegan"] > 0.8 and attentive_share["retrievegan_occur_only"] == pytest.approx(0.5)
    report = analyze(responses, "retrievegan", CFG.methods, AnalysisConfig(bootstrap=1000), "simulated", expected)
    included = report.participants.loc[~report.participants["excluded"], "participant_id"].tolist()
    expected_share = truth_shares(expected, included)  # the estimand: over the participants analysed
    prefs = report.aggregates[report.aggregates["measure"] == "preference"].set_index("other")
    assert list(prefs.index) == list(CFG.methods)
    for other, row in prefs.iterrows():
        truth_value = expected_share[other]
        assert row["wilson_low"] <= truth_value <= row["wilson_high"], (other, row["share"], truth_value)
        assert row["bootstrap_low"] <= truth_value <= row["bootstrap_high"], (other, truth_value)
        assert row["n"] == len(included) * CFG.plan.trials_per_pair and row["true_share_simulated"] == truth_value
    assert prefs.loc["pastegan", "significant_holm"] and prefs.loc["retrievegan_gt_only", "significant_holm"]
    assert not prefs.loc["retrievegan_occur_only", "significant_holm"]
    assert (prefs["p_holm"] >= prefs["p_value"]).all()
    left = report.aggregates.set_index("measure").loc["left_choice"]
    assert left["wilson_low"] <= 0.5 <= left["wilson_high"]
    # lapses make attentive participants fail a catch trial now and then (2 catch trials: one failure excludes)
    assert 0 < report.summary["participants_excluded"] < 40
    assert report.summary["participants_excluded"] == int((report.participants["catch_failure_rate"] > 0.25).sum())
    assert report.summary["simulated"] is True and set(report.aggregates["population"]) == {"simulated"}
    # the catch trials find the inattentive participants
    table = report.participants.set_index("participant_id").join(people.set_index("participant_id")[["attentive"]])
    assert table.loc[~table["attentive"], "excluded"].mean() > table.loc[table["attentive"], "excluded"].mean()


def test_left_bias_and_exclusion(bundle, themes: dict[int, int], tmp_path: Path) -> None:  # noqa: ANN001
    # everyone answers at random with a 75 % pull to the left; half are inattentive on catch trials too
    people, responses, _ = _simulate(
        bundle, themes, tmp_path, participants=60, noise=1.0, left_bias=0.25, inattentive=0.5, seed=3
    )
    report = analyze(responses, "retrievegan", CFG.methods, AnalysisConfig(bootstrap=500), "simulated")
    table = report.participants.set_index("participant_id").join(people.set_index("participant_id")[["attentive"]])
    inattentive = table[~table["attentive"]]
    attentive = table[table["attentive"]]
    # a random participant fails a catch trial half of the time: with 2 catch trials, 3 in 4 are excluded
    assert 0.5 < inattentive["excluded"].mean() <= 1.0
    # noise=1.0 makes attentive participants random too, so all are caught at the same rate
    assert attentive["excluded"].mean() > 0.4
    everyone = analyze(
        responses, "retrievegan", CFG.methods, AnalysisConfig(bootstrap=500, max_catch_failure_rate=1.0), "simulated"
    )
    left = everyone.aggregates.set_index("measure").loc["left_choice"]
    assert left["wilson_low"] <= 0.75 <= left["wilson_high"] and left["p_value"] < 1e-6
    catch = everyone.aggregates.set_index("measure").loc["catch_failure"]
    assert catch["wilson_low"] <= 0.5 <= catch["wilson_high"]
    assert everyone.summary["participants_excluded"] == 0


def test_exclusion_on_a_hand_made_table(bundle, tmp_path: Path) -> None:  # noqa: ANN001
    store = Store(f"sqlite:///{tmp_path / 'h.sqlite'}", create=True)
    for pid, fail_catch, stop_after in (("good", False, None), ("careless", True, None), ("quitter", False, 3)):
        plan = store.save_plan(make_plan(bundle, pid), "pid", "v")
        for i, trial in enumerate(plan.trials):
            if stop_after is not None and i >= stop_after:
                break
            if trial.kind == "catch":
                side = "left" if (trial.left_method == "catch_foil") == fail_catch else "right"
            else:
                side = "left" if trial.left_method == "retrievegan" else "right"
            store.record_response(plan, trial.trial_id, side, 1000, "v", "c")
    responses = store.export_responses()
    store.dispose()
    report = analyze(responses, "retrievegan", CFG.methods, AnalysisConfig(bootstrap=200), "participants")
    reasons = report.participants.set_index("participant_id")["exclusion_reason"].to_dict()
    assert reasons["good"] == "" and reasons["careless"] == "catch" and reasons["quitter"].endswith("incomplete")
    prefs = report.aggregates[report.aggregates["measure"] == "preference"]
    assert (prefs["n_participants"] == 1).all() and (prefs["share"] == 1.0).all()
    lenient = analyze(
        responses,
        "retrievegan",
        CFG.methods,
        AnalysisConfig(bootstrap=200, require_complete=False, max_catch_failure_rate=1.0),
        "participants",
    )
    assert lenient.summary["participants_included"] == 3


def test_responses_are_checked(tmp_path: Path, bundle) -> None:  # noqa: ANN001
    store = Store(f"sqlite:///{tmp_path / 'c.sqlite'}", create=True)
    plan = store.save_plan(make_plan(bundle, "p"), "pid", "v")
    for trial in plan.trials:
        store.record_response(plan, trial.trial_id, "left", 10, "v", "c")
    df = store.export_responses()
    store.dispose()
    path = tmp_path / "r.csv"
    df.to_csv(path, index=False)
    assert len(load_responses(path)) == len(plan.trials)
    pd.concat([df, df.iloc[[2]]]).to_csv(path, index=False)
    with pytest.raises(InputError, match=rf"r.csv \(row {len(plan.trials) + 2}, participant 'p', trial"):
        load_responses(path)
    bad = df.copy()
    bad.loc[4, "chosen_method"] = "somebody"
    bad.to_csv(path, index=False)
    with pytest.raises(InputError, match=r"row 6\): chosen_method does not match"):
        load_responses(path)
    bad = df.copy()
    bad.loc[0, "study_id"] = "other"
    bad.to_csv(path, index=False)
    with pytest.raises(InputError, match="2 study bundles"):
        load_responses(path)
    df.drop(columns=["plan_seed"]).to_csv(path, index=False)
    with pytest.raises(InputError, match="missing columns"):
        load_responses(path)


# --- rendering -------------------------------------------------------------------------------------


def test_rendering() -> None:
    assert escape_markdown("<b>x</b> *y* [a](b)") == r"\<b\>x\<\/b\> \*y\* \[a\]\(b\)".replace(r"\/", "/")
    text = graph_markdown(["circle", "sky"], ["circle above sky"])
    assert "1\\. circle" in text and "circle above sky" in text
    grid = patch_grid(np.zeros((5, 16, 16, 3), np.uint8), labels=list("abcde"), tile=32, gap=4)
    assert grid.dtype == np.uint8 and grid.shape == (3 * (32 + 20) + 4 * 4, 2 * 32 + 3 * 4, 3)  # 2 a row
    assert patch_set_alt("Left set", ["circle", "sky"]) == "Left set: 1. circle, 2. sky"


# --- CLI -------------------------------------------------------------------------------------------


def test_cli_trials_simulate_report(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, patch_dir = tiny_dataset(root)
    params = json.dumps(
        {
            "reference": "retrievegan",
            "methods": list(CFG.methods),
            "setting": SETTING,
            "plan": {"trials_per_pair": 4, "catch_trials": 2, "catch_pool": 12},
            "simulate": {"enabled": True, "participants": 30, "noise": 0.2, "inattentive": 0.1},
            "analysis": {"bootstrap": 300},
        }
    )
    study = tmp_path / "userstudy" / "study"
    retrievals = [f"{m}={p}" for m, p in _retrievals(root).items()]
    assert (
        cli.main(
            [
                "study-trials",
                "--params",
                params,
                "--retrievals",
                *retrievals,
                "--data-dir",
                str(data_dir),
                "--patch-dir",
                str(patch_dir),
                "--out-dir",
                str(study),
                "--dataset",
                "tiny",
            ]
        )
        == 0
    )
    assert json.loads((study / "run.json").read_text())["stage"] == "study-trials"
    out = tmp_path / "userstudy"
    assert (
        cli.main(
            [
                "study-simulate",
                "--params",
                params,
                "--study-dir",
                str(study),
                "--patch-table",
                str(patch_dir / "patches.csv"),
                "--out",
                str(out / "responses_simulated.csv"),
                "--truth-out",
                str(out / "truth_simulated.csv"),
            ]
        )
        == 0
    )
    sim = pd.read_csv(out / "responses_simulated.csv")
    assert (sim["population"] == "simulated").all() and (sim["id_source"] == "simulated").all()
    assert len(sim) == 30 * (3 * 4 + 2)
    assert (
        cli.main(
            [
                "study-report",
                "--params",
                params,
                "--responses",
                str(out / "responses_simulated.csv"),
                "--population",
                "simulated",
                "--truth",
                str(out / "truth_simulated.csv"),
                "--out-dir",
                str(out),
            ]
        )
        == 0
    )
    for name in (
        "preference_simulated.csv",
        "participants_simulated.csv",
        "summary_simulated.json",
        "preference_simulated.png",
    ):
        assert (out / name).stat().st_size > 0
    aggregates = pd.read_csv(out / "preference_simulated.csv")
    assert (aggregates["population"] == "simulated").all() and aggregates["true_share_simulated"].notna().sum() == 3
    # simulated responses cannot pass as people
    assert (
        cli.main(
            [
                "study-report",
                "--params",
                params,
                "--responses",
                str(out / "responses_simulated.csv"),
                "--population",
                "participants",
                "--out-dir",
                str(out),
            ]
        )
        == 2
    )
    assert "population column says ['simulated']" in capsys.readouterr().err
    assert not (out / "preference_participants.csv").exists()
    # export from a database
    assert (
        cli.main(
            [
                "study-export",
                "--database-url",
                f"sqlite:///{tmp_path / 'db.sqlite'}",
                "--out",
                str(out / "responses_participants.csv"),
            ]
        )
        == 2
    )
    assert "study database not found" in capsys.readouterr().err
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}", create=True)
    plan = store.save_plan(make_plan(load_bundle(study), "p1"), "pid", "v")
    store.record_response(plan, plan.trials[0].trial_id, "left", 5, "v", "c")
    store.dispose()
    assert (
        cli.main(
            [
                "study-export",
                "--database-url",
                f"sqlite:///{tmp_path / 'db.sqlite'}",
                "--out",
                str(out / "responses_participants.csv"),
            ]
        )
        == 0
    )
    exported = pd.read_csv(out / "responses_participants.csv")
    assert exported["participant_id"].tolist() == ["p1"] and exported["n_trials"].tolist() == [len(plan.trials)]


def test_config_rejects_bad_sections() -> None:
    from retrievegan.config import from_mapping
    from retrievegan.errors import ConfigError
    from retrievegan.study.config import UserStudyConfig

    with pytest.raises(ConfigError, match="unknown key"):
        from_mapping(UserStudyConfig, {"plan": {"trials": 3}})
    with pytest.raises(ConfigError, match="cannot also be a compared method"):
        from_mapping(UserStudyConfig, {"methods": ["retrievegan"]})
    with pytest.raises(ConfigError):
        from_mapping(UserStudyConfig, {"simulate": {"noise": 1.5}})
    cfg = from_mapping(UserStudyConfig, {"methods": ["pastegan"], "plan": {"trials_per_pair": 3}})
    assert cfg.plan.trials_per_pair == 3 and cfg.methods == ("pastegan",)


def test_fake_retrievals_fixture_has_documented_format(root: Path, tmp_path: Path) -> None:
    data_dir, patch_dir = tiny_dataset(root)
    data = json.loads(fake_retrievals(tmp_path / "r.json", "x", data_dir, patch_dir, "random", 0).read_text())
    assert set(data) == {"method", "setting", "records"}
    assert {r["sample"] for r in data["records"]} == {0, 1}
    assert set(data["records"][0]) == {"image_id", "sample", "patch_ids"}


def test_config_yaml_section_matches_the_dataclass() -> None:
    import yaml

    from retrievegan.config import from_mapping
    from retrievegan.study.config import AnalysisConfig, PlanConfig, UserStudyConfig

    section = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "config.yaml").read_text())["userstudy"]
    cfg = from_mapping(UserStudyConfig, section, "userstudy")
    # docs/userstudy.md promises `--params '{}'` gives the config.yaml study design
    assert cfg.plan == PlanConfig() and cfg.analysis == AnalysisConfig()
    assert (cfg.reference, cfg.methods, cfg.setting) == (
        UserStudyConfig().reference,
        UserStudyConfig().methods,
        UserStudyConfig().setting,
    )
    assert cfg.simulate.enabled


# --- secrets and the bundle's checks -----------------------------------------------------------------

PASSWORD_URL = "postgresql+psycopg://study_app:s3cret-pw-123@db.example.org/study"


def test_config_with_a_password_in_database_url_is_refused() -> None:
    from retrievegan.config import from_mapping
    from retrievegan.errors import ConfigError
    from retrievegan.study.config import UserStudyConfig

    with pytest.raises(ConfigError, match="userstudy.database_url: the database URL contains a password") as err:
        from_mapping(UserStudyConfig, {"database_url": PASSWORD_URL}, "userstudy")
    assert "s3cret-pw-123" not in str(err.value) and "RETRIEVEGAN_STUDY_DB_URL" in str(err.value)
    assert from_mapping(UserStudyConfig, {"database_url": "postgresql+psycopg://study_app@db.example.org/study"})


def test_cli_with_a_password_in_the_config_writes_nothing(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, patch_dir = tiny_dataset(root)
    study = tmp_path / "userstudy" / "study"
    retrievals = [f"{m}={p}" for m, p in _retrievals(root).items()]
    params = json.dumps({"methods": list(CFG.methods), "database_url": PASSWORD_URL})
    assert (
        cli.main(
            [
                "study-trials",
                "--params",
                params,
                "--retrievals",
                *retrievals,
                "--data-dir",
                str(data_dir),
                "--patch-dir",
                str(patch_dir),
                "--out-dir",
                str(study),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "contains a password" in err and "s3cret-pw-123" not in err
    assert not (tmp_path / "userstudy").exists()
    # nor on the command line of the export or the server
    assert cli.main(["study-export", "--database-url", PASSWORD_URL, "--out", str(tmp_path / "x.csv")]) == 2
    assert cli.main(["study-serve", "--check", "--db-url", PASSWORD_URL]) == 2
    err = capsys.readouterr().err
    assert err.count("contains a password") == 2 and "s3cret-pw-123" not in err
    assert not (tmp_path / "x.csv").exists()


def test_workflow_with_a_password_in_the_config_is_refused_before_any_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    repo = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    config["userstudy"]["database_url"] = PASSWORD_URL
    config["results"] = str(tmp_path / "results")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake = Path(sys.executable).with_name("snakemake")
    proc = subprocess.run(
        [
            str(snakemake),
            "--cores",
            "1",
            "--dry-run",
            "--configfile",
            str(tmp_path / "config.yaml"),
            "--directory",
            str(repo),
            "--snakefile",
            str(repo / "Snakefile"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "userstudy.database_url: the database URL contains a password" in output
    assert "s3cret-pw-123" not in output
    assert not (tmp_path / "results").exists()


def _break(study: Path, how: str) -> None:
    data = json.loads((study / "trials.json").read_text())
    if how == "top-level list":
        data = [data]
    elif how == "empty graphs":
        data["graphs"] = {}
    elif how == "unknown patch id":
        data["pairs"]["pastegan"][0]["other"][0] = 999999
    elif how == "methods not a list":
        data["methods"] = "pastegan"
    elif how == "old format":
        data["format_version"] = 1
    elif how == "password in database_url":
        data["database_url"] = PASSWORD_URL
    elif how == "too few catch items":
        data["catch"] = data["catch"][:1]
    if how == "truncated patches.npy":
        raw = (study / "patches.npy").read_bytes()
        (study / "patches.npy").write_bytes(raw[: len(raw) // 2])
    elif how == "missing patches.npy":
        (study / "patches.npy").unlink()
    elif how == "malformed JSON":
        (study / "trials.json").write_text('{"format_version": 2,')
    else:
        (study / "trials.json").write_text(json.dumps(data))


BROKEN_BUNDLES = {
    "top-level list": r"trials\.json \(top level\): expected an object, got list",
    "empty graphs": r"trials\.json \(pairs\['pastegan'\]\[0\]\.image_id\): scene graph \d+ is not in graphs",
    "unknown patch id": r"trials\.json \(pairs\['pastegan'\]\[0\]\.other\[0\]\): patch id 999999 is not in patch_ids",
    "methods not a list": r"trials\.json \(methods\): expected a list, got str",
    "old format": r"trials\.json \(format_version\): unsupported format_version 1",
    "password in database_url": r"trials\.json \(database_url\): the database URL contains a password",
    "too few catch items": r"trials\.json \(catch\): 1 catch items, fewer than plan\.catch_trials = 2",
    "truncated patches.npy": r"patches\.npy: not a readable \.npy array",
    "missing patches.npy": r"patches\.npy: bundle patches not found",
    "malformed JSON": r"trials\.json: malformed JSON",
}


@pytest.mark.parametrize("how", list(BROKEN_BUNDLES))
def test_broken_bundle_is_refused_naming_file_and_record(bundle_dir: Path, tmp_path: Path, how: str) -> None:
    import shutil

    study = tmp_path / "study"
    shutil.copytree(bundle_dir, study)
    _break(study, how)
    with pytest.raises(InputError, match=BROKEN_BUNDLES[how]) as err:
        load_bundle(study)
    assert "s3cret-pw-123" not in str(err.value)


def test_bundle_keeps_access_settings_outside_the_study_id(root: Path, tmp_path: Path) -> None:
    import dataclasses

    from retrievegan.study.config import AccessConfig

    data_dir, patch_dir = tiny_dataset(root)
    plain = build_bundle(_retrievals(root), data_dir, patch_dir, CFG, tmp_path / "a")
    strict = build_bundle(
        _retrievals(root),
        data_dir,
        patch_dir,
        dataclasses.replace(CFG, access=AccessConfig(signed_links=True, prolific_only=True)),
        tmp_path / "b",
    )
    assert plain["study_id"] == strict["study_id"]
    loaded = load_bundle(tmp_path / "b")
    assert loaded.signed_links and loaded.prolific_only


def test_access_rules() -> None:
    from retrievegan.study import access

    assert (
        access.secret_problem("a long random string") == "admin_secret is the documentation's placeholder; generate one"
    )
    assert "fewer than 24" in access.secret_problem("x1y2z3w4v5u6t7s8")
    assert "distinct" in access.secret_problem("ab" * 20)
    assert access.secret_problem("Zq3-hT9_pLw2xVb7Kc4NmR8sYd") is None
    assert [access.backoff_seconds(n) for n in range(5)] == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert access.backoff_seconds(40) == access.BACKOFF_CAP_S
    sig = access.sign_participant("k" * 8 + "0123456789abcdefghijklmnopqrstuv", "p1")
    assert len(sig) == 32 and access.signature_ok("k" * 8 + "0123456789abcdefghijklmnopqrstuv", "p1", sig)
    assert not access.signature_ok("k" * 8 + "0123456789abcdefghijklmnopqrstuv", "p2", sig)
    assert not access.signature_ok("another-secret-another-secret-another", "p1", sig)
    assert access.is_prolific_id("5f0c0ffee0ddba11deadbeef") and not access.is_prolific_id("someone_else")
    assert access.token_hash("t") != "t" and len(access.token_hash("t")) == 32


def test_study_links_cli(tmp_path: Path) -> None:
    from retrievegan.study import access

    app = tmp_path / "userstudy" / "app.py"
    (app.parent / ".streamlit").mkdir(parents=True)
    app.write_text("")
    link_secret = "Lk8-2vQx_9mTzR4pWc7NbY3sHd6FgJ1aE5uK"
    (app.parent / ".streamlit" / "secrets.toml").write_text(f'link_secret = "{link_secret}"\n')
    ids = tmp_path / "ids.txt"
    ids.write_text("alice_01\n5f0c0ffee0ddba11deadbeef\n\n")
    out = tmp_path / "links.csv"
    assert (
        cli.main(
            [
                "study-links",
                "--ids",
                str(ids),
                "--base-url",
                "https://study.example.org/",
                "--out",
                str(out),
                "--app",
                str(app),
            ]
        )
        == 0
    )
    links = pd.read_csv(out)
    assert links["link"].tolist() == [
        f"https://study.example.org/?pid=alice_01&sig={access.sign_participant(link_secret, 'alice_01')}",
        "https://study.example.org/?PROLIFIC_PID=5f0c0ffee0ddba11deadbeef"
        f"&sig={access.sign_participant(link_secret, '5f0c0ffee0ddba11deadbeef')}",
    ]
    ids.write_text("alice_01\n<bad id>\n")
    assert (
        cli.main(["study-links", "--ids", str(ids), "--base-url", "https://x/", "--out", str(out), "--app", str(app)])
        == 2
    )


def test_default_database_is_outside_results_and_ignored() -> None:
    import shlex
    import subprocess

    from retrievegan.study import dburl

    repo = Path(__file__).resolve().parents[2]
    url = dburl.default_url(repo / "userstudy", "synth")
    path = dburl.sqlite_path(url)
    assert path == repo / "userstudy" / "data" / "responses-synth.sqlite" and path.is_absolute()
    # make clean-results deletes nothing above or at the database
    recipe = subprocess.run(["make", "-n", "clean-results"], cwd=repo, capture_output=True, text=True, check=True)
    deleted = [
        repo / word
        for line in recipe.stdout.splitlines()
        if line.startswith("rm ")
        for word in shlex.split(line)[1:]
        if not word.startswith("-")
    ]
    assert deleted and not any(path.is_relative_to(d) for d in deleted)
    # git and DVC ignore it (people's answers are never committed or pushed)
    assert subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=repo).returncode == 0
    assert "userstudy/data/" in (repo / ".dvcignore").read_text().splitlines()


def test_secrets_file_of_the_app_is_git_ignored() -> None:
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    for path in ("userstudy/.streamlit/secrets.toml", ".streamlit/secrets.toml"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=repo).returncode == 0, path
    assert subprocess.run(["git", "check-ignore", "-q", "userstudy/.streamlit/config.toml"], cwd=repo).returncode == 1
