"""A job's GPU-hours read while a prune folds and drops the month they are in: every hour is
read once, raw or folded, never lost with the dropped partition."""

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from app.core.partitions import ensure_partitions
from app.retention.service import Pruned, prune_raw
from tests.support import CLUSTER, SettableClock, entry, report, transactions_on

Auth = dict[str, dict[str, str]]


def test_a_prune_committing_during_the_read_loses_no_hour(
    client: TestClient, auth: Auth, db: Session, clock: SettableClock, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("monthly partitions, dropped once folded, are PostgreSQL's")
    clock.moment = datetime(2025, 6, 1, tzinfo=UTC)
    with db.get_bind().begin() as connection:  # January's partition, as in production
        ensure_partitions(connection, datetime(2025, 1, 1, tzinfo=UTC))
    body = report(
        1,
        start="2025-01-10T10:00:00Z",
        end="2025-01-10T11:00:00Z",
        gpus=[entry(0, gpu_seconds=3600)],
    )
    assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201
    url = f"/v1/jobs/{CLUSTER}/91234/gpu-hours"
    window = {"from": "2025-01-10T10:00:00Z", "to": "2025-01-10T12:00:00Z"}
    before = client.get(url, params=window, headers=auth["viewer"]).json()
    assert len(before["gpu_hours"]) == 1
    fired: list[str] = []
    pruned: list[Pruned] = []

    def prune(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # Right after the read's first statement that looks for the job, the whole prune
        # runs: January folded, then its partition dropped if it can be.
        if fired or "FROM jobs" not in statement:
            return
        fired.append(statement)
        transactions = transactions_on(db.get_bind())
        worker = threading.Thread(
            target=lambda: pruned.append(
                prune_raw(transactions, now=clock.moment, retention_days=100, actor="test")
            )
        )
        worker.start()
        worker.join()

    event.listen(Engine, "after_cursor_execute", prune)
    try:
        during = client.get(url, params=window, headers=auth["viewer"])
    finally:
        event.remove(Engine, "after_cursor_execute", prune)

    # January folded; its partition dropped then, or (read by the statement under way, which
    # holds it) left for the next prune once its lock wait ran out. Either way: every hour.
    assert pruned and pruned[0].usage_rows_deleted == 1
    assert during.json() == before
    assert client.get(url, params=window, headers=auth["viewer"]).json() == before
