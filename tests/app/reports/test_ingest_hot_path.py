"""The single-report hot path: transactions that grow with the load, ids that cost no
statement once known, and never an id from a transaction that was rolled back."""

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.known_ids import KnownIds
from app.main import create_app
from app.models import Cluster, Job, Node
from app.reports._group_commit import GroupCommit
from app.reports.schemas import ReportIn
from app.reports.service import Outcome, Stored
from tests.conftest import make_token
from tests.support import CLUSTER, SettableClock, entry, report, reset_database

Auth = dict[str, dict[str, str]]
SEEN = datetime(2025, 1, 6, 10, tzinfo=UTC)


def minute(seq: int, node: str = "node-a", job: str = "7") -> dict[str, Any]:
    start, end = f"2025-01-06T10:{seq:02d}:00Z", f"2025-01-06T10:{seq + 1:02d}:00Z"
    return report(seq, node=node, start=start, end=end, gpus=[entry(0, job_id=job)])


class Recorder:
    """A store that records each transaction's reports and can be held mid-transaction."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, reports: list[ReportIn]) -> list[Stored]:
        self.batches.append([r.seq for r in reports])
        self.entered.set()
        assert self.release.wait(10)
        return [Stored(report_id=r.seq, duplicate=False) for r in reports]


class HeldClock:
    """The group commit's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def submit(group: GroupCommit[Outcome], seq: int, node: str = "node-a") -> "asyncio.Task[Outcome]":
    report_in = ReportIn.model_validate(minute(seq, node=node))
    return asyncio.create_task(group.submit(report_in))


async def wait_for(condition: Any) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.001)


def queued(group: GroupCommit[Outcome]) -> int:
    return sum(len(lane.queue) for lane in group._lanes.values())


def writing(group: GroupCommit[Outcome]) -> bool:
    return any(lane.writer is not None for lane in group._lanes.values())


async def while_one_is_stored(
    store: Recorder, group: GroupCommit[Outcome], seqs: tuple[int, ...]
) -> tuple["asyncio.Task[Outcome]", list["asyncio.Task[Outcome]"]]:
    """Report 1 held in its transaction, and `seqs` (each from its own node) submitted
    meanwhile, queued behind it."""
    store.release.clear()
    first = submit(group, 1)
    await wait_for(store.entered.is_set)
    later = [submit(group, seq, node=f"node-{seq}") for seq in seqs]
    await wait_for(lambda: queued(group) == len(seqs))
    return first, later


def test_reports_arriving_while_one_is_stored_wait_to_go_together() -> None:
    store = Recorder()
    group = GroupCommit(store=store, max_reports=100, gather=0.0)

    async def run() -> list[Outcome]:
        first, later = await while_one_is_stored(store, group, (2, 3, 4))
        store.release.set()
        async with asyncio.timeout(10):
            return await asyncio.gather(first, *later)

    outcomes = asyncio.run(run())

    assert store.batches == [[1], [2, 3, 4]]
    assert [o.report_id for o in outcomes if isinstance(o, Stored)] == [1, 2, 3, 4]


def test_senders_reporting_together_wait_out_gather_and_go_together() -> None:
    store, clock = Recorder(), HeldClock()
    group = GroupCommit(store=store, max_reports=100, gather=600, monotonic=clock)

    async def run() -> None:
        await submit(group, 1, node="node-1")
        clock.now += 600 - 0.05  # 50 ms of its 600 s left
        second = submit(group, 2, node="node-2")  # another sender within gather
        await asyncio.sleep(0.01)
        assert store.batches == [[1]]  # waiting
        third = submit(group, 3, node="node-3")
        async with asyncio.timeout(10):
            await asyncio.gather(second, third)

    asyncio.run(run())

    assert store.batches == [[1], [2, 3]]


@pytest.mark.parametrize(
    ("nodes", "apart"),
    [
        # One sender alone: its next report once the last is answered, at once.
        (["node-a"] * 3, 0),
        # Several senders at a trickle: each report a whole gather after the last.
        (["node-1", "node-2", "node-3"], 600),
    ],
    ids=["one-sender-alone", "a-trickle"],
)
def test_reports_that_nothing_could_join_never_wait(nodes: list[str], apart: float) -> None:
    store, clock = Recorder(), HeldClock()
    group = GroupCommit(store=store, max_reports=100, gather=600, monotonic=clock)

    async def run() -> None:
        for seq, node in enumerate(nodes, start=1):
            async with asyncio.timeout(10):  # a wait of its gather would take ten minutes
                await submit(group, seq, node=node)
            clock.now += apart

    asyncio.run(run())

    assert store.batches == [[1], [2], [3]]


