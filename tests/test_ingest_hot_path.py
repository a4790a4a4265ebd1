"""The single-report hot path: transactions that grow with the load, ids that cost no
statement once known, and never an id from a transaction that was rolled back."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.upsert import KnownIds
from app.main import create_app
from app.models import Cluster, Job, Node
from app.reports.coalesce import Coalescer
from app.reports.schemas import ReportIn
from app.reports.service import Stored
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

    def __call__(self, _session: Any, reports: list[ReportIn]) -> list[Stored]:
        self.batches.append([r.seq for r in reports])
        self.entered.set()
        self.release.wait()
        return [Stored(report_id=r.seq, duplicate=False) for r in reports]


# The coalescer's own work: a real session that stores nothing (the store is recorded).
ENGINE = create_engine("sqlite://")


def empty_session() -> Session:
    return Session(ENGINE)


def submit_in_thread(coalescer: Coalescer, seq: int) -> threading.Thread:
    report_in = ReportIn.model_validate(minute(seq))
    thread = threading.Thread(target=coalescer.submit, args=(empty_session, report_in))
    thread.start()
    return thread


def test_reports_arriving_while_one_is_stored_wait_to_go_together() -> None:
    store = Recorder()
    coalescer = Coalescer(store=store, max_reports=100, gather=0.5)
    store.release.clear()
    first = submit_in_thread(coalescer, 1)
    assert store.entered.wait(10)
    second = submit_in_thread(coalescer, 2)  # queued behind the transaction in progress
    deadline = time.monotonic() + 10
    while not coalescer._queue and time.monotonic() < deadline:
        time.sleep(0.001)
    store.release.set()  # the second is handed the turn and gathers for 0.5 s
    later = [submit_in_thread(coalescer, seq) for seq in (3, 4)]
    for thread in (first, second, *later):
        thread.join(10)

    assert store.batches == [[1], [2, 3, 4]]


def test_reports_arriving_one_at_a_time_never_wait() -> None:
    store = Recorder()
    coalescer = Coalescer(store=store, max_reports=100, gather=600)
    for seq in range(1, 4):
        thread = submit_in_thread(coalescer, seq)
        thread.join(30)  # a wait of its gather would hold it ten minutes
        assert not thread.is_alive()

    assert store.batches == [[1], [2], [3]]


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
