"""Ingest is never starved: a request without a valid token and the probes take no database
slot, and people's reads and exports hold at most their share of the slots, so collectors'
reports are answered while every other request is stuck in the database. (Real servers; the
database held by a lock, taken from the test, on what the stuck requests need.)"""

import asyncio
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from starlette.types import Receive, Scope, Send

from app.core.auth import PRINCIPAL, Principal
from app.core.concurrency import DatabaseSlots, lane_sizes
from tests.support import CLUSTER, entry, report, running_server, token_on

WAIT_SECONDS = "3"


@contextmanager
def database_held(db_url: str, tables: str, mode: str = "ACCESS EXCLUSIVE") -> Iterator[None]:
    """Whoever needs `tables` waits until the block ends: on PostgreSQL as the lock `mode`
    says (any use of them, or with EXCLUSIVE only writes), on SQLite (where readers never
    wait) any write."""
    if db_url.startswith("sqlite"):
        connection = sqlite3.connect(make_url(db_url).database or "", isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
        return
    engine = create_engine(db_url)
    with engine.connect() as connection:
        connection.execute(text(f"LOCK TABLE {tables} IN {mode} MODE"))
        try:
            yield
        finally:
            connection.rollback()
    engine.dispose()


def in_flight(requests: list[Callable[[], httpx.Response]]) -> tuple[list[Any], Callable[[], None]]:
    """Each request sent on a thread of its own: their answers as they come (status codes, or
    the transport error's name; None while unanswered), and a function that waits for all."""
    answers: list[Any] = [None] * len(requests)

    def send(i: int) -> None:
        try:
            answers[i] = requests[i]().status_code
        except httpx.TransportError as exc:
            answers[i] = type(exc).__name__

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()

    def wait() -> None:
        for thread in threads:
            thread.join(timeout=60)

    return answers, wait


def lock_waiters(db_url: str, count: int) -> None:
    """Wait until `count` sessions of the test database wait on a lock (PostgreSQL)."""
    engine = create_engine(db_url)
    with engine.connect() as connection:
        for _ in range(200):
            waiting = connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            ).scalar_one()
            if waiting >= count:
                break
            connection.rollback()
            threading.Event().wait(0.05)
    engine.dispose()
    assert waiting == count, waiting


def answered(answers: list[Any], count: int) -> None:
    """Wait until `count` of the answers have come."""
    for _ in range(200):
        if sum(answer is not None for answer in answers) >= count:
            return
        threading.Event().wait(0.05)


