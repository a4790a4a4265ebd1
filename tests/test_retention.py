"""Retention: raw usage past its age is pruned (whole months on PostgreSQL), totals stay."""

from datetime import UTC, datetime

from fastapi.testclient import TestClient
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.cli import cli
from app.models import AuditEntry, Report, Usage
from app.retention.service import prune_raw
from tests.support import SettableClock, entry, report

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

    with db.begin():
        pruned = prune_raw(db, now=clock.moment, retention_days=100, actor="test")

    assert pruned.cutoff == datetime(2025, 2, 21, tzinfo=UTC)
    assert (pruned.usage_rows_deleted, pruned.reports_deleted) >= (0, 1)
    assert db.execute(select(func.count()).select_from(Usage)).scalar_one() == 1
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
    assert result.stdout.endswith(" and 2 reports deleted\n")  # rows go with partitions on PG
    assert totals(client, auth) == before
