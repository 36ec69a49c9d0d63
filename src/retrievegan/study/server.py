"""Starting the study app: settings, secrets and every check that must pass before a participant arrives.

``retrievegan study-serve`` calls :func:`prepare` and then runs ``streamlit run userstudy/app.py`` from the
``userstudy/`` folder, so that Streamlit reads the app's own ``userstudy/.streamlit/config.toml``
(``client.showErrorDetails = "none"``: no traceback ever reaches a browser) and the secrets file
``userstudy/.streamlit/secrets.toml``. A broken bundle, consent text, secret or database refuses the
start with a message naming the file and record; nothing is served.

Settings, first found wins (the app resolves them the same way, :func:`resolve`):

* study folder: ``--study-dir``, ``RETRIEVEGAN_STUDY_DIR``, ``results/synth/userstudy/study``;
* consent text: ``--consent``, ``RETRIEVEGAN_STUDY_CONSENT``, ``userstudy/consent.md``;
* database URL: ``--db-url`` (no password: it would be visible in the process list),
  ``RETRIEVEGAN_STUDY_DB_URL``, the secret ``database_url``, the bundle's ``database_url``
  (``userstudy.database_url``), else :func:`retrievegan.study.dburl.default_url`; a relative SQLite path
  is made absolute against the directory the command starts in.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from retrievegan import io
from retrievegan.errors import ConfigError, InputError
from retrievegan.study import access, dburl
from retrievegan.study.consent import Consent, load_consent
from retrievegan.study.pool import Bundle, load_bundle
from retrievegan.study.store import Store

ENV_STUDY_DIR = "RETRIEVEGAN_STUDY_DIR"
ENV_CONSENT = "RETRIEVEGAN_STUDY_CONSENT"
DEFAULT_STUDY_DIR = Path("results") / "synth" / "userstudy" / "study"  # relative to the repository root


@dataclasses.dataclass(frozen=True)
class Settings:
    study_dir: Path  # absolute
    consent_path: Path  # absolute
    database_url: str  # absolute SQLite path, may hold a password (never printed: use dburl.shown)
    database_source: str  # where the URL came from, for messages


def app_dir_of(app_file: str | Path) -> Path:
    return Path(app_file).resolve().parent


def read_secrets_files(app_dir: Path, home: Path | None = None) -> dict[str, Any]:
    """What ``st.secrets`` holds when Streamlit runs in ``app_dir``: ``~/.streamlit/secrets.toml`` overridden
    by ``app_dir/.streamlit/secrets.toml``. A malformed file is an InputError naming it (never its content)."""
    merged: dict[str, Any] = {}
    for path in ((home or Path.home()) / ".streamlit" / "secrets.toml", app_dir / ".streamlit" / "secrets.toml"):
        if not path.is_file():
            continue
        try:
            merged.update(tomllib.loads(path.read_text(encoding="utf-8")))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(path, f"not a valid TOML secrets file ({type(exc).__name__})") from exc
    return merged


def _text_secret(secrets: Mapping[str, Any], name: str) -> str | None:
    value = secrets.get(name)
    return value if isinstance(value, str) and value else None


def resolve(
    app_dir: Path,
    bundle_for: Any,
    study_dir: str | None,
    consent: str | None,
    db_url: str | None,
    environ: Mapping[str, str],
    secrets: Mapping[str, Any],
    cwd: Path | None = None,
) -> Settings:
    """The settings of one start; ``bundle_for(study_dir)`` loads the bundle (its database_url and dataset)."""
    cwd = cwd or Path.cwd()
    study = Path(study_dir or environ.get(ENV_STUDY_DIR) or app_dir.parent / DEFAULT_STUDY_DIR)
    consent_path = Path(consent or environ.get(ENV_CONSENT) or app_dir / "consent.md")
    dburl.refuse_password(db_url, "--db-url")
    url, source = db_url, "--db-url"
    if not url:
        url, source = environ.get(dburl.ENV_DB_URL), dburl.ENV_DB_URL
    if not url:
        url, source = _text_secret(secrets, "database_url"), "secret database_url"
    if not url:
        bundle: Bundle = bundle_for(study if study.is_absolute() else cwd / study)
        url, source = bundle.database_url, "userstudy.database_url in the bundle"
        if not url:
            url, source = dburl.default_url(app_dir, bundle.dataset), "default"
    return Settings(
        study if study.is_absolute() else (cwd / study).resolve(),
        consent_path if consent_path.is_absolute() else (cwd / consent_path).resolve(),
        dburl.absolute(url, cwd),
        source,
    )


@dataclasses.dataclass(frozen=True)
class Prepared:
    settings: Settings
    bundle: Bundle
    consent: Consent
    admin_enabled: bool
    summary: str  # what the operator sees at start (no secret in it)


def check_secrets(secrets: Mapping[str, Any], bundle: Bundle) -> bool:
    """ConfigError for an unusable admin or link secret; True when the admin page is on."""
    admin = secrets.get("admin_secret")
    if admin is not None:
        problem = access.secret_problem(admin)
        if problem:
            raise ConfigError(
                f"secrets file: {problem}; generate one with "
                'python -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
    if bundle.signed_links:
        problem = access.secret_problem(secrets.get("link_secret"), "link_secret", access.MIN_LINK_SECRET)
        if problem:
            raise ConfigError(f"userstudy.access.signed_links is on but {problem} (secrets file)")
    return admin is not None


def open_store(settings: Settings, create: bool) -> Store:
    """The study database; a missing or unreadable one is a ConfigError with the password masked."""
    try:
        return Store(settings.database_url, create=create)
    except sa.exc.SQLAlchemyError as exc:
        raise ConfigError(
            f"{dburl.shown(settings.database_url)} ({settings.database_source}): cannot open the "
            f"study database ({type(exc).__name__})"
        ) from exc


def prepare(
    app_file: str | Path,
    study_dir: str | None,
    consent: str | None,
    db_url: str | None,
    init: bool,
    environ: Mapping[str, str],
    secrets: Mapping[str, Any],
) -> Prepared:
    """Every check of a start: bundle (completely), consent, secrets, database (created only with ``init``)."""
    app_dir = app_dir_of(app_file)
    settings = resolve(app_dir, load_bundle, study_dir, consent, db_url, environ, secrets)
    bundle = load_bundle(settings.study_dir)
    consent_text = load_consent(settings.consent_path)
    admin = check_secrets(secrets, bundle)
    store = open_store(settings, init)
    try:
        responses, participants = store.count_responses(), len(store.progress())
    finally:
        store.dispose()
    path = dburl.sqlite_path(settings.database_url)
    where = f"SQLite file {path}" if path is not None else dburl.shown(settings.database_url)
    summary = (
        f"study {bundle.study_id} ({bundle.dataset or 'no dataset name'}, {bundle.setting}): "
        f"{sum(len(v) for v in bundle.pairs.values())} pair items, {len(bundle.catch)} catch items; "
        f"consent {consent_text.version}; database {where} ({settings.database_source}): "
        f"{participants} participants, {responses} responses; admin page "
        f"{'on' if admin else 'off (no admin_secret)'}; links: "
        f"{'signed' if bundle.signed_links else 'unsigned'}"
        f"{', Prolific ids only' if bundle.prolific_only else ''}"
    )
    return Prepared(settings, bundle, consent_text, admin, summary)


def streamlit_argv(app_file: str | Path, address: str, port: int) -> list[str]:
    """``streamlit run`` of the app; everything else comes from userstudy/.streamlit/config.toml."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(Path(app_file).resolve()),
        "--server.address",
        address,
        "--server.port",
        str(port),
    ]


