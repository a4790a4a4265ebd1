"""Database engines, and the two ways to a session, for PostgreSQL (production) and SQLite
(the embedded default).

Two engines: the main one, whose pool the requests admitted by `concurrency.DatabaseSlots`
share, and a side one of `SIDE_CONNECTIONS`, for what must never wait behind requests (token
lookups in `auth.Authenticate`, the readiness probe). A `Database` wraps an engine and makes
its session factories once; the app holds one for each engine (`app.state.database`,
`app.state.side_database`), a command one for its run (`app.cli.common.database`).

Every session in the app comes one of two ways, nothing else builds one:

1. **A read session**, `Database.read()` (routes: `ReadSession`, which every GET takes).
   Read-only, and one snapshot for the whole transaction, whatever commits meanwhile, so
   that a read's queries agree with each other (a model's cost, `/metrics`, `gpucost db
   check-totals`): on SQLite its transaction is deferred (`BEGIN`), so it never takes the
   write lock and never waits for one, and in WAL reads one snapshot; on PostgreSQL it is
   READ ONLY (a write fails at once) and REPEATABLE READ. It ends rolled back, having
   nothing to commit.
2. **A write transaction**, `Database.write()` (routes: `WriteSession`, for what is not a
   GET): SQLite's write lock taken at `BEGIN IMMEDIATE`; committed when the block (the
   route) returns, rolled back if it raises. Work that must be run again after a deadlock or
   a lost race owns its transactions instead: `commit_with_retry(database, work)` runs
   `work` in a `write()` of its own each time (ingest, app.reports.service: the report routes
   take no session, and nothing commits a second time over ingest's transactions).

No route commits. tests/app/core/test_sessions.py holds every GET to a read session, served while
another connection holds SQLite's write lock.
"""

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from psycopg.types.array import ListBinaryDumper
from sqlalchemy import Engine, Table, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.sums import register_sqlite

SQLITE_BUSY_TIMEOUT_MS = 30_000
SIDE_CONNECTIONS = 3
READ_ONLY = "gpucost_read_only"
T = TypeVar("T")


def create_db_engine(settings: Settings, *, side: bool = False) -> Engine:
    """Build the engine for the configured URL; SQLite gets WAL, foreign keys and write locks.

    `side`: the small engine of `SIDE_CONNECTIONS`, none on overflow, that only reads."""
    url = make_url(settings.database_url)
    pool_size = SIDE_CONNECTIONS if side else settings.db_pool_size
    max_overflow = 0 if side else settings.db_pool_size
    if url.get_backend_name() != "sqlite":
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=settings.db_pool_timeout_seconds,
            pool_pre_ping=True,
            connect_args={"connect_timeout": max(1, int(settings.db_pool_timeout_seconds))},
        )
        event.listen(engine, "connect", _configure_postgres)
        return engine
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
        # Take transactions into our own hands (see _begin_immediate).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()
        register_sqlite(dbapi_connection)

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        # A deferred transaction that reads and then writes fails at once with
        # "database is locked" when another writer got there first; taking the write
        # lock at BEGIN makes it wait for busy_timeout instead. Long reads (exports)
        # say they will not write, and then leave writers alone.
        if side or connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _configure_postgres(dbapi_connection: Any, _record: Any) -> None:
    # Arrays carry a batch's rows (see app.core.upsert). As text, psycopg formats and quotes
    # each element in Python, 2 µs a timestamp; in binary, 0.1 µs.
    dbapi_connection.adapters.register_dumper(list, ListBinaryDumper)
    # Statements are prepared once per connection (psycopg), planned each time: a plan made
    # once, while a table was small (a fleet's nodes and GPUs as they register), scans it
    # whole until the next ANALYZE, a minute or more later. (A SET, not a startup option,
    # so that options in the database URL stay as they are.)
    dbapi_connection.execute("SET plan_cache_mode = force_custom_plan")
    dbapi_connection.commit()


class Database:
    """An engine and its two ways to a session (see the module's docstring); the factories
    are made once, here."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        read = engine.execution_options(**{READ_ONLY: True})
        if engine.dialect.name == "postgresql":
            # A write in a read session fails there and then, rather than vanish when the
            # session ends rolled back (SQLite's deferred BEGIN lets it through, as before).
            read = read.execution_options(postgresql_readonly=True)
            # One snapshot: every query of a read agrees with the others (a model's phases
            # with its busiest hours, a rate card with the usage it prices), whatever commits
            # meanwhile. A read-only transaction is never refused a serialization.
            read = read.execution_options(isolation_level="REPEATABLE READ")
        self._write = sessionmaker(engine, expire_on_commit=False)
        self._read = sessionmaker(read, expire_on_commit=False)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session, closed (its transaction rolled back) when the block ends; its
        queries all read the database as it was at the first of them."""
        with self._read() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session in one read-write transaction: committed when the block returns,
        rolled back if it raises."""
        with self._write() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise


def exclude_writers(session: Session, table: Table) -> None:
    """Hold every other transaction's writes to `table` off until this one ends; reads go
    on. PostgreSQL locks the table; SQLite has one writer at a time (BEGIN IMMEDIATE)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"LOCK TABLE {table.name} IN EXCLUSIVE MODE"))


def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def _read_session(request: Request) -> Iterator[Session]:
    with _database(request).read() as session:
        yield session


def _write_session(request: Request) -> Iterator[Session]:
    with _database(request).write() as session:
        yield session


# A route's session, ended before its response is sent. Every GET reads (a test holds them
# to it); a route that writes takes its one transaction, committed when the route returns.
ReadSession = Annotated[Session, Depends(_read_session, scope="function")]
WriteSession = Annotated[Session, Depends(_write_session, scope="function")]


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(_settings)]


# PostgreSQL's deadlock_detected and serialization_failure: the transaction did nothing
# wrong and succeeds when run again; exclusion_violation: a concurrent transaction stored GPU
# time first, which the transaction, run again, finds and refuses with a 409.
_RETRYABLE_SQLSTATES = {"40P01", "40001", "23P01"}


class RaceLost(Exception):
    """Raised by work that found a row it read changed under it: the transaction did nothing
    wrong and sees the change when run again."""


def _retryable(exc: OperationalError | IntegrityError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def refers_to_nothing(exc: IntegrityError) -> bool:
    """A foreign key that names no row (PostgreSQL's foreign_key_violation; SQLite's)."""
    if getattr(exc.orig, "sqlstate", None) == "23503":
        return True
    return getattr(exc.orig, "sqlite_errorcode", None) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY


def commit_with_retry(database: Database, work: Callable[[Session], T], *, attempts: int = 3) -> T:
    """Run `work` in a write transaction of its own (`Database.write`) and commit it, running
    it again, in a new one, after a deadlock or after losing a race for GPU time (see
    app.reports._occupancy).

    Any other error rolls the transaction back, so nothing of a failed piece of work stays.
    """
    for attempt in range(1, attempts + 1):
        try:
            with database.write() as session:
                return work(session)
        except (OperationalError, IntegrityError) as exc:
            if attempt == attempts or not _retryable(exc):
                raise
        except RaceLost:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")