def post_report(url: str, token: str, seq: int, node: str) -> Callable[[], httpx.Response]:
    body = report(seq, node=node, gpus=[entry(seq % 8, job_id=f"lane-{seq}")])
    return lambda: httpx.post(
        f"{url}/v1/reports", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


def test_no_token_and_the_probes_need_no_slot(db_url: str, log_dir: Path) -> None:
    collector = token_on(db_url, "collector", cluster=CLUSTER, name="lane-collector")
    env = {"GPUCOST_DB_POOL_SIZE": "1", "GPUCOST_DB_POOL_TIMEOUT_SECONDS": WAIT_SECONDS}
    with running_server(db_url, log_dir, env=env) as server:
        # Remembered, so that the stuck reports below hold slots, not token lookups.
        first = post_report(server.url, collector, 1, "node-a")()
        assert first.status_code == 201, first.text
        with database_held(db_url, "usage_hourly"):
            # Two reports stuck in the database: both slots (one connection, one on overflow).
            stuck, wait = in_flight(
                [post_report(server.url, collector, seq, f"node-{seq}") for seq in (2, 3)]
            )
            if db_url.startswith("postgresql"):
                lock_waiters(db_url, 1)  # the two are stored together (group commit)
            threading.Event().wait(1)  # both are inside, waiting on the lock
            # A third finds no slot: both are held.
            control, wait_control = in_flight([post_report(server.url, collector, 4, "node-4")])
            answered(control, 1)
            strangers = [
                httpx.post(f"{server.url}/v1/reports", json=report(9), headers=headers)
                for headers in [{}, {"Authorization": "Bearer gpc_not-a-token"}] * 5
            ]
            probes = [httpx.get(f"{server.url}{path}") for path in ("/readyz", "/healthz")]
            assert stuck == [None, None]  # still waiting: every answer above came meanwhile
        wait()
        wait_control()
        assert control == [503]
        assert [r.status_code for r in strangers] == [401] * 10, strangers[0].text
        assert [r.status_code for r in probes] == [200, 200], probes[0].text
    assert stuck == [201, 201]


def test_reads_and_exports_leave_collectors_their_slots(db_url: str, log_dir: Path) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite's readers never wait on a lock: nothing holds a read in the database")
    collector = token_on(db_url, "collector", cluster=CLUSTER, name="lane-collector")
    viewer = {"Authorization": f"Bearer {token_on(db_url, 'viewer', name='lane-viewer')}"}
    env = {"GPUCOST_DB_POOL_SIZE": "2", "GPUCOST_DB_POOL_TIMEOUT_SECONDS": WAIT_SECONDS}
    with running_server(db_url, log_dir, env=env) as server:
        url = server.url
        assert httpx.get(f"{url}/v1/costs", headers=viewer).status_code == 200  # remembered
        assert post_report(url, collector, 1, "node-a")().status_code == 201
        reads = [lambda: httpx.get(f"{url}/v1/costs", headers=viewer, timeout=60) for _ in range(4)]
        exports = [
            lambda: httpx.get(
                f"{url}/v1/exports/focus.csv?from=2025-01-01&to=2025-02-01",
                headers=viewer,
                timeout=60,
            )
            for _ in range(3)
        ]
        # Four slots: people's requests may hold two, exports one of those.
        with database_held(db_url, "rates"):
            exported, wait_exports = in_flight(exports)
            lock_waiters(db_url, 1)  # one export in the database, two waiting for its lane
            read, wait_reads = in_flight(reads)
            lock_waiters(db_url, 2)  # one read in the database, three waiting for theirs
            posted = [post_report(url, collector, seq, f"node-{seq}")() for seq in (2, 3, 4)]
            # Those that found their lane full wait for it, then are told to retry.
            for _ in range(100):
                if (exported + read).count(503) == 5:
                    break
                threading.Event().wait(0.1)
            assert sorted(exported, key=str) == [503, 503, None], exported
            assert sorted(read, key=str) == [503, 503, 503, None], read
        wait_exports()
        wait_reads()
        assert [r.status_code for r in posted] == [201, 201, 201], posted[0].text
    # The export and the read in the database were answered once it let them go.
    assert sorted(exported) == [200, 503, 503] and sorted(read) == [200, 503, 503, 503]


READS = [
    "/v1/nodes",
    "/v1/jobs",
    f"/v1/jobs/{CLUSTER}/91234",
    "/v1/gpus/GPU-00000000-0000-0000-0000-000000000000",
    "/v1/rates",
    "/v1/energy-rates",
    "/v1/costs?group_by=job",
    "/v1/models/deepseek-v3/cost",
    "/v1/periods",
    "/v1/periods/2025-01",
    "/v1/exports/focus.csv?from=2025-01-01&to=2025-02-01",
    "/v1/exports/costs.csv?from=2025-01-01&to=2025-02-01",
    "/v1/audit",
]
SILENCE = re.compile(r'"silent_seconds":\d+')
WRITTEN = "usage, usage_hourly, reports, jobs, gpus, nodes, rates, energy_rates, periods, audit_log"


def test_reads_never_wait_for_a_writer(db_url: str, log_dir: Path) -> None:
    """Every read route answers, as it did before, while another transaction holds the
    database for writing (on SQLite: read routes do not take its write lock)."""
    collector = token_on(db_url, "collector", cluster=CLUSTER, name="read-collector")
    admin = {"Authorization": f"Bearer {token_on(db_url, 'admin', name='read-admin')}"}
    env = {"GPUCOST_DB_POOL_TIMEOUT_SECONDS": WAIT_SECONDS}
    with running_server(db_url, log_dir, env=env) as server:
        assert post_report(server.url, collector, 1, "node-a")().status_code == 201
        with httpx.Client(base_url=server.url, headers=admin, timeout=10) as client:

            def read(path: str) -> tuple[int, str]:
                # A node's silence counts on with the clock: the one figure that may differ.
                response = client.get(path)
                return response.status_code, SILENCE.sub("", response.text)

            before = [read(path) for path in READS]
            with database_held(db_url, WRITTEN, mode="EXCLUSIVE"):
                during = [read(path) for path in READS]
    assert during == before
    assert {status for status, _ in before} <= {200, 404}, before


def test_lanes_bound_each_kind_of_request() -> None:
    """The shares, on the middleware itself: with 8 slots, people's requests get 4 and
    exports 2 of those, and collectors the rest and more."""
    assert lane_sizes(8) == (4, 2) and lane_sizes(2) == (1, 1) and lane_sizes(1) == (1, 1)
    release = asyncio.Event()
    inside: list[str] = []

    async def app(scope: Scope, _receive: Receive, _send: Send) -> None:
        inside.append(scope["path"])
        await release.wait()

    async def run() -> tuple[list[int], list[int]]:
        slots = DatabaseSlots(app, slots=8, wait_seconds=0.2)
        answered: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answered.append(message["status"])

        async def request(path: str, role: str) -> None:
            scope = {"type": "http", "path": path, PRINCIPAL: Principal("t", role)}
            await slots(scope, _nothing, send)

        tasks = [asyncio.create_task(request("/v1/exports/focus.csv", "viewer")) for _ in range(3)]
        tasks += [asyncio.create_task(request("/v1/costs", "viewer")) for _ in range(4)]
        tasks += [asyncio.create_task(request("/v1/reports", "collector")) for _ in range(6)]
        await asyncio.sleep(0.5)
        release.set()
        await asyncio.gather(*tasks)
        assert slots._semaphores is not None
        return answered, [semaphore._value for semaphore in slots._semaphores]

    answered, semaphores = asyncio.run(run())
    # In at once: 2 exports and 2 reads (people's 4), and 4 reports (the 8 slots' rest).
    assert sorted(inside[:8]) == sorted(["/v1/exports/focus.csv"] * 2 + ["/v1/costs"] * 2
                                        + ["/v1/reports"] * 4)  # fmt: skip
    # One export and two reads waited past the limit for their lane; the two reports
    # beyond the slots too.
    assert sorted(answered) == [503] * 5
    assert semaphores == [2, 4, 8]  # every one given back, those that timed out included


async def _nothing() -> dict[str, Any]:
    return {"type": "http.disconnect"}
