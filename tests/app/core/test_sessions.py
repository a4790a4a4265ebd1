"""The two ways to a session (app.core.db): every GET reads, and a read never takes SQLite's
write lock, so that reads go on while ingest (or anything else) writes."""

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError

from app.core import db as core_db
from app.main import create_app
from app.models import Cluster

Auth = dict[str, dict[str, str]]

READS = [
    "/v1/jobs",
    "/v1/nodes",
    "/v1/rates",
    "/v1/energy-rates",
    "/v1/scenarios",
    "/v1/periods",
    "/v1/budgets",
    "/v1/audit",
    "/v1/costs?from=2025-01-06T00:00:00Z&to=2025-01-07T00:00:00Z",
    "/v1/exports/focus.csv?from=2025-01-06T00:00:00Z&to=2025-01-07T00:00:00Z",
    "/metrics",
]


def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from api_routes(inner.routes)


def calls(dependant: Dependant) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from calls(dependency)


def test_every_get_takes_a_read_session_and_only_other_routes_a_write(settings: Any) -> None:
    app = create_app(settings)
    routes = list(api_routes(app.router.routes))
    reading = {r.path for r in routes if core_db._read_session in calls(r.dependant)}
    writing = {r.path for r in routes if core_db._write_session in calls(r.dependant)}

    assert reading and writing
    for route in routes:
        depends = set(calls(route.dependant))
        if route.methods & {"GET", "HEAD"}:
            assert core_db._write_session not in depends, route.path
        else:
            assert core_db._read_session not in depends, route.path


def test_gets_are_served_while_another_connection_holds_the_sqlite_write_lock(
    client: TestClient, auth: Auth, backend: str, db_url: str
) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite's write lock")
    holder = sqlite3.connect(make_url(db_url).database or "", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # as a writer (ingest, say) in its transaction
    try:
        for path in READS:
            began = time.monotonic()
            response = client.get(path, headers=auth["admin"])
            # A read that asked for the lock would wait out the busy timeout (30 s), then fail.
            assert response.status_code == 200, (path, response.text)
            assert time.monotonic() - began < 5, path
        # The lock is held all along: another writer is refused it.
        other = sqlite3.connect(make_url(db_url).database or "", timeout=0, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_write_in_a_read_session_fails_on_postgresql(settings: Any, backend: str) -> None:
    # SQLite's deferred BEGIN would let the write through and the rollback at the end drop it;
    # PostgreSQL's READ ONLY refuses it where it is made.
    if backend != "postgresql":
        pytest.skip("PostgreSQL's READ ONLY transactions")
    database = core_db.Database(core_db.create_db_engine(settings))
    try:
        with database.read() as session, pytest.raises(DBAPIError, match="read-only"):
            session.execute(text("CREATE TEMPORARY TABLE scratch (n int)"))
        with database.read() as session:
            assert session.execute(text("SHOW transaction_read_only")).scalar() == "on"
            assert session.execute(text("SHOW transaction_isolation")).scalar() == "repeatable read"
        with database.write() as session:  # on a connection a read has just given back
            assert session.execute(text("SHOW transaction_read_only")).scalar() == "off"
            assert session.execute(text("SHOW transaction_isolation")).scalar() == "read committed"
    finally:
        database.engine.dispose()


def test_a_read_session_reads_one_snapshot(settings: Any) -> None:
    # A model's cost is four queries: none may see a commit the others did not.
    database = core_db.Database(core_db.create_db_engine(settings))
    count = text("SELECT count(*) FROM clusters")
    try:
        with database.read() as session:
            before = session.execute(count).scalar_one()
            with database.write() as other:
                other.add(Cluster(name="committed-meanwhile", created_at=datetime.now(UTC)))
            assert session.execute(count).scalar_one() == before
        with database.read() as session:
            assert session.execute(count).scalar_one() == before + 1
    finally:
        database.engine.dispose()
