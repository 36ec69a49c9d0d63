"""The Streamlit pages of the user study; ``userstudy/app.py`` calls :func:`main`.

Participant page (default): participant id from the link (``PROLIFIC_PID``, else ``pid``; 1..64 of
``[A-Za-z0-9_-]``, anything else is refused without being echoed) or minted and put into the URL;
consent (versioned text); then one trial at a time: the scene graph as text, both patch sets as
images, one click chooses. All progress lives in the database: a reload or a second tab continues at
the first planned trial without a stored answer, and an answer to a trial that already has one is
ignored (the first stands). The completion code appears only once every planned trial is stored.

Admin page (``?page=admin``): needs ``admin_secret`` in ``.streamlit/secrets.toml`` (compared with
``hmac.compare_digest``): progress per participant and the raw responses as CSV.

Settings, first found wins: ``streamlit run userstudy/app.py -- --study-dir D --db-url U --consent F``;
environment ``RETRIEVEGAN_STUDY_DIR`` / ``RETRIEVEGAN_STUDY_DB_URL`` / ``RETRIEVEGAN_STUDY_CONSENT``;
secret ``database_url``; the bundle's ``database_url``; defaults below.
"""

from __future__ import annotations

import argparse
import dataclasses
import hmac
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import sqlalchemy as sa
import streamlit as st

from retrievegan.errors import ConfigError, InputError
from retrievegan.study import APP_VERSION
from retrievegan.study.consent import Consent, load_consent
from retrievegan.study.plan import Plan, make_plan, mint_participant_id, validate_participant_id
from retrievegan.study.pool import Bundle, load_bundle
from retrievegan.study.render import escape_markdown, graph_markdown, patch_grid
from retrievegan.study.store import Store, StoreError

DEFAULT_STUDY_DIR = "results/synth/userstudy/study"
MIN_ADMIN_SECRET = 12
TITLE = "Patch compatibility study"


@dataclasses.dataclass(frozen=True)
class AppSettings:
    study_dir: Path
    database_url: str | None  # None: the bundle's, else SQLite beside the bundle
    consent_path: Path


def _parse_argv(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="userstudy/app.py", allow_abbrev=False, add_help=False)
    parser.add_argument("--study-dir")
    parser.add_argument("--db-url")
    parser.add_argument("--consent")
    args, _ = parser.parse_known_args(list(argv))
    return args


def resolve_settings(app_file: str | Path, argv: Sequence[str], environ: Mapping[str, str],
                     secret_db_url: str | None) -> AppSettings:
    # Script arguments only when this script is what `streamlit run` started (not under pytest).
    ours = bool(argv) and Path(argv[0]).resolve() == Path(app_file).resolve()
    args = _parse_argv(argv[1:]) if ours else argparse.Namespace(study_dir=None, db_url=None, consent=None)
    study_dir = args.study_dir or environ.get("RETRIEVEGAN_STUDY_DIR") or DEFAULT_STUDY_DIR
    db_url = args.db_url or environ.get("RETRIEVEGAN_STUDY_DB_URL") or secret_db_url
    consent = args.consent or environ.get("RETRIEVEGAN_STUDY_CONSENT") or Path(app_file).parent / "consent.md"
    return AppSettings(Path(study_dir), db_url, Path(consent))


def _secret(name: str) -> str | None:
    """A string from st.secrets, or None when there is no secrets file or no such key."""
    try:
        value = st.secrets.get(name)
    except (FileNotFoundError, KeyError):
        return None
    return value if isinstance(value, str) and value else None


@st.cache_resource(show_spinner=False)
def _store(url: str) -> Store:
    return Store(url)


@st.cache_resource(show_spinner=False)
def _bundle(study_dir: str, mtime_ns: int) -> Bundle:  # mtime in the key: a rebuilt bundle is reloaded
    return load_bundle(study_dir)


def _setup_error(message: str) -> None:
    st.error("The study is not set up correctly; please tell the researchers.")
    st.text(message)  # plain text: operator-facing detail (paths), never interpreted


def main(app_file: str | Path) -> None:
    st.set_page_config(page_title=TITLE, layout="centered")
    settings = resolve_settings(app_file, sys.argv, os.environ, _secret("database_url"))
    trials = settings.study_dir / "trials.json"
    try:
        bundle = _bundle(str(settings.study_dir), trials.stat().st_mtime_ns if trials.exists() else 0)
        consent = load_consent(settings.consent_path)
    except InputError as exc:
        _setup_error(str(exc))
        return
    url = settings.database_url or bundle.database_url or f"sqlite:///{settings.study_dir.parent / 'responses.sqlite'}"
    try:
        store = _store(url)
    except ConfigError as exc:
        _setup_error(str(exc))  # the URL in it has its password masked
        return
    except sa.exc.SQLAlchemyError as exc:
        logging.getLogger(__name__).exception("cannot open the study database")
        _setup_error(f"database error ({type(exc).__name__}); see the server log")
        return
    if st.query_params.get("page") == "admin":
        admin_page(store, bundle)
    else:
        participant_page(store, bundle, consent)


# --- participant page ----------------------------------------------------------------------------

def _participant() -> tuple[str, str] | None:
    """(participant id, id source) from the query string, minted if absent; None if refused."""
    params = st.query_params
    for key, source in (("PROLIFIC_PID", "prolific"), ("pid", "pid")):
        if key in params:
            pid = validate_participant_id(params.get(key))
            if pid is None:
                return None
            return pid, "minted" if pid == st.session_state.get("minted_pid") else source
    pid = mint_participant_id()
    st.session_state["minted_pid"] = pid
    st.query_params["pid"] = pid  # a reload of this URL continues as the same participant
    return pid, "minted"