def test_a_full_transaction_does_not_wait() -> None:
    store, clock = Recorder(), HeldClock()
    group = GroupCommit(store=store, max_reports=2, gather=600, monotonic=clock)

    async def run() -> None:
        await submit(group, 1, node="node-1")
        waiting = [submit(group, seq, node=f"node-{seq}") for seq in (2, 3, 4, 5)]
        async with asyncio.timeout(10):  # its clock says 600 s to go: not waited
            await asyncio.gather(*waiting)

    asyncio.run(run())

    assert store.batches == [[1], [2, 3], [4, 5]]


def test_a_request_given_up_still_has_its_report_stored() -> None:
    store = Recorder()
    group = GroupCommit(store=store, max_reports=100, gather=0.0)

    async def run() -> None:
        first, (given_up,) = await while_one_is_stored(store, group, (2,))
        given_up.cancel()
        store.release.set()
        async with asyncio.timeout(10):
            await first
            await wait_for(lambda: not writing(group))

    asyncio.run(run())

    assert store.batches == [[1], [2]]


def test_a_transaction_that_fails_outside_the_store_fails_only_its_own_reports() -> None:
    store = Recorder()
    answers = iter([[]])  # the first transaction's store answers for none of its reports

    def short(reports: list[ReportIn]) -> list[Stored]:
        answer = next(answers, None)
        return store(reports) if answer is None else answer

    group = GroupCommit(store=short, max_reports=100, gather=0.0)

    async def run() -> list[Any]:
        tasks = [submit(group, seq, node=f"node-{seq}") for seq in (1, 2)]
        async with asyncio.timeout(10):
            first = await asyncio.gather(*tasks, return_exceptions=True)
            return [*first, await submit(group, 3)]

    first, second, third = asyncio.run(run())

    # The first two went in one transaction, whose outcomes could not be told; the next one's
    # could.
    assert isinstance(first, ValueError) and isinstance(second, ValueError)
    assert isinstance(third, Stored)
    assert store.batches == [[3]]


@pytest.mark.parametrize(
    "failure",
    [PoolTimeoutError("no connection freed in time"), OperationalError("x", {}, Exception())],
)
def test_a_database_out_of_reach_fails_the_transaction_once(failure: Exception) -> None:
    calls: list[list[int]] = []

    def store(reports: list[ReportIn]) -> list[Stored]:
        calls.append([r.seq for r in reports])
        raise failure

    group = GroupCommit(store=store, max_reports=100, gather=0.0)

    async def run() -> list[Any]:
        waiting = [submit(group, seq, node=f"node-{seq}") for seq in (1, 2, 3)]
        async with asyncio.timeout(30):
            return await asyncio.gather(*waiting, return_exceptions=True)

    answers = asyncio.run(run())

    # Not tried again report by report: each try would wait for the database once more.
    assert all(type(answer) is type(failure) for answer in answers)
    assert calls == [[1, 2, 3]]


def test_a_report_the_store_fails_strangely_is_still_answered() -> None:
    def store(reports: list[ReportIn]) -> list[Stored]:
        raise StopIteration  # what no future can hold

    group = GroupCommit(store=store, max_reports=100, gather=0.0)

    async def run() -> Any:
        async with asyncio.timeout(10):
            return await asyncio.gather(submit(group, 1), return_exceptions=True)

    (answer,) = asyncio.run(run())

    assert isinstance(answer, RuntimeError) and "StopIteration" in str(answer)


def test_reports_waiting_when_the_server_stops_are_answered() -> None:
    store = Recorder()
    group = GroupCommit(store=store, max_reports=100, gather=0.0)

    async def run() -> list[Any]:
        first, (second,) = await while_one_is_stored(store, group, (2,))
        writer = next(iter(group._lanes.values())).writer
        assert writer is not None
        writer.cancel()  # as the serving loop's tasks are when it stops
        await asyncio.sleep(0.01)
        writer.cancel()  # twice: the transaction under way still ends first
        await asyncio.sleep(0.01)
        assert not first.done()
        store.release.set()  # the transaction under way ends as it would
        async with asyncio.timeout(10):
            return await asyncio.gather(first, second, return_exceptions=True)

    first, second = asyncio.run(run())

    assert isinstance(first, Stored) and first.report_id == 1
    assert isinstance(second, RuntimeError) and "interrupted" in str(second)
    assert store.batches == [[1]]


def test_a_writer_cancelled_before_it_began_is_replaced() -> None:
    store = Recorder()
    group = GroupCommit(store=store, max_reports=100, gather=0.0)

    async def run() -> list[Any]:
        first = submit(group, 1)
        await asyncio.sleep(0)  # the request has queued its report and started the writer
        writer = next(iter(group._lanes.values())).writer
        assert writer is not None
        writer.cancel()  # before its first step
        async with asyncio.timeout(10):
            answers = await asyncio.gather(first, return_exceptions=True)
            return [*answers, await submit(group, 2)]

    first, second = asyncio.run(run())

    assert isinstance(first, RuntimeError) and "interrupted" in str(first)
    assert isinstance(second, Stored) and second.report_id == 2


