"""Response storage: SQLAlchemy, SQLite by default (WAL, synchronous FULL, busy timeout), PostgreSQL by URL.

``Store(url)`` opens an existing study database and refuses a missing one (a mistyped or relative path
must not silently start an empty database); only ``Store(url, create=True)`` (``retrievegan study-serve
--init``) creates the file and the tables. SQLite commits with ``synchronous = FULL``, so an answer the
app has acknowledged survives a power loss.

Every table is append-only: the code only INSERTs (with ON CONFLICT DO NOTHING on the unique keys)
and SELECTs, and on SQLite triggers refuse UPDATE and DELETE. On PostgreSQL grant the app's role
only ``SELECT, INSERT`` (docs/userstudy.md).

    plans       one row per participant (primary key): the plan JSON, its seed, study id, app version;
                written after consent, before the first trial
    consents    (participant, consent version) unique
    responses   (participant, trial) unique: a double click, a rerun or a second tab never writes
                twice, the first answer stands; each row carries the methods left/right, the chosen
                side and method, the response time, the plan seed and the app version
    displays    (participant, trial) unique: when the trial was first shown to the participant (a reload
                does not restart it); copied into the response as ``first_shown_at``
    completions one row per participant, written only once every planned trial has a response

A response also keeps the hash of the browser token that answered (``browser_token``; see
``retrievegan.study.access``): the completion code is shown only to a browser that answered.
"""

from __future__ import annotations

import datetime as _dt
import json
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

from retrievegan.errors import ConfigError
from retrievegan.study import dburl
from retrievegan.study.plan import SIDES, Plan, Trial, validate_participant_id

T = TypeVar("T")

EXPORT_COLUMNS = (
    "participant_id",
    "id_source",
    "study_id",
    "n_trials",
    "trial_index",
    "trial_id",
    "kind",
    "image_id",
    "method_left",
    "method_right",
    "chosen_side",
    "chosen_method",
    "response_time_ms",
    "plan_seed",
    "app_version",
    "consent_version",
    "first_shown_at",
    "created_at",
)

