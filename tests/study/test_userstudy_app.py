"""Streamlit AppTest tests of the user-study app (userstudy/app.py) on a tiny fixture bundle."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from userstudy_support import shared_root, study_config, tiny_study

from retrievegan.study.store import Store

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

APP = Path(__file__).resolve().parents[2] / "userstudy" / "app.py"
ADMIN_SECRET = "correct-horse-battery-staple"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_study(shared_root(tmp_path_factory), study_config(trials_per_pair=2, catch_trials=2))


@pytest.fixture
def db_url(tmp_path: Path, bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'study.sqlite'}"
    Store(url, create=True).dispose()  # what `retrievegan study-serve --init` does once; the app only opens it
    monkeypatch.setenv("RETRIEVEGAN_STUDY_DIR", str(bundle_dir))
    monkeypatch.setenv("RETRIEVEGAN_STUDY_DB_URL", url)
    monkeypatch.delenv("RETRIEVEGAN_STUDY_CONSENT", raising=False)
    return url


def app(query: dict[str, str] | None = None, secrets: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    # Always hand over a secrets dict so a developer's .streamlit/secrets.toml never leaks into a test.
    at.secrets.update(secrets or {"unrelated": "x"})
    return at.run()


def walk(node):  # noqa: ANN001, ANN201 - streamlit element tree
    yield node
    for child in getattr(node, "children", {}).values():
        yield from walk(child)


def page_text(at: AppTest) -> str:
    return "\n".join(str(n.proto) for n in walk(at._tree) if getattr(n, "proto", None) is not None)


def no_html(at: AppTest) -> bool:
    """No markdown may carry HTML, and the only HTML element is the app's fixed style sheet (ui.STYLE)."""
    from retrievegan.study.ui import STYLE

    markdown = [n for n in walk(at._tree) if getattr(n, "type", None) == "markdown"]
    html = [n for n in walk(at._tree) if getattr(n, "type", None) == "html"]
    return all(not n.proto.allow_html for n in markdown) and all(n.proto.body == STYLE for n in html)


def choice_buttons(at: AppTest) -> dict[str, object]:
    return {b.key.rsplit(":", 1)[1]: b for b in at.button if b.key and b.key.startswith("choose:")}


def progress_text(at: AppTest) -> str:
    return at.get("progress")[0].proto.text


def n_responses(url: str) -> int:
    store = Store(url)
    try:
        return store.count_responses()
    finally:
        store.dispose()


def test_consent_trials_completion(db_url: str) -> None:
    at = app({"PROLIFIC_PID": "5f0c0ffee0ddba11deadbeef"})
    assert not at.exception
    assert "information and consent" in at.markdown[0].value
    assert not choice_buttons(at)  # no trial before consent
    at.button(key="consent-agree").click().run()
    store = Store(db_url)
    plan = store.get_plan("5f0c0ffee0ddba11deadbeef")
    assert plan is not None  # saved at consent, before the first trial is answered
    assert store.count_responses() == 0
    n = len(plan.trials)
    assert n == 3 * 2 + 2
    for i in range(n):
        assert not at.exception
        assert progress_text(at) == f"Trial {i + 1} of {n}"
        assert [img.captions for img in at.get("image")] == [["Left set"], ["Right set"]]
        assert at.code.len == 0  # no completion code while a trial is unanswered
        assert "more mutually compatible" in at.subheader[0].value
        choice_buttons(at)["left" if i % 2 else "right"].click().run()
        assert store.count_responses() == i + 1
    assert at.success and "finished" in at.success[0].value
    code = at.code[0].value
    assert len(code) == 8
    rows = store.export_responses()
    assert len(rows) == n and rows["trial_id"].is_unique
    assert set(rows["id_source"]) == {"prolific"}
    assert (rows["plan_seed"] == plan.seed).all() and rows["app_version"].str.startswith("retrievegan-").all()
    # the chosen side maps onto the stored plan's methods
    for _, row in rows.iterrows():
        trial = plan.trial(row["trial_id"])
        assert row["chosen_method"] == trial.method(row["chosen_side"])
        assert (row["method_left"], row["method_right"]) == (trial.left_method, trial.right_method)
    # a reload after completion (the URL keeps the browser token) shows the same code and writes nothing
    token = at.query_params["s"]
    again = app({"PROLIFIC_PID": "5f0c0ffee0ddba11deadbeef", "s": token})
    assert again.code[0].value == code and store.count_responses() == n
    # someone who only knows the participant id sees that the study is finished, never the code
    other = app({"PROLIFIC_PID": "5f0c0ffee0ddba11deadbeef"})
    assert not other.exception and other.code.len == 0 and "browser window where the answers" in other.info[0].value
    assert code not in page_text(other)
    assert (rows["first_shown_at"].notna()).all()
    store.dispose()


