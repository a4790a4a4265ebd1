"""Retention: raw usage past its age is folded into GPU-hour records and pruned (emptied months
dropped whole on PostgreSQL); totals stay, and a job's GPU-hours read the same."""

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, func, inspect, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.cli import cli
from app.core.partitions import ensure_partitions
from app.models import GPU_HOURS, USAGE, AuditEntry, Gpu, HourlyUsage, Job, Report
from app.retention.service import Pruned, prune_raw
from tests.support import CLUSTER, SettableClock, entry, gpu_uuid, report, transactions_on

Auth = dict[str, dict[str, str]]
JANUARY = report(
    1, start="2025-01-10T10:00:00Z", end="2025-01-10T11:00:00Z", gpus=[entry(0, gpu_seconds=3600)]
)
MARCH = report(
    2, start="2025-03-10T10:00:00Z", end="2025-03-10T11:00:00Z", gpus=[entry(0, gpu_seconds=1800)]
)


def totals(client: TestClient, auth: Auth) -> dict:
    return client.get("/v1/costs", params={"group_by": "month,job"}, headers=auth["viewer"]).json()


def test_prune_drops_old_raw_usage_and_changes_no_total(
    client: TestClient, auth: Auth, db: Session, clock: SettableClock, backend: str
) -> None:
    clock.moment = datetime(2025, 6, 1, tzinfo=UTC)
    for body in (JANUARY, MARCH):
        assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201
    before = totals(client, auth)

    pruned = prune_raw(
        transactions_on(db.get_bind()), now=clock.moment, retention_days=100, actor="test"
    )

    assert pruned.cutoff == datetime(2025, 2, 21, tzinfo=UTC)
    assert (pruned.usage_rows_deleted, pruned.reports_deleted) == (1, 1)
    assert db.execute(select(func.count()).select_from(USAGE)).scalar_one() == 1
    assert db.execute(select(Report.seq)).scalars().all() == [2]
    if backend == "postgresql":
        # January's rows were moved into a partition of their own, then dropped whole.
        assert pruned.partitions_dropped == ["usage_p2025_01"]
        assert "usage_p2025_03" in inspect(db.get_bind()).get_table_names()
    assert totals(client, auth) == before
    too_old = client.post("/v1/reports", json=JANUARY, headers=auth["collector"])
    assert too_old.status_code == 422
    assert too_old.json()["errors"][0]["field"] == "start"
    assert (
        client.post("/v1/reports", json=MARCH, headers=auth["collector"]).json()["duplicate"]
        is True
    )
    assert totals(client, auth) == before
    actions = (
        db.execute(select(AuditEntry.action).where(AuditEntry.action == "db.prune")).scalars().all()
    )
    assert actions == ["db.prune"]


def test_cli_prune_is_one_line_and_keeps_totals(
    client: TestClient, auth: Auth, db_url: str, clock: SettableClock
) -> None:
    clock.moment = datetime(2025, 6, 1, tzinfo=UTC)
    for body in (JANUARY, MARCH):
        assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201
    before = totals(client, auth)

    result = CliRunner().invoke(
        cli, ["db", "prune", "--older-than-days", "30"], env={"GPUCOST_DATABASE_URL": db_url}
    )

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("pruned raw usage before ")
    assert result.stdout.endswith(", 2 reports deleted\n")
    assert totals(client, auth) == before


def folded(db: Session) -> dict[tuple[str, str | None, datetime], tuple[int, int, int]]:
    """The GPU-hour records as (GPU uuid, scheduler job id or None, hour) -> sums."""
    rows = db.execute(
        select(
            Gpu.uuid,
            Job.scheduler_job_id,
            GPU_HOURS.c.hour,
            GPU_HOURS.c.gpu_us,
            GPU_HOURS.c.busy_us,
            GPU_HOURS.c.energy_mj,
        )
        .join(Gpu, Gpu.id == GPU_HOURS.c.gpu_id)
        .outerjoin(Job, Job.id == GPU_HOURS.c.job_id)
    ).all()
    db.rollback()  # the read's transaction ends: the next prune begins its own
    records = {
        (uuid, job, hour): (gpu, busy, energy) for uuid, job, hour, gpu, busy, energy in rows
    }
    assert len(records) == len(rows)  # one record per GPU, job and hour
    return records


