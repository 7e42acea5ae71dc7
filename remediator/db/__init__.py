"""The database of one remediator deployment: an SQLite file embedded by default, PostgreSQL
shared by worker replicas.

Opened by remediator.app.runtime (the worker), remediator.cli (``audit``, ``approve``,
``pause``..., ``db upgrade``) and the tests; used by remediator.audit (the trail, its chain,
the brakes) and remediator.slack.threads, which all live in the one database the
``--database-url`` names (``REMEDIATOR_DATABASE_URL``):

* ``sqlite:///STATE_DIR/audit.db`` (the default): one file, for one worker process (or several
  on one machine); its schema is versioned by ``PRAGMA user_version`` and brought up to date by
  whoever opens it (remediator.audit.store);
* ``postgresql://user:password@host:5432/remediator``: shared by every replica on the task
  queue; its schema is versioned by alembic (``remediator.db.migrations``) and changed only by
  ``remediator db upgrade``, never by a worker starting (``check_schema``).

SQLAlchemy Core 2 (no ORM) over the standard ``sqlite3`` module and psycopg 3. Writes are
serialised across processes as the audit chain and the brakes' count-then-grant need
(``Database.write``): SQLite's ``BEGIN IMMEDIATE`` takes the file's write lock; in PostgreSQL
the transaction takes one advisory lock (``pg_advisory_xact_lock``) before anything else, so
two replicas never read the same chain head or count the same free slot.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

log = logging.getLogger("remediator.db")

__all__ = [
    "Database",
    "DatabaseError",
    "DatabaseUnavailable",
    "DatabaseUrlError",
    "SchemaError",
    "database_url",
    "json_int",
    "json_text",
    "json_true",
    "reason",
]

DatabaseError = SQLAlchemyError
"""What a failed statement raises (SQLAlchemy's base error; ``.orig`` holds the driver's)."""

WRITE_LOCK = 0x72656D65
"""The PostgreSQL advisory lock every write transaction takes first (``reme`` in ASCII)."""

BUSY_TIMEOUT = 10.0
"""Seconds a statement waits for SQLite's write lock, and a connection for PostgreSQL."""

Dialect = Literal["sqlite", "postgresql"]


class DatabaseUrlError(ValueError):
    """``--database-url`` is not an ``sqlite:///PATH`` or ``postgresql://...`` URL."""


class DatabaseUnavailable(Exception):
    """The database named by the URL cannot be reached or opened (no fallback is tried)."""


class SchemaError(Exception):
    """The database's schema is not the one this remediator knows: absent, older or newer.
    The message is one line and names the command that fixes it."""


