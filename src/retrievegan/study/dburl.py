"""Where the study's responses go: database URLs without secrets in files or on command lines.

* The default is SQLite at ``<repo>/userstudy/data/responses-<dataset>.sqlite``: outside ``results/`` (which
  ``make clean-results`` and DVC manage), git- and DVC-ignored, as an absolute path, so a server started
  from another folder opens the same file.
* A relative SQLite path is resolved once, against the directory the command starts in, and that
  absolute path is what the app uses and prints.
* A URL with a password never goes into the config, the bundle, run.json, argv or a log: it is refused
  where it would (:func:`refuse_password`); give it in the environment (``RETRIEVEGAN_STUDY_DB_URL``) or
  in the Streamlit secrets file (``database_url``), or leave the password out of the URL and let the
  driver find it (PostgreSQL: ``PGPASSWORD`` or ``~/.pgpass``).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from retrievegan.errors import ConfigError

ENV_DB_URL = "RETRIEVEGAN_STUDY_DB_URL"
PASSWORD_HELP = (
    f"put the full URL in the environment variable {ENV_DB_URL} or as database_url in "
    "userstudy/.streamlit/secrets.toml, or leave the password out of the URL and let the driver "
    "read it (PostgreSQL: PGPASSWORD or ~/.pgpass)"
)


def parse(url: str, source: str) -> sa.engine.URL:
    """The SQLAlchemy URL of ``url``; a malformed one is a ConfigError naming ``source`` (never the URL)."""
    try:
        return sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise ConfigError(
            f"{source}: not a database URL (expected e.g. sqlite:////abs/path.sqlite or "
            "postgresql+psycopg://user@host/db)"
        ) from exc


def has_password(url: str) -> bool:
    return parse(url, "database URL").password is not None


def refuse_password(url: str | None, source: str) -> None:
    """ConfigError if ``url`` (from ``source``: a config key, a command-line flag...) carries a password."""
    if url is not None and parse(url, source).password is not None:
        raise ConfigError(
            f"{source}: the database URL contains a password, which would be written into "
            f"command lines, logs, the study bundle and run.json; {PASSWORD_HELP}"
        )


def shown(url: str) -> str:
    """``url`` with its password masked: the only form that goes into messages and logs."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return "<malformed database URL>"


def default_url(userstudy_dir: str | Path, dataset: str) -> str:
    """``sqlite:///<userstudy_dir>/data/responses-<dataset>.sqlite`` with ``userstudy_dir`` made absolute."""
    name = f"responses-{dataset}.sqlite" if dataset else "responses.sqlite"
    return f"sqlite:///{Path(userstudy_dir).resolve() / 'data' / name}"


def absolute(url: str, cwd: str | Path | None = None) -> str:
    """``url`` with a relative SQLite file path resolved against ``cwd`` (default: the current directory)."""
    parsed = parse(url, "database URL")
    if (
        parsed.get_backend_name() != "sqlite"
        or parsed.database in (None, "", ":memory:")
        or parsed.database.startswith("file:")
    ):
        return url
    path = Path(parsed.database)
    if path.is_absolute():
        return url
    return parsed.set(database=str((Path(cwd) if cwd is not None else Path.cwd()).resolve() / path)).render_as_string(
        hide_password=False
    )


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other databases and in-memory SQLite)."""
    parsed = parse(url, "database URL")
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)