def streamlit_environ(prepared: Prepared, environ: Mapping[str, str]) -> dict[str, str]:
    """The app's environment: resolved absolute settings (the database URL goes here, never into argv)."""
    env = dict(environ)
    env.update(
        {
            ENV_STUDY_DIR: str(prepared.settings.study_dir),
            ENV_CONSENT: str(prepared.settings.consent_path),
            dburl.ENV_DB_URL: prepared.settings.database_url,
        }
    )
    return env


def exec_streamlit(app_file: str | Path, prepared: Prepared, address: str, port: int) -> None:
    """Replace this process by the Streamlit server, started in the app's folder."""
    app_dir = app_dir_of(app_file)
    os.chdir(app_dir)
    argv = streamlit_argv(app_file, address, port)
    os.execve(argv[0], argv, streamlit_environ(prepared, os.environ))


def default_app_file() -> Path:
    """``userstudy/app.py`` of the checkout this package is installed from (an editable install)."""
    app = Path(__file__).resolve().parents[3] / "userstudy" / "app.py"
    if not app.is_file():
        raise ConfigError(f"{app}: no app script here (package not installed from a checkout); pass --app")
    return app


def signed_links(ids_file: Path, base_url: str, secrets: Mapping[str, Any]) -> Any:
    """DataFrame (participant_id, link): ``base_url?pid=<id>&sig=<HMAC>`` per line of ``ids_file``
    (``PROLIFIC_PID`` for 24-hex-digit Prolific ids)."""
    import urllib.parse

    import pandas as pd

    from retrievegan.study.plan import validate_participant_id

    link_secret = secrets.get("link_secret")
    problem = access.secret_problem(link_secret, "link_secret", access.MIN_LINK_SECRET)
    if problem:
        raise ConfigError(f"secrets file: {problem}")
    assert isinstance(link_secret, str)
    try:
        lines = ids_file.read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, UnicodeDecodeError) as exc:
        raise InputError(ids_file, f"cannot read the participant ids ({type(exc).__name__})") from exc
    rows = []
    for number, line in enumerate(lines, 1):
        raw = line.strip()
        if not raw:
            continue
        pid = validate_participant_id(raw)
        if pid is None:
            raise InputError(ids_file, "not a participant id (1-64 of A-Z a-z 0-9 _ -)", f"line {number}")
        key = "PROLIFIC_PID" if access.is_prolific_id(pid) else "pid"
        query = urllib.parse.urlencode({key: pid, "sig": access.sign_participant(link_secret, pid)})
        rows.append({"participant_id": pid, "link": f"{base_url.rstrip('?')}?{query}"})
    if not rows:
        raise InputError(ids_file, "no participant ids")
    return pd.DataFrame(rows)


