"""The Streamlit pages of the user study; ``userstudy/app.py`` calls :func:`main`.

Start it with ``retrievegan study-serve`` (``retrievegan.study.server``), which checks the bundle, the
consent text, the secrets and the database before anything is served, and runs Streamlit in
``userstudy/`` so that the app's own ``.streamlit/config.toml`` applies (no error details in browsers).
Here, too, one top-level handler turns any failure into a generic page with a reference number; the
details (paths, traceback) go only to the server log.

Participant page (default): participant id from the link (``PROLIFIC_PID``, else ``pid``; 1..64 of
``[A-Za-z0-9_-]``, anything else is refused without being echoed; with ``access.prolific_only`` only
Prolific ids, with ``access.signed_links`` only ids with a valid ``sig``) or minted and put into the
URL; consent (versioned text); then one trial at a time: the question, the scene graph as text, both
patch sets side by side (also on a phone) with alt text listing their objects, one click or the left
/ right arrow key chooses. Each trial opens at its top with the keyboard focus on the question. All
progress lives in the database: a reload or a second tab continues at the first planned trial without
a stored answer; an answer to a trial that already has one is ignored (the first stands) and a click
from a stale second tab says so. The completion code appears once every planned trial is stored, and
only in a browser that answered (``access`` browser token in the URL).

Admin page (``?page=admin``): needs ``admin_secret`` (24+ characters, not a placeholder) in the secrets
file; wrong attempts back off exponentially per session and are logged. Progress per participant and
the raw responses as CSV.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import streamlit as st

from retrievegan.errors import ConfigError, InputError
from retrievegan.study import APP_VERSION, access, dburl
from retrievegan.study.consent import Consent, load_consent
from retrievegan.study.plan import Plan, make_plan, mint_participant_id, validate_participant_id
from retrievegan.study.pool import Bundle, load_bundle
from retrievegan.study.render import escape_markdown, graph_markdown, patch_grid, patch_set_alt
from retrievegan.study.server import Settings, resolve
from retrievegan.study.store import Store, StoreError

TITLE = "Patch compatibility study"
LOG = logging.getLogger("retrievegan.study")
PAIR_WIDTH_PX = 480  # both sets: ~236 px each on a desktop (tiles >= 96 px), half the screen each on a phone
# A fixed style sheet (no participant data in it): less empty space above the trial and a smaller question
# on a phone, so that the question, both sets and both buttons fit one 390 x 844 screen.
STYLE = """<style>
[data-testid="stMainBlockContainer"] { padding-top: 3.5rem; padding-bottom: 2rem; }
h3#trial-question { font-size: 1.2rem; line-height: 1.35; padding-top: 0.25rem; padding-bottom: 0.25rem; }
h3#trial-question:focus { outline: none; }
</style>"""
UNAVAILABLE = (
    "The study is not available at the moment. Please try again later; if this persists, contact the "
    "researchers and quote reference {ref}."
)

# Runs in the participant's page (Streamlit components v2, no iframe): once a new trial is rendered, scroll
# to its top and put the keyboard focus on the question, so a screen reader reads it and arrow keys answer.
_FOCUS_JS = """
export default function (component) {
  const trial = component.data && component.data.trial;
  const progress = component.data && component.data.progress;
  if (!trial || window.__retrieveganTrial === trial) return;
  window.__retrieveganTrial = trial;
  let tries = 0;
  const settle = () => {
    const heading = document.getElementById("trial-question");
    const bar = document.querySelector('[data-testid="stProgress"]');
    const ready = heading && bar && bar.innerText.includes(progress)
      && document.querySelectorAll('[data-stale="true"]').length === 0;
    if (!ready) { if (tries++ < 100) setTimeout(settle, 30); return; }
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
    const scrollers = [document.scrollingElement, document.querySelector('[data-testid="stMain"]'),
                       document.querySelector('[data-testid="stAppViewContainer"]')];
    for (const el of scrollers) { if (el) el.scrollTop = 0; }
    window.scrollTo(0, 0);
  };
  settle();
}
"""


@st.cache_resource(show_spinner=False)
def _focus_component() -> Any:
    return st.components.v2.component("retrievegan_trial_focus", js=_FOCUS_JS)


@st.cache_resource(show_spinner=False)
def _logging() -> logging.Logger:
    """The study's log lines (no secrets, no participant answers) on the server's stderr, once per process."""
    if not LOG.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)
        LOG.propagate = False
    return LOG


def _secrets() -> Mapping[str, Any]:
    """st.secrets as a plain mapping ({} when there is no secrets file)."""
    try:
        return {k: st.secrets[k] for k in st.secrets}
    except (FileNotFoundError, KeyError):
        return {}


@st.cache_resource(show_spinner=False)
def _store(url: str) -> Store:
    return Store(url)  # opens an existing database only: `retrievegan study-serve --init` creates it


def _file_key(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (0, 0)
    return (stat.st_mtime_ns, stat.st_size)


@st.cache_resource(show_spinner=False)
def _bundle(study_dir: str, key: tuple[tuple[int, int], tuple[int, int]]) -> Bundle:  # key: a rebuilt bundle reloads
    return load_bundle(study_dir)


def _load_bundle(study_dir: Path) -> Bundle:
    return _bundle(str(study_dir), (_file_key(study_dir / "trials.json"), _file_key(study_dir / "patches.npy")))


def _unavailable(ref: str) -> None:
    st.error(UNAVAILABLE.format(ref=ref))


def _failure() -> str:
    """Log the exception being handled under a fresh reference number and return the number."""
    ref = secrets.token_hex(4)
    _logging().exception("unexpected error, reference %s", ref)
    return ref


def _guarded(callback: Callable[..., None]) -> Callable[..., None]:
    """A widget callback whose failure is logged and shown as the generic page (callbacks run before the
    script, outside :func:`main`'s handler)."""

    @functools.wraps(callback)
    def run(*args: Any) -> None:
        try:
            callback(*args)
        except Exception:  # noqa: BLE001 - the callbacks' share of the one top-level handler
            st.session_state["failure_ref"] = _failure()

    return run


def main(app_file: str | Path) -> None:
    """The whole app; nothing it raises reaches the browser (Streamlit's rerun / stop signals pass through)."""
    st.set_page_config(page_title=TITLE, layout="centered")
    st.html(STYLE)
    failed = st.session_state.pop("failure_ref", None)
    if failed is not None:  # a callback failed before this run
        _unavailable(failed)
        return
    try:
        _app(app_file)
    except Exception:  # noqa: BLE001 - the one top-level handler: details to the log, a reference to the page
        _unavailable(_failure())


def _app(app_file: str | Path) -> None:
    app_dir = Path(app_file).resolve().parent
    secret_values = _secrets()
    try:
        settings: Settings = resolve(app_dir, _load_bundle, None, None, None, os.environ, secret_values)
        bundle = _load_bundle(settings.study_dir)
        consent = load_consent(settings.consent_path)
        store = _store(settings.database_url)
    except (InputError, ConfigError, sa.exc.SQLAlchemyError) as exc:
        ref = secrets.token_hex(4)
        message = str(exc) if not isinstance(exc, sa.exc.SQLAlchemyError) else type(exc).__name__
        _logging().error("the study cannot start (reference %s): %s", ref, message)  # URLs in it are masked
        _unavailable(ref)
        return
    if st.query_params.get("page") == "admin":
        admin_page(store, bundle, secret_values)
    else:
        participant_page(store, bundle, consent, secret_values)


# --- participant page ----------------------------------------------------------------------------


def _participant(bundle: Bundle, secret_values: Mapping[str, Any]) -> tuple[str, str] | None:
    """(participant id, id source) from the query string, minted if absent and allowed; None if refused."""
    params = st.query_params
    for key, source in (("PROLIFIC_PID", "prolific"), ("pid", "pid")):
        if key not in params:
            continue
        pid = validate_participant_id(params.get(key))
        if pid is None:
            return None
        if bundle.prolific_only and (key != "PROLIFIC_PID" or not access.is_prolific_id(pid)):
            return None
        if bundle.signed_links:
            link_secret = secret_values.get("link_secret")
            if not isinstance(link_secret, str) or not access.signature_ok(link_secret, pid, params.get("sig")):
                return None
        return pid, "minted" if pid == st.session_state.get("minted_pid") else source
    if bundle.prolific_only or bundle.signed_links:
        return None  # only the links the researchers hand out
    pid = mint_participant_id()
    st.session_state["minted_pid"] = pid
    st.query_params["pid"] = pid  # a reload of this URL continues as the same participant
    return pid, "minted"


def _browser_token() -> str:
    """This browser's token (kept in the URL as ``s``, so a reload keeps it); minted on the first visit."""
    token = access.valid_browser_token(st.query_params.get("s"))
    if token is None:
        token = st.session_state.get("browser_token") or access.mint_browser_token()
        st.session_state["browser_token"] = token
        st.query_params["s"] = token
    return token


@_guarded
def _on_consent(store: Store, bundle: Bundle, pid: str, source: str, consent_version: str) -> None:
    store.record_consent(pid, consent_version)
    store.save_plan(make_plan(bundle, pid), source, APP_VERSION)  # the plan is stored before trial 1


@_guarded
def _on_choose(
    store: Store,
    plan: Plan,
    trial_id: str,
    side: str,
    shown_key: str,
    consent_version: str,
    min_response_ms: int,
    browser: str,
) -> None:
    shown = st.session_state.get(shown_key)
    elapsed_ms = int((time.monotonic() - shown) * 1000) if isinstance(shown, float) else 0
    if elapsed_ms < min_response_ms:
        # The second click of a double click that landed on the next trial's button (or a click on a
        # button the page had not shown yet): not an answer to this trial.
        st.session_state["too_fast"] = trial_id
        return
    mine: set[str] = st.session_state.setdefault("answered_here", set())
    try:
        stored = store.record_response(plan, trial_id, side, elapsed_ms, APP_VERSION, consent_version, browser)
    except StoreError:
        return  # a stale click for a trial not in this plan: nothing to store
    if stored:
        mine.add(trial_id)
    elif trial_id not in mine:
        st.session_state["stale"] = trial_id  # answered meanwhile in another tab or window


def _on_decline() -> None:
    st.session_state["declined"] = True


def _refused() -> None:
    st.title(TITLE)
    st.error(
        "The link you opened is not valid for this study. Please open the study through the link you "
        "were given, or contact the researchers."
    )


def participant_page(store: Store, bundle: Bundle, consent: Consent, secret_values: Mapping[str, Any]) -> None:
    who = _participant(bundle, secret_values)
    if who is None:
        _refused()
        return
    pid, source = who
    browser = access.token_hash(_browser_token())
    if not store.has_consent(pid, consent.version):
        if st.session_state.get("declined"):
            st.title(TITLE)
            st.info("You declined to take part. Nothing about you was stored; you can close this tab.")
            return
        if not consent.text.lstrip().startswith("#"):
            st.title(TITLE)  # the consent text brings its own heading otherwise
        st.markdown(consent.text)
        yes, no = st.columns(2)
        yes.button(
            "I agree and want to take part",
            key="consent-agree",
            type="primary",
            width="stretch",
            on_click=_on_consent,
            args=(store, bundle, pid, source, consent.version),
        )
        no.button("I do not agree", key="consent-decline", width="stretch", on_click=_on_decline)
        return
    plan = store.get_plan(pid) or store.save_plan(make_plan(bundle, pid), source, APP_VERSION)
    if plan.study_id != bundle.study_id:
        st.title(TITLE)
        st.error("Your link belongs to an earlier version of this study. Please contact the researchers.")
        return
    answered = store.answered(pid)
    remaining = [(i, t) for i, t in enumerate(plan.trials) if t.trial_id not in answered]
    if not remaining:
        _finished(store, plan, browser, secret_values)
        return

    _, trial = remaining[0]
    done = len(plan.trials) - len(remaining)
    progress_text = f"Trial {done + 1} of {len(plan.trials)}"
    st.progress(done / len(plan.trials), text=progress_text)
    stale = st.session_state.pop("stale", None)
    if stale is not None:
        st.info(
            "Your last click was not counted: that trial was already answered in another tab. Here is the next trial."
        )
    if st.session_state.pop("too_fast", None) == trial.trial_id:
        st.warning("That click came too quickly to count. Please look at both sets, then choose.")
    st.subheader(escape_markdown(bundle.question), anchor="trial-question")
    objects, relations = bundle.graphs[trial.image_id]
    st.caption(graph_markdown(objects, relations))
    shown_key = f"shown:{pid}:{trial.trial_id}"
    if shown_key not in st.session_state:
        st.session_state[shown_key] = time.monotonic()
        store.record_display(pid, trial.trial_id)  # the first display time survives reloads
    columns = st.columns(2, gap="small", wrap=False, width=PAIR_WIDTH_PX)  # side by side on a phone too
    for column, side, patches, key in (
        (columns[0], "left", trial.left_patches, "Left"),
        (columns[1], "right", trial.right_patches, "Right"),
    ):
        with column:
            st.image(
                patch_grid(bundle.patch_images(patches), labels=objects),
                caption=f"{side.capitalize()} set",
                width="stretch",
                alt=patch_set_alt(f"{side.capitalize()} set", objects),
            )
            st.button(
                f"{side.capitalize()} set",
                key=f"choose:{trial.trial_id}:{side}",
                type="primary",
                width="stretch",
                shortcut=key,
                help=f"The {side} set is more compatible (key: {key} arrow)",
                on_click=_on_choose,
                args=(store, plan, trial.trial_id, side, shown_key, consent.version, bundle.min_response_ms, browser),
            )
    st.caption(f"Choose with a click or the ← / → arrow key. Participant id: {escape_markdown(pid)}")
    _focus_component()(
        key="trial-focus", data={"trial": trial.trial_id, "progress": progress_text}, height=0, width="stretch"
    )


def _finished(store: Store, plan: Plan, browser: str, secret_values: Mapping[str, Any]) -> None:
    st.title(TITLE)
    st.progress(1.0, text=f"All {len(plan.trials)} answers are stored")
    st.success("Thank you! You have finished the study.")
    if not store.answered_in_browser(plan.participant_id, browser):
        # someone who only knows the participant id, or the participant in another browser
        st.info(
            "The completion code is shown in the browser window where the answers were given. If you lost "
            "it, contact the researchers and quote your participant id."
        )
        return
    code = store.complete(plan)
    if code is None:  # pragma: no cover - remaining is empty only when every trial is stored
        st.error("Some answers are missing; please reload the page.")
        return
    st.markdown("Your completion code:")
    fixed = secret_values.get("completion_code")
    st.code(fixed if isinstance(fixed, str) and fixed else code, language=None)


# --- admin page ----------------------------------------------------------------------------------


@_guarded
def _on_admin_secret(secret: str) -> None:
    """Check the entered secret once per entry; wrong ones back off exponentially and are logged."""
    entered = st.session_state.get("admin-secret") or ""
    st.session_state["admin-secret"] = ""  # the secret does not stay in the widget state
    if not entered:
        return
    now = time.monotonic()
    if now < st.session_state.get("admin_locked_until", 0.0):
        st.session_state["admin_message"] = "wait"
        return
    if hmac.compare_digest(entered.encode("utf-8"), secret.encode("utf-8")):
        st.session_state["admin_ok"] = True
        st.session_state["admin_message"] = None
        LOG.info("admin login (ip %s)", st.context.ip_address or "unknown")
        return
    failures = st.session_state.get("admin_failures", 0) + 1
    delay = access.backoff_seconds(failures)
    st.session_state.update(admin_failures=failures, admin_locked_until=now + delay, admin_message="wrong")
    LOG.warning(
        "failed admin login: attempt %d of this session (ip %s); next attempt allowed in %.0f s",
        failures,
        st.context.ip_address or "unknown",
        delay,
    )


def admin_page(store: Store, bundle: Bundle, secret_values: Mapping[str, Any]) -> None:
    st.title("Study administration")
    secret = secret_values.get("admin_secret")
    problem = access.secret_problem(secret)
    if problem is not None:
        st.error(
            f"The admin page is disabled: {problem}. Set admin_secret (at least {access.MIN_ADMIN_SECRET} "
            "random characters) in userstudy/.streamlit/secrets.toml."
        )
        return
    assert isinstance(secret, str)
    if not st.session_state.get("admin_ok"):
        st.text_input("Admin secret", type="password", key="admin-secret", on_change=_on_admin_secret, args=(secret,))
        wait = st.session_state.get("admin_locked_until", 0.0) - time.monotonic()
        message = st.session_state.get("admin_message")
        if message == "wrong":
            st.error("Wrong admin secret.")
        if wait > 0 and message in ("wrong", "wait"):
            st.warning(f"Too many wrong attempts: the next one is accepted in {wait:.0f} s.")
        elif message is None:
            st.info("Enter the admin secret.")
        return
    progress = store.progress()
    finished = int(progress["completed_at"].notna().sum()) if len(progress) else 0
    a, b, c = st.columns(3)
    a.metric("Participants", len(progress))
    b.metric("Completed", finished)
    c.metric("Responses", store.count_responses())
    st.caption(
        f"Study bundle {bundle.study_id} ({bundle.dataset}, {bundle.setting}); app {APP_VERSION}; "
        f"database {escape_markdown(dburl.shown(store.url))}"
    )
    st.dataframe(progress, hide_index=True)
    responses = store.export_responses()
    st.download_button(
        "Download raw responses (CSV)",
        data=responses.to_csv(index=False).encode("utf-8"),
        file_name=f"responses_{bundle.study_id}.csv",
        mime="text/csv",
        key="export",
    )
