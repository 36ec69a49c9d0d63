"""Exporting the stored responses of a study database as CSV (``retrievegan study-export``).

The database URL comes from ``--database-url`` (never with a password: it would be visible in the process list)
or the environment variable ``RETRIEVEGAN_STUDY_DB_URL`` (which may hold one); a relative SQLite path is made
absolute against the directory the command starts in. Messages show the URL with its password masked.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from retrievegan import io
from retrievegan.errors import ConfigError, InputError
from retrievegan.study import dburl
from retrievegan.study.store import DatabaseMissing, Store


def database_url(given: str | None, environ: Mapping[str, str]) -> str:
    """The absolute URL of the database to export: ``given`` (``--database-url``), else the environment's."""
    dburl.refuse_password(given, "--database-url")
    raw = given or environ.get(dburl.ENV_DB_URL)
    if not raw:
        raise ConfigError(f"no database: give --database-url or set {dburl.ENV_DB_URL}")
    return dburl.absolute(raw)


def read_responses(url: str) -> pd.DataFrame:
    """Every stored response of the existing database ``url`` (``Store.export_responses``); never creates it."""
    shown = dburl.shown(url)
    path = dburl.sqlite_path(url)
    if path is not None and not path.exists():
        raise InputError(shown, "study database not found (has the app run with this URL?)")
    try:
        store = Store(url)
    except DatabaseMissing as exc:
        raise InputError(shown, str(exc).split(": ", 1)[-1]) from exc
    try:
        return store.export_responses()
    except sa.exc.DBAPIError as exc:
        raise InputError(shown, f"cannot read the study tables: {exc.orig}") from exc
    finally:
        store.dispose()


def export_responses(given: str | None, environ: Mapping[str, str], out: str | Path) -> pd.DataFrame:
    """Write the responses of the database named by ``given`` or ``environ`` to the CSV ``out``; returns them."""
    responses = read_responses(database_url(given, environ))
    io.write_text(out, responses.to_csv(index=False))
    return responses