def _on_consent(store: Store, bundle: Bundle, pid: str, source: str, consent_version: str) -> None:
    store.record_consent(pid, consent_version)
    store.save_plan(make_plan(bundle, pid), source, APP_VERSION)  # the plan is stored before trial 1


def _on_choose(store: Store, plan: Plan, trial_id: str, side: str, shown_key: str, consent_version: str,
               min_response_ms: int) -> None:
    shown = st.session_state.get(shown_key)
    elapsed_ms = int((time.monotonic() - shown) * 1000) if isinstance(shown, float) else 0
    if elapsed_ms < min_response_ms:
        # The second click of a double click that landed on the next trial's button (or a click on a
        # button the page had not shown yet): not an answer to this trial.
        st.session_state["too_fast"] = trial_id
        return
    try:
        store.record_response(plan, trial_id, side, elapsed_ms, APP_VERSION, consent_version)
    except StoreError:
        pass  # a stale click for a trial not in this plan: nothing to store


def participant_page(store: Store, bundle: Bundle, consent: Consent) -> None:
    who = _participant()
    if who is None:
        st.title(TITLE)
        st.error("The participant id in your link is not valid. Please open the study through the link "
                 "you were given, or contact the researchers.")
        return
    pid, source = who
    if not store.has_consent(pid, consent.version):
        st.title(TITLE)
        if st.session_state.get("declined"):
            st.info("You declined to take part. Nothing about you was stored; you can close this tab.")
            return
        st.markdown(consent.text)
        yes, no = st.columns(2)
        yes.button("I agree and want to take part", key="consent-agree", type="primary",
                   on_click=_on_consent, args=(store, bundle, pid, source, consent.version))
        no.button("I do not agree", key="consent-decline",
                  on_click=lambda: st.session_state.__setitem__("declined", True))
        return
    plan = store.get_plan(pid) or store.save_plan(make_plan(bundle, pid), source, APP_VERSION)
    if plan.study_id != bundle.study_id:
        st.title(TITLE)
        st.error("Your link belongs to an earlier version of this study. Please contact the researchers.")
        return
    answered = store.answered(pid)
    remaining = [(i, t) for i, t in enumerate(plan.trials) if t.trial_id not in answered]
    if not remaining:
        code = store.complete(plan)
        if code is None:  # pragma: no cover - remaining is empty only when every trial is stored
            st.error("Some answers are missing; please reload the page.")
            return
        st.title(TITLE)
        st.progress(1.0, text=f"All {len(plan.trials)} answers are stored")
        st.success("Thank you! You have finished the study.")
        st.markdown("Your completion code:")
        st.code(_secret("completion_code") or code, language=None)
        return

    _, trial = remaining[0]
    done = len(plan.trials) - len(remaining)
    st.progress(done / len(plan.trials), text=f"Trial {done + 1} of {len(plan.trials)}")
    st.subheader(escape_markdown(bundle.question))
    objects, relations = bundle.graphs[trial.image_id]
    st.markdown(graph_markdown(objects, relations))
    shown_key = f"shown:{pid}:{trial.trial_id}"
    if shown_key not in st.session_state:
        st.session_state[shown_key] = time.monotonic()
    if st.session_state.pop("too_fast", None) == trial.trial_id:
        st.warning("That click came too quickly to count. Please look at both sets, then choose.")
    columns = st.columns(2, gap="large")
    for column, side, patches in ((columns[0], "left", trial.left_patches), (columns[1], "right", trial.right_patches)):
        with column:
            st.image(patch_grid(bundle.patch_images(patches), labels=objects), caption=f"{side.capitalize()} set",
                     width="stretch")
            st.button(f"The {side} set is more compatible", key=f"choose:{trial.trial_id}:{side}", type="primary",
                      width="stretch", on_click=_on_choose,
                      args=(store, plan, trial.trial_id, side, shown_key, consent.version, bundle.min_response_ms))
    st.caption(f"Participant id: {escape_markdown(pid)}")


# --- admin page ----------------------------------------------------------------------------------

def admin_page(store: Store, bundle: Bundle) -> None:
    st.title("Study administration")
    secret = _secret("admin_secret")
    if secret is None or len(secret) < MIN_ADMIN_SECRET:
        st.error(f"The admin page is disabled: set admin_secret (at least {MIN_ADMIN_SECRET} characters) "
                 "in .streamlit/secrets.toml.")
        return
    entered = st.text_input("Admin secret", type="password", key="admin-secret")
    if not entered:
        st.info("Enter the admin secret.")
        return
    if not hmac.compare_digest(entered.encode("utf-8"), secret.encode("utf-8")):
        st.error("Wrong admin secret.")
        return
    progress = store.progress()
    finished = int(progress["completed_at"].notna().sum()) if len(progress) else 0
    a, b, c = st.columns(3)
    a.metric("Participants", len(progress))
    b.metric("Completed", finished)
    c.metric("Responses", store.count_responses())
    st.caption(f"Study bundle {bundle.study_id} ({bundle.dataset}, {bundle.setting}); app {APP_VERSION}")
    st.dataframe(progress, hide_index=True)
    responses = store.export_responses()
    st.download_button("Download raw responses (CSV)", data=responses.to_csv(index=False).encode("utf-8"),
                       file_name=f"responses_{bundle.study_id}.csv", mime="text/csv", key="export")
