"""Streamlit AppTest tests of the user-study app (userstudy/app.py) on a tiny fixture bundle."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from retrievegan.study.store import Store
from userstudy_support import shared_root, study_config, tiny_study

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

APP = Path(__file__).resolve().parents[1] / "userstudy" / "app.py"
ADMIN_SECRET = "correct-horse-battery-staple"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_study(shared_root(tmp_path_factory), study_config(trials_per_pair=2, catch_trials=2))


@pytest.fixture
def db_url(tmp_path: Path, bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'study.sqlite'}"
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
    markdown = [n for n in walk(at._tree) if getattr(n, "type", None) == "markdown"]
    return all(not n.proto.allow_html for n in markdown) and len(at.get("html")) == 0


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
    # a reload after completion shows the same code and writes nothing
    again = app({"PROLIFIC_PID": "5f0c0ffee0ddba11deadbeef"})
    assert again.code[0].value == code and store.count_responses() == n
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


@pytest.mark.parametrize(("key", "raw"), [("pid", raw) for raw in BAD_IDS]
                         + [("PROLIFIC_PID", raw) for raw in BAD_IDS[:5] + BAD_IDS[6:8]])
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


def test_admin_refuses_without_the_secret(db_url: str) -> None:
    # participants exist, so the page would have something to leak
    at = app({"pid": "someone"})
    at.button(key="consent-agree").click().run()
    choice_buttons(at)["left"].click().run()

    no_secret = app({"page": "admin"})
    assert no_secret.error and "disabled" in no_secret.error[0].value
    assert not no_secret.text_input and not no_secret.dataframe and not no_secret.get("download_button")

    short = app({"page": "admin"}, {"admin_secret": "short"})
    assert short.error and "disabled" in short.error[0].value and not short.dataframe

    wrong = app({"page": "admin"}, {"admin_secret": ADMIN_SECRET})
    assert not wrong.dataframe
    wrong.text_input(key="admin-secret").input("correct-horse-battery-stapler").run()
    assert wrong.error and "Wrong" in wrong.error[0].value
    assert not wrong.dataframe and not wrong.get("download_button")
    assert "someone" not in page_text(wrong)

    right = app({"page": "admin"}, {"admin_secret": ADMIN_SECRET})
    right.text_input(key="admin-secret").input(ADMIN_SECRET).run()
    assert not right.error
    assert right.dataframe and "someone" in page_text(right)
    assert [m.value for m in right.metric] == ["1", "0", "1"]
    assert right.get("download_button")[0].label == "Download raw responses (CSV)"


def test_setup_error_is_shown_as_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRIEVEGAN_STUDY_DIR", str(tmp_path / "missing"))
    monkeypatch.setenv("RETRIEVEGAN_STUDY_DB_URL", f"sqlite:///{tmp_path / 'x.sqlite'}")
    at = app({"pid": "p1"})
    assert not at.exception
    assert at.error and "not set up" in at.error[0].value
    assert "study bundle not found" in at.text[0].value


def test_click_too_soon_after_a_trial_appears_is_ignored(bundle_dir: Path, db_url: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # the second click of a double click landing on the next trial's button comes milliseconds after it appears
    slow = tiny_study(bundle_dir.parent, study_config(trials_per_pair=2, catch_trials=2, min_response_ms=60_000),
                      name="study-slow")
    monkeypatch.setenv("RETRIEVEGAN_STUDY_DIR", str(slow))
    at = app({"pid": "too_fast"})
    at.button(key="consent-agree").click().run()
    choice_buttons(at)["left"].click().run()
    assert n_responses(db_url) == 0
    assert progress_text(at) == "Trial 1 of 8"
    assert at.warning and "too quickly" in at.warning[0].value
    at.run()  # the warning goes away on the next run
    assert not at.warning


def test_database_without_driver_is_a_setup_error(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRIEVEGAN_STUDY_DIR", str(bundle_dir))
    monkeypatch.setenv("RETRIEVEGAN_STUDY_DB_URL", "postgresql+nosuchdriver://study:hunter2hunter2@127.0.0.1:1/x")
    at = app({"pid": "p1"})
    assert not at.exception and at.error and "not set up" in at.error[0].value
    assert "hunter2hunter2" not in page_text(at) and not at.button


def test_settings_precedence() -> None:
    from retrievegan.study.ui import resolve_settings

    env = {"RETRIEVEGAN_STUDY_DIR": "/env/study", "RETRIEVEGAN_STUDY_DB_URL": "sqlite:////env.sqlite"}
    ours = resolve_settings(APP, [str(APP), "--study-dir", "/arg/study", "--db-url", "sqlite:////arg.sqlite"], env, "s")
    assert (str(ours.study_dir), ours.database_url) == ("/arg/study", "sqlite:////arg.sqlite")
    assert ours.consent_path == APP.parent / "consent.md"
    # someone else's argv (pytest's, say) is never parsed, even with look-alike flags
    other = resolve_settings(APP, ["pytest", "--study-dir", "/x", "--co"], env, "sqlite:////secret.sqlite")
    assert (str(other.study_dir), other.database_url) == ("/env/study", "sqlite:////env.sqlite")
    assert resolve_settings(APP, [str(APP)], {}, "sqlite:////secret.sqlite").database_url == "sqlite:////secret.sqlite"
    assert resolve_settings(APP, [], {}, None).database_url is None