def hour(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def prune_at(db: Session, now: datetime, days: int) -> None:
    prune_raw(transactions_on(db.get_bind()), now=now, retention_days=days, actor="test")


def test_prune_folds_raw_usage_into_exact_gpu_hours(
    client: TestClient, auth: Auth, db: Session, clock: SettableClock
) -> None:
    clock.moment = datetime(2025, 6, 1, tzinfo=UTC)
    bodies = [
        # 90 s across 11:00 on GPU 0: 60 s in hour 10, 30 in hour 11, split as the rollup
        # splits it (floored cumulative shares); GPU 1 idle in the same report.
        report(
            1,
            start="2025-03-10T10:59:00Z",
            end="2025-03-10T11:00:30Z",
            gpus=[
                entry(0, gpu_seconds=90, util_pct=50, energy_j=1000),
                entry(1, job_id=None, gpu_seconds=90, util_pct=0, energy_j=7),
            ],
        ),
        # The same GPU and job a minute later, in hour 11: added to the same record.
        report(
            2,
            start="2025-03-10T11:00:30Z",
            end="2025-03-10T11:01:30Z",
            gpus=[entry(0, gpu_seconds=60, util_pct=100, energy_j=30)],
        ),
        # Another job on GPU 0 later that hour: a record of its own.
        report(
            3,
            start="2025-03-10T11:10:00Z",
            end="2025-03-10T11:11:00Z",
            gpus=[entry(0, job_id="777", gpu_seconds=60, util_pct=25, energy_j=5)],
        ),
        # The first job again, in a later step of the hour's deletes (fold.STEP): added to
        # its record in the same transaction, not written twice.
        report(
            4,
            start="2025-03-10T11:20:00Z",
            end="2025-03-10T11:21:00Z",
            gpus=[entry(0, gpu_seconds=60, util_pct=100, energy_j=30)],
        ),
    ]
    for body in bodies:
        assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201
    before = totals(client, auth)

    prune_at(db, clock.moment, 30)

    gpu0, gpu1 = gpu_uuid(0), gpu_uuid(1)
    assert folded(db) == {
        (gpu0, "91234", hour("2025-03-10T10:00")): (60_000_000, 30_000_000, 666_666),
        (gpu0, "91234", hour("2025-03-10T11:00")): (
            30_000_000 + 60_000_000 + 60_000_000,
            15_000_000 + 60_000_000 + 60_000_000,
            333_334 + 30_000 + 30_000,
        ),
        (gpu0, "777", hour("2025-03-10T11:00")): (60_000_000, 15_000_000, 5_000),
        (gpu1, None, hour("2025-03-10T10:00")): (60_000_000, 0, 4_666),
        (gpu1, None, hour("2025-03-10T11:00")): (30_000_000, 0, 2_334),
    }
    assert db.execute(select(func.count()).select_from(USAGE)).scalar_one() == 0
    assert db.execute(select(func.count()).select_from(Report)).scalar_one() == 0
    assert totals(client, auth) == before
    # A job's records sum, hour by hour, to what the rollup holds for it.
    rollup = dict(
        db.execute(
            select(HourlyUsage.hour, HourlyUsage.gpu_us)
            .join(Job, Job.id == HourlyUsage.job_id)
            .where(Job.scheduler_job_id == "91234")
        ).all()
    )
    assert rollup == {
        moment: sums[0] for (_, job, moment), sums in folded(db).items() if job == "91234"
    }


def test_a_report_folded_across_two_prunes_is_added_to_not_written_twice(
    client: TestClient, auth: Auth, db: Session, clock: SettableClock
) -> None:
    clock.moment = datetime(2025, 6, 1, tzinfo=UTC)
    # 10:30-11:30, then 11:30-12:00: the first prune (cutoff 11:00) folds the first report,
    # half of it into hour 11; the second adds the other report to that record.
    for seq, (start, end, seconds) in enumerate(
        [("10:30", "11:30", 3600), ("11:30", "12:00", 1800)], start=1
    ):
        body = report(
            seq,
            start=f"2025-03-10T{start}:00Z",
            end=f"2025-03-10T{end}:00Z",
            gpus=[entry(0, gpu_seconds=seconds, util_pct=100, energy_j=seconds)],
        )
        assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201

    prune_at(db, datetime(2025, 3, 10, 11, tzinfo=UTC), 0)
    first = folded(db)
    prune_at(db, datetime(2025, 3, 10, 13, tzinfo=UTC), 0)
    prune_at(db, datetime(2025, 3, 10, 14, tzinfo=UTC), 0)  # nothing left: nothing changes

    gpu0 = gpu_uuid(0)
    at10, at11 = hour("2025-03-10T10:00"), hour("2025-03-10T11:00")
    assert first == {
        (gpu0, "91234", at10): (1_800_000_000,) * 2 + (1_800_000,),
        (gpu0, "91234", at11): (1_800_000_000,) * 2 + (1_800_000,),
    }
    assert folded(db) == {
        (gpu0, "91234", at10): (1_800_000_000,) * 2 + (1_800_000,),
        (gpu0, "91234", at11): (3_600_000_000,) * 2 + (3_600_000,),
    }


def test_a_jobs_gpu_hours_read_the_same_before_during_and_after_pruning(
    client: TestClient, auth: Auth, db: Session, clock: SettableClock
) -> None:
    clock.moment = datetime(2025, 6, 1, tzinfo=UTC)
    for seq, (start, end, seconds) in enumerate(
        [("10:30", "11:30", 3600), ("11:30", "12:00", 1800), ("12:00", "12:01", 60)], start=1
    ):
        body = report(
            seq,
            start=f"2025-03-10T{start}:00Z",
            end=f"2025-03-10T{end}:00Z",
            gpus=[
                entry(0, gpu_seconds=seconds, util_pct=50, energy_j=seconds + 1),
                entry(1, job_id="other", gpu_seconds=seconds),
            ],
        )
        assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201
    url = f"/v1/jobs/{CLUSTER}/91234/gpu-hours"
    window = {"from": "2025-03-10T10:00:00Z", "to": "2025-03-10T13:00:00Z"}

    def read() -> dict:
        response = client.get(url, params=window, headers=auth["viewer"])
        assert response.status_code == 200, response.text
        return response.json()

    raw = read()
    prune_at(db, datetime(2025, 3, 10, 11, tzinfo=UTC), 0)  # folds 10:30-11:30, across 11:00
    cut = read()
    prune_at(db, datetime(2025, 3, 10, 13, tzinfo=UTC), 0)  # folds the rest
    folded_only = read()

    assert raw == cut == folded_only
    gpu0 = gpu_uuid(0)
    assert raw == {
        "cluster": CLUSTER,
        "job_id": "91234",
        "start": "2025-03-10T10:00:00Z",
        "end": "2025-03-10T13:00:00Z",
        "gpu_hours": [
            {
                "hour": f"2025-03-10T{hour}:00:00Z",
                "gpu": gpu0,
                "gpu_model": "NVIDIA H800",
                "gpu_seconds": gpu_seconds,
                "busy_gpu_seconds": busy,
                "energy_j": energy,
            }
            for hour, gpu_seconds, busy, energy in [
                ("10", "1800", "900", "1800.5"),
                ("11", "3600", "1800", "3601.5"),
                ("12", "60", "30", "61"),
            ]
        ],
    }


def test_a_prune_committing_while_a_jobs_gpu_hours_are_read_changes_no_figure(
    client: TestClient, auth: Auth, db: Session, clock: SettableClock
) -> None:
    clock.moment = datetime(2025, 6, 1, tzinfo=UTC)
    pruned_at = datetime(2025, 3, 10, 12, tzinfo=UTC)
    # On PostgreSQL, the months the prune makes partitions for are made first: attaching one
    # waits for every reader of raw usage, the read that the prune runs inside included.
    with db.get_bind().begin() as connection:
        ensure_partitions(connection, pruned_at)
    body = report(
        1,
        start="2025-03-10T10:30:00Z",
        end="2025-03-10T11:30:00Z",
        gpus=[entry(0, gpu_seconds=3600, util_pct=50, energy_j=3600)],
    )
    assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201
    url = f"/v1/jobs/{CLUSTER}/91234/gpu-hours"
    window = {"from": "2025-03-10T10:00:00Z", "to": "2025-03-10T12:00:00Z"}
    before = client.get(url, params=window, headers=auth["viewer"]).json()
    # Once the read has run its first statement on raw usage, a prune folds the report and
    # commits: read in two statements, raw then folded, the hours would be counted twice.
    during, pruned = read_while_pruning(
        lambda: client.get(url, params=window, headers=auth["viewer"]),
        lambda statement: statement.startswith("SELECT") and "reports.period_end" in statement,
        lambda: prune_raw(
            transactions_on(db.get_bind()), now=pruned_at, retention_days=0, actor="t"
        ),
    )

    assert pruned.usage_rows_deleted == 1
    assert during.status_code == 200, during.text
    assert during.json() == before
    assert client.get(url, params=window, headers=auth["viewer"]).json() == before
    assert [(h["hour"], h["gpu_seconds"]) for h in before["gpu_hours"]] == [
        ("2025-03-10T10:00:00Z", "1800"),
        ("2025-03-10T11:00:00Z", "1800"),
    ]


def read_while_pruning(
    read: Callable[[], Any], after: Callable[[str], bool], prune: Callable[[], Pruned]
) -> tuple[Any, Pruned]:
    """What `read` answers when `prune` runs, whole, right after the read's first statement
    that `after` picks; and what the prune did."""
    fired: list[str] = []
    pruned: list[Pruned] = []

    def prune_there(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if fired or not after(statement):  # once: the prune's own statements pass here too
            return
        fired.append(statement)
        worker = threading.Thread(target=lambda: pruned.append(prune()))
        worker.start()
        worker.join()

    event.listen(Engine, "after_cursor_execute", prune_there)
    try:
        answer = read()
    finally:
        event.remove(Engine, "after_cursor_execute", prune_there)
    assert fired and pruned, "the read ran no such statement, or the prune failed"
    return answer, pruned[0]


def test_a_prune_dropping_the_month_while_a_jobs_gpu_hours_are_read_loses_no_hour(
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

    # Right after the read's first statement that looks for the job, January is folded and
    # its partition dropped if it can be: a dropped table is gone from every snapshot, so a
    # snapshot begun before the fold committed would find the hours in neither.
    during, pruned = read_while_pruning(
        lambda: client.get(url, params=window, headers=auth["viewer"]),
        lambda statement: "FROM jobs" in statement,
        lambda: prune_raw(
            transactions_on(db.get_bind()), now=clock.moment, retention_days=100, actor="t"
        ),
    )

    # Dropped, or (held by the statement under way) left for the next prune once its lock
    # wait ran out: either way, every hour.
    assert pruned.usage_rows_deleted == 1
    assert during.json() == before
    assert client.get(url, params=window, headers=auth["viewer"]).json() == before


def test_gpu_hours_refuse_what_they_cannot_answer(
    client: TestClient, auth: Auth, clock: SettableClock
) -> None:
    clock.moment = datetime(2025, 6, 1, tzinfo=UTC)
    body = report(1, start="2025-03-10T10:00:00Z", end="2025-03-10T10:01:00Z")
    assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201
    url = f"/v1/jobs/{CLUSTER}/91234/gpu-hours"
    for params, status, field in [
        ({"from": "2025-03-10T10:00:00Z", "to": "2025-03-10T10:00:00Z"}, 422, "to"),
        ({"from": "2025-03-10T10:00:00Z", "to": "2025-04-10T11:00:00Z"}, 422, "to"),
        ({"from": "2025-03-10T10:30:00Z", "to": "2025-03-10T11:00:00Z"}, 422, "from"),
        ({"from": "2025-03-10T10:00:00Z"}, 422, "to"),
    ]:
        response = client.get(url, params=params, headers=auth["viewer"])
        assert response.status_code == status, (params, response.text)
        assert response.json()["errors"][0]["field"] == field, response.text
    missing = client.get(
        f"/v1/jobs/{CLUSTER}/nope/gpu-hours",
        params={"from": "2025-03-10T10:00:00Z", "to": "2025-03-10T11:00:00Z"},
        headers=auth["viewer"],
    )
    assert missing.status_code == 404


def test_a_resend_racing_the_prune_that_removes_its_report_is_refused_not_counted_again(
    client: TestClient, auth: Auth, db: Session, clock: SettableClock, backend: str
) -> None:
    """The resend's ingest reads the pruned point before the prune commits it; the prune
    then deletes the report and its GPU time before the resend claims its (node, seq): the
    claim and the occupancy check both pass. The mark read again at the end says the report
    is too old: the ingest runs again and refuses it."""
    if backend == "sqlite":
        pytest.skip("SQLite: a prune waits for the ingest's write lock, or the ingest for its")
    clock.moment = datetime(2025, 6, 1, tzinfo=UTC)
    old = report(1, start="2025-03-10T10:00:00Z", end="2025-03-10T10:01:00Z")
    assert client.post("/v1/reports", json=old, headers=auth["collector"]).status_code == 201
    before = totals(client, auth)
    engine = db.get_bind()
    pruned: list[Pruned] = []

    def prune_before_the_claim(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("INSERT INTO reports") and not pruned:
            worker = threading.Thread(
                target=lambda: pruned.append(
                    prune_raw(
                        transactions_on(engine), now=clock.moment, retention_days=30, actor="t"
                    )
                )
            )
            worker.start()
            worker.join()

    event.listen(Engine, "before_cursor_execute", prune_before_the_claim)
    try:
        resent = client.post("/v1/reports", json=old, headers=auth["collector"])
    finally:
        event.remove(Engine, "before_cursor_execute", prune_before_the_claim)

    assert pruned[0].reports_deleted == 1
    assert resent.status_code == 422, resent.text
    assert resent.json()["errors"][0]["field"] == "start"
    assert totals(client, auth) == before
    assert db.execute(select(func.count()).select_from(Report)).scalar_one() == 0