def database_url(url: str | Path | sa.URL) -> sa.URL:
    """The SQLAlchemy URL of ``--database-url``: ``postgresql://`` and ``postgres://`` (and
    ``postgresql+psycopg://``) use psycopg 3; ``sqlite:///PATH`` the ``sqlite3`` module. A
    ``Path`` (or text without ``://``) is an SQLite file.

    Raises:
        DatabaseUrlError: another scheme or driver, or a URL that does not parse, with the
            accepted forms.
    """
    if isinstance(url, Path) or (isinstance(url, str) and "://" not in url):
        return sa.URL.create("sqlite", database=str(url))
    try:
        parsed = sa.make_url(url)
    except ArgumentError:
        raise DatabaseUrlError(
            f"--database-url {_masked_text(str(url))!r} is not a URL; expected sqlite:///PATH or "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        if not parsed.database:
            raise DatabaseUrlError(f"--database-url {parsed.render_as_string()!r}: no database name after the host")
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        if not parsed.database:
            raise DatabaseUrlError("--database-url sqlite:///PATH needs a file path (sqlite:////abs/path or sqlite:///rel/path)")
        return parsed.set(drivername="sqlite")
    raise DatabaseUrlError(
        f"--database-url {parsed.render_as_string()!r}: unsupported scheme {parsed.drivername!r}; "
        "expected sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
    )


def _masked_text(url: str) -> str:
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, sep, userinfo = head.partition("://")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{tail}"


class Database:
    """One database, its engine and its connection pool.

    Args:
        url: ``--database-url`` (see ``database_url``), or an SQLite file path.

    Raises:
        DatabaseUrlError: the URL is not an accepted form.
        DatabaseUnavailable: PostgreSQL cannot be reached (checked once here, so a worker with
            a wrong URL stops at start) or the SQLite file's directory cannot be created.
    """

    def __init__(self, url: str | Path | sa.URL) -> None:
        self.url = database_url(url)
        self.dialect: Dialect = "sqlite" if self.url.drivername == "sqlite" else "postgresql"
        self.engine: Engine
        # SQLite: the writers of this process take turns here rather than in SQLite's busy
        # handler (which polls, and gives up after BUSY_TIMEOUT), as they did on the one
        # connection the store had before; other processes still wait in the busy handler.
        self._write_lock: threading.Lock | None = None
        self._memory = False
        if self.dialect == "sqlite":
            self._write_lock = threading.Lock()
            self.engine = self._sqlite_engine()
        else:
            self.engine = sa.create_engine(
                self.url,
                # One connection per activity thread at most (remediator.app.runtime runs 32).
                pool_size=4, max_overflow=28, pool_pre_ping=True,
                connect_args={"connect_timeout": int(BUSY_TIMEOUT)},
            )
            try:
                with self.engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
            except DBAPIError as err:
                self.engine.dispose()
                raise DatabaseUnavailable(f"cannot connect to {self.display}: {_first_line(err.orig)}") from None

    @property
    def display(self) -> str:
        """The URL with its password hidden, for messages and logs."""
        return self.url.set(drivername=self.dialect).render_as_string(hide_password=True)

    @property
    def path(self) -> Path | None:
        """The SQLite file, or None for PostgreSQL."""
        return Path(self.url.database) if self.dialect == "sqlite" and self.url.database else None

    def _sqlite_engine(self) -> Engine:
        path = self.path
        memory = self._memory = path is None or str(path) == ":memory:"
        if not memory:
            assert path is not None
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise DatabaseUnavailable(f"cannot create {path.parent}: {err.strerror or err}") from None
        engine = sa.create_engine(
            self.url,
            connect_args={"timeout": BUSY_TIMEOUT, "check_same_thread": False},
            # A file: as many connections kept as the worker has activity threads (32), so
            # none is opened per statement (a file open and the pragmas below).
            **({"poolclass": sa.StaticPool} if memory else {"pool_size": 32, "max_overflow": 32}),
        )

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            # The sqlite3 module's own transaction handling is off: SQLAlchemy's "begin" event
            # below emits BEGIN, so a write transaction can take the lock first (the
            # documented pysqlite recipe).
            dbapi_connection.isolation_level = None
            if not memory:
                # WAL lets the CLI read while a worker writes; FULL because an audit record
                # must survive a power cut as well as the cluster change it describes.
                dbapi_connection.execute("PRAGMA journal_mode=WAL")
                dbapi_connection.execute("PRAGMA synchronous=FULL")

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            options = conn.get_execution_options()
            if options.get("remediator_write"):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif options.get("remediator_snapshot"):
                conn.exec_driver_sql("BEGIN")
            # else: a single-statement read, in SQLite's autocommit mode (no BEGIN, no ROLLBACK).

        return engine

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction, serialised with every other writer of the database in any
        process (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``pg_advisory_xact_lock(WRITE_LOCK)``
        first, released at commit), committed on exit, rolled back on any exception.

        Raises:
            DatabaseError: the lock was not had in time, or a statement failed.
        """
        if self._write_lock is not None:
            with self._write_lock, self._write_transaction() as conn:
                yield conn
        else:
            with self._write_transaction() as conn:
                yield conn

    @contextmanager
    def _write_transaction(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn = conn.execution_options(remediator_write=True)
            with conn.begin():
                if self.dialect == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK})
                yield conn

    @contextmanager
    def read(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """One read-only transaction; ``snapshot``: every statement sees the same committed
        state (PostgreSQL ``REPEATABLE READ``, SQLite ``BEGIN``); without it SQLite reads in
        autocommit mode, each statement on its own, as cheap as a read can be.
        An in-memory SQLite database has one connection: its readers take the write lock."""
        if self._memory and self._write_lock is not None:
            with self._write_lock, self._read_transaction(snapshot) as conn:
                yield conn
        else:
            with self._read_transaction(snapshot) as conn:
                yield conn

    @contextmanager
    def _read_transaction(self, snapshot: bool) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            if snapshot:
                conn = conn.execution_options(
                    **({"isolation_level": "REPEATABLE READ"} if self.dialect == "postgresql" else {"remediator_snapshot": True})
                )
            with conn.begin() as tx:
                yield conn
                tx.rollback()

    def dispose(self) -> None:
        """Close the pool's connections; the database can still be used (reconnects)."""
        self.engine.dispose()


def _first_line(err: BaseException | None) -> str:
    text = str(err or "").strip()
    return text.splitlines()[0] if text else type(err).__name__


# --------------------------------------------------------------------------- JSON in SQL


def _json_path(dialect: Dialect, column: str, path: str) -> tuple[str, list[str]]:
    keys = path.split(".")
    if not all(k.isidentifier() for k in keys):
        raise ValueError(f"JSON path {path!r}: dotted identifiers only")
    return column, keys


def json_text(dialect: Dialect, column: str, path: str) -> str:
    """SQL for the text at ``path`` (``change.revision``) of the JSON text ``column``, NULL
    when absent: SQLite ``json_extract``, PostgreSQL ``#>>``. Numbers come back as numbers in
    SQLite, as text in PostgreSQL: compare strings only (``json_int`` for numbers)."""
    column, keys = _json_path(dialect, column, path)
    if dialect == "sqlite":
        return f"json_extract({column}, '$.{'.'.join(keys)}')"
    return f"(CAST({column} AS jsonb) #>> '{{{','.join(keys)}}}')"


def json_int(dialect: Dialect, column: str, path: str) -> str:
    """SQL for the integer at ``path`` of the JSON text ``column`` (NULL when absent)."""
    if dialect == "sqlite":
        return json_text(dialect, column, path)
    column, keys = _json_path(dialect, column, path)
    return f"CAST(CAST({column} AS jsonb) #>> '{{{','.join(keys)}}}' AS bigint)"


def json_true(dialect: Dialect, column: str, path: str) -> str:
    """SQL that holds when ``path`` of the JSON text ``column`` is ``true``."""
    if dialect == "sqlite":
        return f"{json_text(dialect, column, path)} = 1"
    column, keys = _json_path(dialect, column, path)
    return f"(CAST({column} AS jsonb) #> '{{{','.join(keys)}}}') = 'true'::jsonb"


def reason(err: BaseException) -> str:
    """What a person reads of a database error: the driver's first line (``database is
    locked``, ``connection refused``...), without SQLAlchemy's statement dump."""
    return _first_line(getattr(err, "orig", None) or err)