def test_reload_and_second_tab_resume(db_url: str) -> None:
    at = app({"pid": "resume_me"})
    at.button(key="consent-agree").click().run()
    for _ in range(3):
        choice_buttons(at)["left"].click().run()
    assert progress_text(at) == "Trial 4 of 8"
    reloaded = app({"pid": "resume_me"})  # a new session: a reload or a second tab
    assert not reloaded.exception
    assert not [b for b in reloaded.button if b.key == "consent-agree"]  # consent is not asked again
    assert progress_text(reloaded) == "Trial 4 of 8"
    assert set(choice_buttons(reloaded)) == {"left", "right"}
    assert n_responses(db_url) == 3


def test_double_submission_stores_one_row(db_url: str) -> None:
    first = app({"pid": "double_click"})
    first.button(key="consent-agree").click().run()
    second = app({"pid": "double_click"})  # second tab, same trial on screen
    assert progress_text(first) == progress_text(second) == "Trial 1 of 8"
    trial_key = choice_buttons(first)["left"].key.rsplit(":", 1)[0]
    choice_buttons(first)["left"].click().run()
    choice_buttons(second)["right"].click().run()  # answers the same trial again: ignored
    store = Store(db_url)
    rows = store.export_responses()
    assert len(rows) == 1
    assert rows["chosen_side"].iloc[0] == "left"  # the first answer stands
    assert f"choose:{rows['trial_id'].iloc[0]}" == trial_key
    assert progress_text(second) == "Trial 2 of 8"  # both tabs move on to the next unanswered trial
    # the same click delivered twice (a rerun replaying the callback) also writes once
    plan = store.get_plan("double_click")
    assert plan is not None
    nxt = plan.trials[1].trial_id
    assert store.record_response(plan, nxt, "right", 900, "v", "c") is True
    assert store.record_response(plan, nxt, "left", 950, "v", "c") is False
    assert store.count_responses() == 2
    store.dispose()


BAD_IDS = [
    "",
    "has space",
    "x" * 65,
    "<script>alert('pid')</script>",
    "<img src=x onerror=alert(1)>",
    "**bold**[link](javascript:alert(1))",
    "1' OR '1'='1",
    "robert'); DROP TABLE responses;--",
    "\u00fcn\u00efc\u00f8de",
    "nul\x00byte",
    "line\nbreak",
]


@pytest.mark.parametrize(
    ("key", "raw"), [("pid", raw) for raw in BAD_IDS] + [("PROLIFIC_PID", raw) for raw in BAD_IDS[:5] + BAD_IDS[6:8]]
)
def test_bad_participant_ids_are_refused_and_never_rendered(db_url: str, key: str, raw: str) -> None:
    at = app({key: raw})
    assert not at.exception
    assert at.error and "not valid" in at.error[0].value
    assert not at.button  # no consent, no trial
    text = page_text(at)
    if len(raw) > 2:
        assert raw not in text
    assert no_html(at)
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM plans")).scalar_one() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM consents")).scalar_one() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM responses")).scalar_one() == 0
    engine.dispose()