@contextmanager
def statements(session: Session) -> Iterator[list[str]]:
    seen: list[str] = []
    engine = session.get_bind()

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "INSERT")):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_known_ids_are_looked_up_once_and_only_when_committed(db: Session) -> None:
    known = KnownIds()
    db.add(Cluster(name="c", created_at=SEEN))
    db.commit()
    cluster = db.execute(select(Cluster.id)).scalar_one()
    row = {
        "cluster_id": cluster,
        "name": "n1",
        "first_seen": SEEN,
        "last_report_at": SEEN,
        "last_interval_end": SEEN,
    }

    # Created in a transaction that rolls back: answered, never remembered.
    created = known.get_or_create(db, Node, ["cluster_id", "name"], [row])
    db.rollback()
    # Created and committed: remembered only once it is found committed.
    again = known.get_or_create(db, Node, ["cluster_id", "name"], [row])
    db.commit()
    with statements(db) as first_lookup:
        found = known.get_or_create(db, Node, ["cluster_id", "name"], [row])
    db.commit()
    with statements(db) as second_lookup:
        remembered = known.get_or_create(db, Node, ["cluster_id", "name"], [row])

    stored = db.execute(select(Node.id)).scalar_one()
    assert again == found == remembered == {(cluster, "n1"): stored}
    assert len(first_lookup) == 1 and not second_lookup
    assert created.keys() == again.keys()


def test_ids_of_a_rolled_back_transaction_are_not_reused(
    settings: Settings, clock: SettableClock, db: Session, auth: Auth
) -> None:
    """A report that creates its node and job, refused by the database after (a value it
    refuses, here by a trigger), leaves no id behind: the same node and job, sent again,
    are created anew and stored."""
    refuse = {
        "postgresql": (
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN IF NEW.gpu_us = 7000000 THEN "
            "RAISE EXCEPTION 'refused' USING ERRCODE = 'check_violation'; END IF; "
            "RETURN NEW; END $$; "
            "CREATE TRIGGER refuse BEFORE INSERT ON usage_hourly "
            "FOR EACH ROW EXECUTE FUNCTION refuse()",
            "DROP TRIGGER refuse ON usage_hourly; DROP FUNCTION refuse()",
        ),
        "sqlite": (
            "CREATE TRIGGER refuse BEFORE INSERT ON usage_hourly WHEN NEW.gpu_us = 7000000 "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END",
            "DROP TRIGGER refuse",
        ),
    }[db.get_bind().dialect.name]
    app = create_app(settings, clock=clock)
    refused = minute(1, node="node-new", job="job-new")
    refused["gpus"][0]["gpu_seconds"] = "7"
    with TestClient(app, raise_server_exceptions=False) as client:
        db.execute(text(refuse[0]))
        db.commit()
        try:
            first = client.post("/v1/reports", json=refused, headers=auth["collector"])
        finally:
            db.execute(text(refuse[1]))
            db.commit()
        second = client.post("/v1/reports", json=refused, headers=auth["collector"])
        third = client.post(
            "/v1/reports", json=minute(2, "node-new", "job-new"), headers=auth["collector"]
        )

    assert first.status_code == 500, first.text
    assert (second.status_code, third.status_code) == (201, 201), (second.text, third.text)
    assert db.execute(select(Node.name)).scalars().all() == ["node-new"]
    assert db.execute(select(Job.scheduler_job_id)).scalars().all() == ["job-new"]


def test_ids_remembered_from_a_database_since_emptied_are_looked_up_again(
    client: TestClient, db_url: str, db: Session
) -> None:
    """A database restored or emptied under a running server: what it remembered names no
    row any more, and the report is stored all the same, with the ids as they now are."""
    headers = {"Authorization": f"Bearer {make_token(db_url, 'collector', CLUSTER, 'before')}"}
    for seq in (1, 2, 3):  # the second finds the ids committed, and they are remembered
        response = client.post("/v1/reports", json=minute(seq), headers=headers)
        assert response.status_code == 201, response.text
    reset_database(db.get_bind())
    # A new cluster first, so that the ids the service remembered now name other rows or none.
    db.add(Cluster(name="another", created_at=SEEN))
    db.commit()
    headers = {"Authorization": f"Bearer {make_token(db_url, 'collector', CLUSTER, 'after')}"}

    response = client.post("/v1/reports", json=minute(4), headers=headers)

    assert response.status_code == 201, response.text
    node = db.execute(select(Node.cluster_id, Cluster.name).join(Cluster)).one()
    assert tuple(node) == (2, CLUSTER)
    assert db.execute(select(Job.scheduler_job_id)).scalars().all() == ["7"]