_METADATA = sa.MetaData()
PLANS = sa.Table(
    "plans",
    _METADATA,
    sa.Column("participant_id", sa.String(64), primary_key=True),
    sa.Column("id_source", sa.String(16), nullable=False),  # prolific | pid | minted | simulated
    sa.Column("study_id", sa.String(32), nullable=False),
    sa.Column("plan_seed", sa.BigInteger, nullable=False),
    sa.Column("n_trials", sa.Integer, nullable=False),
    sa.Column("plan_json", sa.Text, nullable=False),
    sa.Column("app_version", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
CONSENTS = sa.Table(
    "consents",
    _METADATA,
    sa.Column("participant_id", sa.String(64), primary_key=True),
    sa.Column("consent_version", sa.String(80), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
RESPONSES = sa.Table(
    "responses",
    _METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("participant_id", sa.String(64), nullable=False),
    sa.Column("trial_id", sa.String(160), nullable=False),
    sa.Column("trial_index", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("image_id", sa.BigInteger, nullable=False),
    sa.Column("method_left", sa.String(64), nullable=False),
    sa.Column("method_right", sa.String(64), nullable=False),
    sa.Column("chosen_side", sa.String(8), nullable=False),
    sa.Column("chosen_method", sa.String(64), nullable=False),
    sa.Column("response_time_ms", sa.Integer, nullable=False),
    sa.Column("plan_seed", sa.BigInteger, nullable=False),
    sa.Column("study_id", sa.String(32), nullable=False),
    sa.Column("app_version", sa.String(64), nullable=False),
    sa.Column("consent_version", sa.String(80), nullable=False),
    sa.Column("first_shown_at", sa.DateTime(timezone=True), nullable=True),  # None: never recorded as shown
    sa.Column("browser_token", sa.String(32), nullable=False),  # access.token_hash of the answering browser
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("participant_id", "trial_id", name="uq_responses_participant_trial"),
)
DISPLAYS = sa.Table(
    "displays",
    _METADATA,
    sa.Column("participant_id", sa.String(64), primary_key=True),
    sa.Column("trial_id", sa.String(160), primary_key=True),
    sa.Column("shown_at", sa.DateTime(timezone=True), nullable=False),
)
COMPLETIONS = sa.Table(
    "completions",
    _METADATA,
    sa.Column("participant_id", sa.String(64), primary_key=True),
    sa.Column("completion_code", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
_TABLES = (PLANS, CONSENTS, RESPONSES, DISPLAYS, COMPLETIONS)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


class StoreError(RuntimeError):
    """A request the store refuses (unknown participant, trial not in the plan...)."""


class DatabaseMissing(ConfigError):
    """The study database (or its tables) does not exist and the store was not asked to create it."""


class Store:
    """Thread-safe handle on the study database (share one per process, e.g. ``st.cache_resource``)."""

    def __init__(
        self, url: str, *, busy_timeout_s: float = 30.0, create: bool = False, clock: Callable[[], _dt.datetime] = _now
    ):
        """Open the study database at ``url``; ``create`` makes the file and the tables if missing. ``clock``:
        the time stamped into ``created_at`` / ``shown_at`` (UTC now; simulated participants pass a simulated
        clock, so that their exported responses are the same bytes on every run)."""
        self.url = url
        self._clock = clock
        self._busy_timeout_s = busy_timeout_s
        sa_url = dburl.parse(url, "study database URL")
        self.shown_url = sa_url.render_as_string(hide_password=True)
        self.dialect = sa_url.get_backend_name()
        kwargs: dict[str, Any] = {"future": True}
        path = dburl.sqlite_path(url)
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"timeout": busy_timeout_s, "check_same_thread": False}
            if path is not None:
                kwargs.update(pool_size=8, max_overflow=32, pool_timeout=busy_timeout_s)
                if create:
                    path.parent.mkdir(parents=True, exist_ok=True)
                elif not path.is_file():
                    raise DatabaseMissing(
                        f"{self.shown_url}: no study database at {path} (create it once with "
                        "`retrievegan study-serve --init`)"
                    )
            elif not create:
                raise DatabaseMissing(f"{self.shown_url}: an in-memory database exists only once created (create=True)")
        else:
            kwargs.update(pool_pre_ping=True)
        try:
            self.engine = sa.create_engine(sa_url, **kwargs)
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"{self.shown_url}: database driver {exc.name!r} is not "
                "installed (PostgreSQL: pip install psycopg, URL postgresql+psycopg://...)"
            ) from exc
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", self._sqlite_pragmas)
        if create:
            self._retry(self._create)
        else:
            self._check_tables()

    def _check_tables(self) -> None:
        """DatabaseMissing unless every table exists with every column this code writes."""
        inspector = sa.inspect(self.engine)
        for table in _TABLES:
            if not inspector.has_table(table.name):
                self.dispose()
                raise DatabaseMissing(
                    f"{self.shown_url}: no {table.name!r} table: not a study database, or not "
                    "created yet (`retrievegan study-serve --init`)"
                )
            have = {c["name"] for c in inspector.get_columns(table.name)}
            missing = [c.name for c in table.columns if c.name not in have]
            if missing:
                self.dispose()
                raise DatabaseMissing(
                    f"{self.shown_url}: table {table.name!r} lacks columns {missing}: written "
                    "by an older version of the app; start a new database for this version"
                )

    def _sqlite_pragmas(self, dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")  # an acknowledged answer survives a power loss
        finally:
            cursor.close()

    def _create(self) -> None:
        _METADATA.create_all(self.engine, checkfirst=True)
        if self.dialect == "sqlite":
            with self.engine.begin() as conn:
                for table in _TABLES:
                    for op in ("UPDATE", "DELETE"):
                        conn.exec_driver_sql(
                            f"CREATE TRIGGER IF NOT EXISTS {table.name}_no_{op.lower()} BEFORE {op} ON {table.name} "
                            f"BEGIN SELECT RAISE(ABORT, '{table.name} is append-only'); END"
                        )

    def _retry(self, func: Callable[[], T], attempts: int = 8) -> T:
        """Retry on SQLite lock errors that the busy handler cannot wait out (e.g. schema races)."""
        for attempt in range(attempts):
            try:
                return func()
            except OperationalError as exc:
                text = str(exc).lower()
                if (
                    self.dialect != "sqlite"
                    or attempt == attempts - 1
                    or not ("locked" in text or "busy" in text or "already exists" in text)
                ):
                    raise
                time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    def _insert_ignore(self, table: sa.Table, values: dict[str, Any], keys: list[str]) -> bool:
        """INSERT unless a row with the same ``keys`` exists; True if this call inserted it."""
        if self.dialect in ("sqlite", "postgresql"):
            if self.dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert
            else:
                from sqlalchemy.dialects.postgresql import insert
            stmt = insert(table).values(**values).on_conflict_do_nothing(index_elements=keys)

            def run() -> bool:
                with self.engine.begin() as conn:
                    return conn.execute(stmt).rowcount == 1

            return self._retry(run)
        try:
            with self.engine.begin() as conn:
                conn.execute(table.insert().values(**values))
            return True
        except IntegrityError:
            return False

    # --- plans and consent -----------------------------------------------------------------------

    def save_plan(self, plan: Plan, id_source: str, app_version: str) -> Plan:
        """Store ``plan`` unless the participant has one; return the stored plan (first one wins)."""
        if validate_participant_id(plan.participant_id) is None:
            raise StoreError("invalid participant id")
        self._insert_ignore(
            PLANS,
            {
                "participant_id": plan.participant_id,
                "id_source": id_source,
                "study_id": plan.study_id,
                "plan_seed": plan.seed,
                "n_trials": len(plan.trials),
                "plan_json": json.dumps(plan.to_json()),
                "app_version": app_version,
                "created_at": self._clock(),
            },
            ["participant_id"],
        )
        stored = self.get_plan(plan.participant_id)
        assert stored is not None
        return stored

    def get_plan(self, participant_id: str) -> Plan | None:
        with self.engine.connect() as conn:
            text = conn.execute(
                sa.select(PLANS.c.plan_json).where(PLANS.c.participant_id == participant_id)
            ).scalar_one_or_none()
        return None if text is None else Plan.from_json(json.loads(text))

    def record_consent(self, participant_id: str, consent_version: str) -> bool:
        if validate_participant_id(participant_id) is None:
            raise StoreError("invalid participant id")
        return self._insert_ignore(
            CONSENTS,
            {"participant_id": participant_id, "consent_version": consent_version, "created_at": self._clock()},
            ["participant_id", "consent_version"],
        )

    def has_consent(self, participant_id: str, consent_version: str) -> bool:
        with self.engine.connect() as conn:
            return (
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(CONSENTS)
                    .where(CONSENTS.c.participant_id == participant_id, CONSENTS.c.consent_version == consent_version)
                ).scalar_one()
                > 0
            )

    # --- responses -------------------------------------------------------------------------------

    def record_display(self, participant_id: str, trial_id: str) -> None:
        """Note that ``trial_id`` is on the participant's screen (the first call per trial stands)."""
        self._insert_ignore(
            DISPLAYS,
            {"participant_id": participant_id, "trial_id": trial_id, "shown_at": self._clock()},
            ["participant_id", "trial_id"],
        )

    def record_response(
        self,
        plan: Plan,
        trial_id: str,
        chosen_side: str,
        response_time_ms: int,
        app_version: str,
        consent_version: str,
        browser_token: str = "",
    ) -> bool:
        """Append the answer to one trial of the stored ``plan``; False if it was already answered.

        ``browser_token`` is the hash (``access.token_hash``) of the answering browser's token, "" if none.
        """
        if chosen_side not in SIDES:
            raise StoreError(f"chosen side must be one of {SIDES}")
        try:
            trial: Trial = plan.trial(trial_id)
        except KeyError as exc:
            raise StoreError("trial is not in the participant's plan") from exc
        index = next(i for i, t in enumerate(plan.trials) if t.trial_id == trial_id)
        return self._insert_ignore(
            RESPONSES,
            {
                "participant_id": plan.participant_id,
                "trial_id": trial_id,
                "trial_index": index,
                "kind": trial.kind,
                "image_id": trial.image_id,
                "method_left": trial.left_method,
                "method_right": trial.right_method,
                "chosen_side": chosen_side,
                "chosen_method": trial.method(chosen_side),
                "response_time_ms": max(0, min(int(response_time_ms), 2**31 - 1)),
                "plan_seed": plan.seed,
                "study_id": plan.study_id,
                "app_version": app_version,
                "consent_version": consent_version,
                "first_shown_at": self._first_shown(plan.participant_id, trial_id),
                "browser_token": browser_token,
                "created_at": self._clock(),
            },
            ["participant_id", "trial_id"],
        )

    def _first_shown(self, participant_id: str, trial_id: str) -> _dt.datetime | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(DISPLAYS.c.shown_at).where(
                    DISPLAYS.c.participant_id == participant_id, DISPLAYS.c.trial_id == trial_id
                )
            ).scalar_one_or_none()

    def answered_in_browser(self, participant_id: str, browser_token: str) -> bool:
        """Whether a response of the participant came from the browser whose token hashes to ``browser_token``."""
        if not browser_token:
            return False
        with self.engine.connect() as conn:
            return (
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(RESPONSES)
                    .where(RESPONSES.c.participant_id == participant_id, RESPONSES.c.browser_token == browser_token)
                ).scalar_one()
                > 0
            )

    def answered(self, participant_id: str) -> set[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(RESPONSES.c.trial_id).where(RESPONSES.c.participant_id == participant_id))
            return {r[0] for r in rows}

    def next_trial(self, plan: Plan) -> tuple[int, Trial] | None:
        """(position, trial) of the first planned trial without a stored response; None when all are stored."""
        done = self.answered(plan.participant_id)
        for position, trial in enumerate(plan.trials):
            if trial.trial_id not in done:
                return position, trial
        return None

    def complete(self, plan: Plan) -> str | None:
        """The participant's completion code, minted once; None unless every planned trial is stored."""
        done = self.answered(plan.participant_id)
        if any(t.trial_id not in done for t in plan.trials):
            return None
        self._insert_ignore(
            COMPLETIONS,
            {
                "participant_id": plan.participant_id,
                "completion_code": secrets.token_hex(4).upper(),
                "created_at": self._clock(),
            },
            ["participant_id"],
        )
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(COMPLETIONS.c.completion_code).where(COMPLETIONS.c.participant_id == plan.participant_id)
            ).scalar_one()

    # --- admin -----------------------------------------------------------------------------------

    def export_responses(self) -> pd.DataFrame:
        """Every response with its plan's id source and trial count (EXPORT_COLUMNS), in insertion order."""
        query = (
            sa.select(
                RESPONSES.c.participant_id,
                PLANS.c.id_source,
                RESPONSES.c.study_id,
                PLANS.c.n_trials,
                RESPONSES.c.trial_index,
                RESPONSES.c.trial_id,
                RESPONSES.c.kind,
                RESPONSES.c.image_id,
                RESPONSES.c.method_left,
                RESPONSES.c.method_right,
                RESPONSES.c.chosen_side,
                RESPONSES.c.chosen_method,
                RESPONSES.c.response_time_ms,
                RESPONSES.c.plan_seed,
                RESPONSES.c.app_version,
                RESPONSES.c.consent_version,
                RESPONSES.c.first_shown_at,
                RESPONSES.c.created_at,
            )
            .select_from(RESPONSES.outerjoin(PLANS, RESPONSES.c.participant_id == PLANS.c.participant_id))
            .order_by(RESPONSES.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return pd.DataFrame([tuple(r) for r in rows], columns=list(EXPORT_COLUMNS))

    def progress(self) -> pd.DataFrame:
        """Per participant: id source, trials answered / planned, catch failures, consent and completion times."""
        answered = (
            sa.select(
                RESPONSES.c.participant_id,
                sa.func.count().label("answered"),
                sa.func.sum(
                    sa.case(
                        (sa.and_(RESPONSES.c.kind == "catch", RESPONSES.c.chosen_method != "catch_real"), 1), else_=0
                    )
                ).label("catch_failed"),
                sa.func.max(RESPONSES.c.created_at).label("last_response"),
            )
            .group_by(RESPONSES.c.participant_id)
            .subquery()
        )
        query = (
            sa.select(
                PLANS.c.participant_id,
                PLANS.c.id_source,
                PLANS.c.study_id,
                PLANS.c.n_trials,
                sa.func.coalesce(answered.c.answered, 0),
                sa.func.coalesce(answered.c.catch_failed, 0),
                PLANS.c.created_at,
                answered.c.last_response,
                COMPLETIONS.c.created_at,
            )
            .select_from(
                PLANS.outerjoin(answered, answered.c.participant_id == PLANS.c.participant_id).outerjoin(
                    COMPLETIONS, COMPLETIONS.c.participant_id == PLANS.c.participant_id
                )
            )
            .order_by(PLANS.c.created_at)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return pd.DataFrame(
            [tuple(r) for r in rows],
            columns=[
                "participant_id",
                "id_source",
                "study_id",
                "n_trials",
                "answered",
                "catch_failed",
                "started_at",
                "last_response_at",
                "completed_at",
            ],
        )

    def count_responses(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(RESPONSES)).scalar_one()

    def integrity_check(self) -> str:
        """SQLite ``PRAGMA integrity_check`` ("ok" when sound)."""
        if self.dialect != "sqlite":
            raise StoreError("integrity_check is SQLite-only")
        with self.engine.connect() as conn:
            return "; ".join(str(r[0]) for r in conn.exec_driver_sql("PRAGMA integrity_check"))

    def dispose(self) -> None:
        self.engine.dispose()