def test_invalid_prolific_id_is_not_replaced_by_pid(db_url: str) -> None:
    at = app({"PROLIFIC_PID": "<b>x</b>", "pid": "fine_id"})
    assert at.error and not at.button


def test_missing_id_is_minted_and_kept_in_the_url(db_url: str) -> None:
    at = app()
    pid = at.query_params["pid"]
    assert pid.startswith("anon-") and len(pid) == 25
    at.button(key="consent-agree").click().run()
    assert at.query_params["pid"] == pid
    store = Store(db_url)
    progress = store.progress()
    assert progress["participant_id"].tolist() == [pid]
    assert progress["id_source"].tolist() == ["minted"]
    store.dispose()
    assert no_html(at)


def test_declining_consent_stores_nothing(db_url: str) -> None:
    at = app({"pid": "declines"})
    at.button(key="consent-decline").click().run()
    assert at.info and "declined" in at.info[0].value
    assert n_responses(db_url) == 0
    store = Store(db_url)
    assert store.get_plan("declines") is None
    store.dispose()


def test_admin_refuses_without_the_secret(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    # participants exist, so the page would have something to leak
    at = app({"pid": "someone"})
    at.button(key="consent-agree").click().run()
    choice_buttons(at)["left"].click().run()

    no_secret = app({"page": "admin"})
    assert no_secret.error and "disabled" in no_secret.error[0].value
    assert not no_secret.text_input and not no_secret.dataframe and not no_secret.get("download_button")

    for weak in ("short", "a long random string", "x1y2z3w4v5u6t7s8r9q0p1o2"[:20], "abababababababababababababab"):
        refused = app({"page": "admin"}, {"admin_secret": weak})
        assert refused.error and "disabled" in refused.error[0].value and not refused.text_input
        assert not refused.dataframe

    wrong = app({"page": "admin"}, {"admin_secret": ADMIN_SECRET})
    assert not wrong.dataframe
    with caplog.at_level("WARNING", logger="retrievegan.study"):
        wrong.text_input(key="admin-secret").input("correct-horse-battery-stapler").run()
    assert wrong.error and "Wrong" in wrong.error[0].value
    assert not wrong.dataframe and not wrong.get("download_button")
    assert "someone" not in page_text(wrong)
    assert any("failed admin login: attempt 1" in r.getMessage() for r in caplog.records)
    assert not any("correct-horse" in r.getMessage() for r in caplog.records)  # the attempt is not logged
    # back-off: right after a failure even the right secret waits (1 s, then 2 s, 4 s, ...)
    wrong.text_input(key="admin-secret").input(ADMIN_SECRET).run()
    assert not wrong.dataframe and wrong.warning and "next one is accepted in" in wrong.warning[0].value
    time.sleep(1.1)
    wrong.text_input(key="admin-secret").input("still-not-it-still-not-it").run()
    assert not wrong.dataframe and wrong.warning and "accepted in 2 s" in wrong.warning[0].value
    time.sleep(2.1)
    wrong.text_input(key="admin-secret").input(ADMIN_SECRET).run()
    assert wrong.dataframe and "someone" in page_text(wrong)

    right = app({"page": "admin"}, {"admin_secret": ADMIN_SECRET})
    right.text_input(key="admin-secret").input(ADMIN_SECRET).run()
    assert not right.error
    assert right.dataframe and "someone" in page_text(right)
    assert [m.value for m in right.metric] == ["1", "0", "1"]
    assert right.get("download_button")[0].label == "Download raw responses (CSV)"


def test_setup_error_is_a_generic_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RETRIEVEGAN_STUDY_DIR", str(tmp_path / "missing"))
    monkeypatch.setenv("RETRIEVEGAN_STUDY_DB_URL", f"sqlite:///{tmp_path / 'x.sqlite'}")
    at = app({"pid": "p1"})
    assert not at.exception
    assert at.error and "not available at the moment" in at.error[0].value
    assert str(tmp_path) not in page_text(at) and "study bundle not found" not in page_text(at)
    assert not at.button


def test_missing_database_is_never_created_by_the_app(
    bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETRIEVEGAN_STUDY_DIR", str(bundle_dir))
    monkeypatch.setenv("RETRIEVEGAN_STUDY_DB_URL", f"sqlite:///{tmp_path / 'new' / 'x.sqlite'}")
    at = app({"pid": "p1"})
    assert not at.exception and at.error and "not available" in at.error[0].value
    assert not (tmp_path / "new").exists() and str(tmp_path) not in page_text(at)


def test_unexpected_error_is_a_generic_page_with_a_reference(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import retrievegan.study.ui as ui

    def boom(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise KeyError("/srv/secret/server/path.py line 42")

    monkeypatch.setattr(ui, "make_plan", boom)
    at = app({"pid": "p_boom"})
    at.button(key="consent-agree").click().run()
    assert not at.exception
    text = page_text(at)
    assert at.error and "not available at the moment" in at.error[0].value and "reference" in at.error[0].value
    assert "/srv/secret" not in text and "Traceback" not in text and "KeyError" not in text


def test_click_too_soon_after_a_trial_appears_is_ignored(
    bundle_dir: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the second click of a double click landing on the next trial's button comes milliseconds after it appears
    slow = tiny_study(
        bundle_dir.parent, study_config(trials_per_pair=2, catch_trials=2, min_response_ms=60_000), name="study-slow"
    )
    monkeypatch.setenv("RETRIEVEGAN_STUDY_DIR", str(slow))
    at = app({"pid": "too_fast"})
    at.button(key="consent-agree").click().run()
    choice_buttons(at)["left"].click().run()
    assert n_responses(db_url) == 0
    assert progress_text(at) == "Trial 1 of 8"
    assert at.warning and "too quickly" in at.warning[0].value
    at.run()  # the warning goes away on the next run
    assert not at.warning


def test_database_without_driver_is_a_setup_error(
    bundle_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RETRIEVEGAN_STUDY_DIR", str(bundle_dir))
    monkeypatch.setenv("RETRIEVEGAN_STUDY_DB_URL", "postgresql+nosuchdriver://study:hunter2hunter2@127.0.0.1:1/x")
    at = app({"pid": "p1"})
    assert not at.exception and at.error and "not available" in at.error[0].value
    assert "hunter2hunter2" not in page_text(at) and not at.button


def test_settings_precedence(tmp_path: Path) -> None:
    from retrievegan.errors import ConfigError
    from retrievegan.study.server import resolve

    app_dir = APP.parent
    bundles: list[Path] = []

    def bundle_for(path: Path):  # noqa: ANN202
        bundles.append(path)
        return type("B", (), {"database_url": None, "dataset": "tiny"})()

    env = {"RETRIEVEGAN_STUDY_DIR": "/env/study", "RETRIEVEGAN_STUDY_DB_URL": "sqlite:////env.sqlite"}
    ours = resolve(
        app_dir, bundle_for, "/arg/study", None, "sqlite:////arg.sqlite", env, {"database_url": "sqlite:////s"}
    )
    assert (str(ours.study_dir), ours.database_url) == ("/arg/study", "sqlite:////arg.sqlite")
    assert ours.consent_path == APP.parent / "consent.md"
    assert resolve(app_dir, bundle_for, None, None, None, env, {}).database_url == "sqlite:////env.sqlite"
    assert (
        resolve(app_dir, bundle_for, None, None, None, {}, {"database_url": "sqlite:////s.sqlite"}).database_url
        == "sqlite:////s.sqlite"
    )
    # default: userstudy/data/ of the app, absolute whatever the working directory
    default = resolve(app_dir, bundle_for, str(tmp_path), None, None, {}, {}, cwd=Path("/"))
    assert default.database_url == f"sqlite:///{APP.parent / 'data' / 'responses-tiny.sqlite'}"
    assert default.database_source == "default" and bundles == [tmp_path]
    # a relative SQLite path is made absolute against the starting directory
    rel = resolve(app_dir, bundle_for, None, None, "sqlite:///rel/db.sqlite", {}, {}, cwd=tmp_path)
    assert rel.database_url == f"sqlite:///{tmp_path / 'rel' / 'db.sqlite'}"
    with pytest.raises(ConfigError, match="--db-url: the database URL contains a password"):
        resolve(app_dir, bundle_for, None, None, "postgresql://u:pw@h/db", {}, {})


def test_stale_tab_click_says_so(db_url: str) -> None:
    first = app({"pid": "two_tabs"})
    first.button(key="consent-agree").click().run()
    second = app({"pid": "two_tabs", "s": first.query_params["s"]})
    choice_buttons(first)["left"].click().run()
    choice_buttons(second)["right"].click().run()  # this tab still shows the trial answered in the first
    assert second.info and "already answered in another tab" in second.info[0].value
    assert progress_text(second) == "Trial 2 of 8" and n_responses(db_url) == 1
    # a double click in one tab stays silent
    trial_key = choice_buttons(first)["left"].key
    choice_buttons(first)["left"].click().run()
    assert not first.info and n_responses(db_url) == 2 and choice_buttons(first)["left"].key != trial_key


def test_first_display_time_survives_a_reload(db_url: str) -> None:
    at = app({"pid": "slow_reader"})
    at.button(key="consent-agree").click().run()
    time.sleep(0.3)
    reloaded = app({"pid": "slow_reader"})  # the trial appears again: its first display time stays
    choice_buttons(reloaded)["left"].click().run()
    rows = Store(db_url).export_responses()
    first_shown = pd.Timestamp(rows["first_shown_at"].iloc[0])
    answered = pd.Timestamp(rows["created_at"].iloc[0])
    assert (answered - first_shown).total_seconds() >= 0.3
    assert rows["response_time_ms"].iloc[0] < 300  # measured in the reloaded page, from its display


LINK_SECRET = "Lk8-2vQx_9mTzR4pWc7NbY3sHd6FgJ1aE5uK"


def serve_with_access(bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **access: bool) -> None:
    """Serve a copy of the bundle with other ``access`` settings (they are not part of the study id)."""
    import json
    import shutil

    study = tmp_path / "access-study"
    shutil.copytree(bundle_dir, study)
    data = json.loads((study / "trials.json").read_text())
    data["access"] = {"signed_links": False, "prolific_only": False, **access}
    (study / "trials.json").write_text(json.dumps(data))
    monkeypatch.setenv("RETRIEVEGAN_STUDY_DIR", str(study))


def test_signed_links_only(db_url: str, bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from retrievegan.study.access import sign_participant

    serve_with_access(bundle_dir, tmp_path, monkeypatch, signed_links=True)
    secrets = {"link_secret": LINK_SECRET}
    assert app({}, secrets).error  # no minted ids
    assert app({"pid": "alice_01"}, secrets).error  # unsigned
    assert app({"pid": "alice_01", "sig": sign_participant(LINK_SECRET, "bob_02")}, secrets).error
    ok = app({"pid": "alice_01", "sig": sign_participant(LINK_SECRET, "alice_01")}, secrets)
    assert not ok.error and ok.button(key="consent-agree")


def test_prolific_ids_only(db_url: str, bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serve_with_access(bundle_dir, tmp_path, monkeypatch, prolific_only=True)
    assert app().error and "pid" not in app().query_params
    assert app({"pid": "5f0c0ffee0ddba11deadbeef"}).error
    assert app({"PROLIFIC_PID": "not_a_prolific_id"}).error
    assert not app({"PROLIFIC_PID": "5f0c0ffee0ddba11deadbeef"}).error