def app_file_or_default(app: str | Path | None) -> Path:
    """``app`` (``--app``), else this checkout's ``userstudy/app.py``."""
    return Path(app) if app else default_app_file()


def serve(
    app: str | Path | None,
    study_dir: str | None,
    consent: str | None,
    db_url: str | None,
    init: bool,
    address: str,
    port: int,
    check_only: bool,
    say: Callable[[str], None],
) -> Prepared:
    """``retrievegan study-serve``: every start-up check (:func:`prepare`, with the app's secrets files), its summary
    told to ``say``; then, unless ``check_only``, this process becomes the Streamlit server."""
    app_file = app_file_or_default(app)
    secrets = read_secrets_files(app_dir_of(app_file))
    prepared = prepare(app_file, study_dir, consent, db_url, init, os.environ, secrets)
    say(prepared.summary)
    if not check_only:
        say(f"serving http://{address}:{port}/ (Streamlit in {app_dir_of(app_file)})")
        exec_streamlit(app_file, prepared, address, port)
    return prepared


def write_signed_links(ids_file: str | Path, base_url: str, app: str | Path | None, out: str | Path) -> Any:
    """:func:`signed_links` under the ``link_secret`` of the app's secrets files, written as CSV to ``out``."""
    app_file = app_file_or_default(app)
    links = signed_links(Path(ids_file), base_url, read_secrets_files(app_dir_of(app_file)))
    io.write_text(out, links.to_csv(index=False))
    return links
