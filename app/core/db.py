"""Database engines and sessions for PostgreSQL (production) and SQLite (embedded default).

Two engines: the main one, whose pool the requests admitted by `concurrency.DatabaseSlots`
share, and a side one of `SIDE_CONNECTIONS`, for what must never wait behind requests (token
lookups in `auth.Authenticate`, the readiness probe). Sessions come from two factories on the
main engine: read-only ones for every GET and for exports (they never take SQLite's write
lock), and read-write ones for everything else; `SessionDep` picks by the request's method.
A read-only factory can also read one snapshot throughout (`snapshot`), for a check that
compares what several queries read (`gpucost db check-totals`).
"""

import sqlite3
from collections.abc import Callable, Iterator
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


def create_session_factory(
    engine: Engine, *, read_only: bool = False, snapshot: bool = False
) -> sessionmaker[Session]:
    """Sessions on the engine; `read_only` ones never take SQLite's write lock. `snapshot`
    ones, read-only too, see the database as it was at their transaction's first statement,
    whatever commits meanwhile: PostgreSQL's REPEATABLE READ, READ ONLY (under its default,
    READ COMMITTED, each statement sees another snapshot); SQLite's deferred transactions
    read one snapshot already (WAL)."""
    bind = engine
    if read_only or snapshot:
        bind = bind.execution_options(**{READ_ONLY: True})
    if snapshot and engine.dialect.name == "postgresql":
        bind = bind.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    return sessionmaker(bind, expire_on_commit=False)


def exclude_writers(session: Session, table: Table) -> None:
    """Hold every other transaction's writes to `table` off until this one ends; reads go
    on. PostgreSQL locks the table; SQLite has one writer at a time (BEGIN IMMEDIATE)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"LOCK TABLE {table.name} IN EXCLUSIVE MODE"))


READS = ("GET", "HEAD")


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the route succeeds, rolled back if not;
    read-only for a GET."""
    state = request.app.state
    factory: sessionmaker[Session] = (
        state.read_session_factory if request.method in READS else state.session_factory
    )
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


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


def commit_with_retry(session: Session, work: Callable[[], T], *, attempts: int = 3) -> T:
    """Run `work` in the session's transaction and commit it, running it again after a deadlock
    or after losing a race for GPU time (see app.reports.occupancy).

    Any other error rolls the transaction back, so nothing of a failed piece of work stays.
    """
    for attempt in range(1, attempts + 1):
        try:
            result = work()
            session.commit()
            return result
        except (OperationalError, IntegrityError) as exc:
            session.rollback()
            if attempt == attempts or not _retryable(exc):
                raise
        except RaceLost:
            session.rollback()
            if attempt == attempts:
                raise
        except BaseException:
            session.rollback()
            raise
    raise AssertionError("unreachable")
