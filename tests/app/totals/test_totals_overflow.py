"""Sums past 64 bits: a report that would take any level of the rollup past them is refused
with a 422 and leaves nothing, on both databases, whichever way it comes (alone, in a group
commit, in a batch), and every figure read afterwards is exact; migration 0014 adds SQLite's
CHECK constraints to a database already in use. And `gpucost db check-totals` reads one
snapshot, leaving ingest to go on meanwhile."""

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, text, update
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.cli import cli
from app.core import migrate
from app.core.config import Settings
from app.core.db import create_db_engine
from app.core.errors import OutOfRange
from app.core.sums import INT64_MAX, past_64_bits
from app.main import create_app
from app.models import HourlyUsage
from app.reports._entries import Entry
from app.reports._group_commit import _Waiting
from app.reports.schemas import ReportIn
from app.totals.store import Totals
from tests.app.metrics.test_metrics import parse
from tests.support import CLUSTER, SettableClock, entry, report

Auth = dict[str, dict[str, str]]

OUT_OF_RANGE = {
    "error": "ValidationError",
    "detail": "body: a value is out of the range the database can store",
    "errors": [{"field": "body", "reason": "value out of range"}],
}
ROLLUP = ("usage_hourly", "usage_daily", "usage_monthly", "usage_model_hourly")
# What the month row of job 91234 holds once arranged: 10^7 mJ short of 64 bits, its two
# hours (on two days) each about half of it. A minute's report (41,200,000 mJ) then takes
# the month past 64 bits, and neither its hour nor its day.
HEADROOM = 10**7
FIRST_HOUR = 2**62
SECOND_HOUR = INT64_MAX - HEADROOM - FIRST_HOUR


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, metrics_cache_seconds=0)


def minute(seq: int, day: int, *, job: str = "91234", gpu: int = 0, node: str = "node-017") -> Any:
    start = f"2025-01-{day:02d}T10:00:00Z"
    return report(
        seq, start=start, end=start.replace("10:00:00", "10:01:00"), node=node,
        gpus=[entry(gpu, job_id=job)],
    )  # fmt: skip


def stored(db: Session) -> dict[str, list[Any]]:
    """Every row the refused reports could have touched, as stored."""
    tables = (*ROLLUP, "reports", "usage", "jobs", "nodes", "gpu_occupancy")
    rows = {name: sorted(map(tuple, db.execute(text(f"SELECT * FROM {name}")))) for name in tables}
    db.rollback()
    return rows


@pytest.fixture
def month_near_64_bits(
    client: TestClient, auth: Auth, clock: SettableClock, db: Session, db_url: str
) -> None:
    """Job 91234's January (hours on the 5th and the 6th) 10^7 mJ short of 64 bits, every
    level equal to its hours, as `gpucost db check-totals --repair` sums them."""
    clock.moment = datetime(2025, 1, 20, tzinfo=UTC)
    for seq, day in ((1, 5), (2, 6)):
        assert client.post(
            "/v1/reports", json=minute(seq, day), headers=auth["collector"]
        ).is_success
    for day, energy in ((5, FIRST_HOUR), (6, SECOND_HOUR)):
        hour = datetime(2025, 1, day, 10, tzinfo=UTC)
        db.execute(update(HourlyUsage).where(HourlyUsage.hour == hour).values(energy_mj=energy))
    db.commit()
    env = {"GPUCOST_DATABASE_URL": db_url}
    repaired = CliRunner().invoke(cli, ["db", "check-totals", "--repair"], env=env)
    assert repaired.exit_code == 0, repaired.output
    month = db.execute(text("SELECT energy_mj FROM usage_monthly")).scalar_one()
    db.rollback()
    assert month == INT64_MAX - HEADROOM


def test_a_report_past_64_bits_on_the_month_level_is_422_and_leaves_nothing(
    client: TestClient, auth: Auth, db: Session, db_url: str, month_near_64_bits: None
) -> None:
    before = stored(db)

    alone = client.post("/v1/reports", json=minute(3, 7), headers=auth["collector"])
    together = client.post(
        "/v1/reports:batch",
        json={"reports": [minute(1, 7, job="other", gpu=1, node="node-b"), minute(3, 7)]},
        headers=auth["collector"],
    )

    assert (alone.status_code, alone.json()) == (422, OUT_OF_RANGE)
    assert (together.status_code, together.json()) == (422, OUT_OF_RANGE)
    assert stored(db) == before
    # Another job's report of that month and hour goes on.
    other = minute(1, 7, job="other", gpu=1, node="node-b")
    assert client.post("/v1/reports", json=other, headers=auth["collector"]).status_code == 201

    # Every figure read afterwards exact, on every level.
    job = client.get(f"/v1/jobs/{CLUSTER}/91234", headers=auth["viewer"])
    assert job.status_code == 200, job.text
    energy = Decimal(INT64_MAX - HEADROOM) / 1000
    assert (job.json()["gpu_seconds"], job.json()["energy_j"]) == ("120", str(energy))
    for group_by in ("job", "month", "day"):
        costs = client.get("/v1/costs", params={"group_by": group_by}, headers=auth["viewer"])
        assert costs.status_code == 200, costs.text
        assert costs.json()["total"]["gpu_seconds"] == "180"
    jobs = client.get("/v1/jobs", headers=auth["viewer"])
    assert sorted(j["energy_j"] for j in jobs.json()["jobs"]) == ["41200", str(energy)]
    metrics = parse(client.get("/metrics").text)
    assert metrics[("gpucost_metrics_database_up", frozenset())] == 1.0
    joules = {v for (name, _), v in metrics.items() if name == "gpucost_energy_joules_total"}
    assert joules == {float(energy + 41200)}
    checked = CliRunner().invoke(cli, ["db", "check-totals"], env={"GPUCOST_DATABASE_URL": db_url})
    assert checked.exit_code == 0, checked.output


def test_a_group_commit_stores_the_others_and_refuses_the_one_past_64_bits(
    client: TestClient, auth: Auth, db: Session, month_near_64_bits: None
) -> None:
    app: Any = client.app
    waiting = [
        _Waiting(ReportIn.model_validate(body))
        for body in (
            minute(1, 7, job="a", gpu=1, node="node-a"),
            minute(3, 7),
            minute(1, 7, job="b", gpu=2, node="node-b"),
        )
    ]
    app.state.ingest.group_commit._run(waiting)

    refused = waiting[1].error
    if db.get_bind().dialect.name == "postgresql":
        assert isinstance(refused, DataError)
        assert getattr(refused.orig, "sqlstate", None) == "22003"  # numeric_value_out_of_range
    else:
        assert isinstance(refused, IntegrityError) and past_64_bits(refused)
    assert [w.outcome is not None for w in waiting] == [True, False, True]
    reports = db.execute(
        text("SELECT n.name, r.seq FROM reports r JOIN nodes n ON n.id = r.node_id")
    )
    assert sorted(reports.all()) == [("node-017", 1), ("node-017", 2), ("node-a", 1), ("node-b", 1)]
    months = text(
        "SELECT j.scheduler_job_id, m.energy_mj FROM usage_monthly m JOIN jobs j ON j.id = m.job_id"
    )
    assert sorted(db.execute(months).all()) == [
        ("91234", INT64_MAX - HEADROOM),
        ("a", 41_200_000),
        ("b", 41_200_000),
    ]


def test_a_batch_whose_own_sums_pass_64_bits_is_refused_before_anything_is_sent(
    client: TestClient, auth: Auth, db: Session
) -> None:
    # Beyond what a report may carry (its physical bounds): what the driver could not bind.
    sent = client.post("/v1/reports", json=minute(1, 6), headers=auth["collector"])
    assert sent.status_code == 201, sent.text
    cluster_pk, job_pk = db.execute(text("SELECT cluster_id, id FROM jobs")).one()
    db.rollback()
    start = datetime(2025, 1, 6, 11, tzinfo=UTC)
    end = datetime(2025, 1, 6, 11, 1, tzinfo=UTC)

    def totals(*jobs: int) -> Totals:
        """2^62 mJ for each of `jobs` (0: idle capacity), each on a GPU of its own."""
        entries = [
            (Entry(f"GPU-{gpu}", None, gpu, "NVIDIA H800", 1, 1, "100", 2**62, 0), job)
            for gpu, job in enumerate(jobs)
        ]
        added = Totals()
        added.add(cluster_pk=cluster_pk, start=start, end=end, entries=entries)
        return added

    app: Any = client.app
    statements: list[str] = []
    engine = app.state.engine
    listen = ("before_cursor_execute", lambda *args: statements.append(args[2]))
    event.listen(engine, *listen)
    try:
        with app.state.database.write() as session, pytest.raises(OutOfRange):
            totals(job_pk, job_pk).store(session, {job_pk: ("", "")})
        assert statements == []
        # The batch's totals past 64 bits, but no row's: the job's and idle capacity's.
        with app.state.database.write() as session:
            totals(job_pk, 0).store(session, {job_pk: ("", "")})
    finally:
        event.remove(engine, *listen)
    months = db.execute(text("SELECT job_id, energy_mj FROM usage_monthly ORDER BY id")).all()
    assert months == [(job_pk, 41_200_000 + 2**62), (None, 2**62)]


def test_repair_says_in_one_line_when_hours_sum_past_64_bits(
    client: TestClient, auth: Auth, db: Session, db_url: str, month_near_64_bits: None
) -> None:
    # Never after ingest, which keeps every level within 64 bits; only after hours stored
    # without their month (here by hand).
    hour = datetime(2025, 1, 6, 10, tzinfo=UTC)
    db.execute(update(HourlyUsage).where(HourlyUsage.hour == hour).values(energy_mj=INT64_MAX))
    db.commit()
    before = stored(db)

    env = {"GPUCOST_DATABASE_URL": db_url}
    repaired = CliRunner().invoke(cli, ["db", "check-totals", "--repair"], env=env)

    assert repaired.exit_code == 1
    assert (
        f"error: month 2025-01 cluster 1 job 1 NVIDIA H800: its hours sum to (120000000, "
        f"117000000, {FIRST_HOUR + INT64_MAX}), past the 64 bits a total holds; nothing was "
        "rebuilt"
    ) in " ".join(repaired.output.split())
    assert stored(db) == before


REFUSE = {
    "postgresql": (
        "ALTER TABLE usage ADD CONSTRAINT refuse CHECK (gpu_us <> 7000000)",
        "ALTER TABLE usage DROP CONSTRAINT refuse",
    ),
    "sqlite": (
        "CREATE TRIGGER refuse BEFORE INSERT ON usage WHEN NEW.gpu_us = 7000000 "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END",
        "DROP TRIGGER refuse",
    ),
}


def test_any_other_integrity_error_is_still_a_fault_of_the_service(
    settings: Settings, clock: SettableClock, auth: Auth, db: Session
) -> None:
    refuse, allow = REFUSE[db.get_bind().dialect.name]
    db.execute(text(refuse))
    db.commit()
    refused = report(1, gpus=[entry(0, gpu_seconds=7)])
    try:
        app = create_app(settings, clock=clock)
        with TestClient(app, raise_server_exceptions=False) as client:
            response = client.post("/v1/reports", json=refused, headers=auth["collector"])
    finally:
        db.execute(text(allow))
        db.commit()
    assert response.status_code == 500
    # A CHECK constraint of another kind is not a sum past 64 bits either.
    with pytest.raises(IntegrityError) as negative:
        db.execute(
            text(
                "INSERT INTO jobs (cluster_id, scheduler_job_id, labels, tokens, created_at, "
                "updated_at) VALUES (1, 'x', '{}', -1, :now, :now)"
            ),
            {"now": datetime(2025, 1, 1, tzinfo=UTC)},
        )
    db.rollback()
    assert not past_64_bits(negative.value)


# --- check-totals: one snapshot


def test_check_totals_reads_one_snapshot_while_ingest_commits(
    client: TestClient, auth: Auth, clock: SettableClock, db_url: str, backend: str
) -> None:
    clock.moment = datetime(2025, 1, 20, tzinfo=UTC)
    for seq, day in ((1, 5), (2, 6)):
        assert client.post(
            "/v1/reports", json=minute(seq, day), headers=auth["collector"]
        ).is_success
    in_force: list[tuple[Any, ...]] = []
    ingested: list[int] = []
    thread = threading.get_ident()

    def meanwhile(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if threading.get_ident() != thread or not statement.lstrip().startswith("SELECT"):
            return
        if backend == "postgresql":
            in_force.append(
                cursor.connection.execute(
                    "SELECT current_setting('transaction_isolation'),"
                    " current_setting('transaction_read_only'), now(), pg_backend_pid()"
                ).fetchone()
            )
        if not ingested and "FROM usage_daily" in statement:
            # After the check read the stored days, before it sums their hours: another
            # hour of the 6th, committed (on SQLite, with the check's transaction open).
            later = report(3, start="2025-01-06T12:00:00Z", end="2025-01-06T12:01:00Z")
            sent = client.post("/v1/reports", json=later, headers=auth["collector"])
            ingested.append(sent.status_code)

    event.listen(Engine, "after_cursor_execute", meanwhile)
    try:
        checked = CliRunner().invoke(
            cli, ["db", "check-totals"], env={"GPUCOST_DATABASE_URL": db_url}
        )
    finally:
        event.remove(Engine, "after_cursor_execute", meanwhile)

    assert ingested == [201]
    assert checked.exit_code == 0, checked.output
    # The days, months and model hours as they were before the report.
    assert "(2 day rows, 1 month rows, 2 model rows)" in checked.output
    if backend == "postgresql":
        assert len(in_force) >= 6  # stored and from hours, for three levels
        assert {row[:2] for row in in_force} == {("repeatable read", "on")}
        assert len({row[2:] for row in in_force}) == 1  # one transaction
    again = CliRunner().invoke(cli, ["db", "check-totals"], env={"GPUCOST_DATABASE_URL": db_url})
    assert again.exit_code == 0, again.output
    assert "(2 day rows, 1 month rows, 3 model rows)" in again.output


# --- migration 0014 on an SQLite database in use


@pytest.fixture
def at_0013(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(Settings(database_url=f"sqlite:///{tmp_path / 'in_use.db'}"))
    migrate.upgrade(engine, "0013")
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO clusters (id, name, created_at) VALUES (1, 'c', '2025-01-01')")
        )
    yield engine
    engine.dispose()


def indexes(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        )
        return dict(found.all())


def idle_month(conn: Any, energy_mj: Any) -> None:
    conn.execute(
        text(
            "INSERT INTO usage_monthly (cluster_id, gpu_model, month, gpu_us, busy_us, "
            "energy_mj) VALUES (1, 'NVIDIA H800', '2025-01-01 00:00:00.000000', 0, 0, :e) "
            "ON CONFLICT (cluster_id, gpu_model, month) WHERE job_id IS NULL "
            "DO UPDATE SET energy_mj = energy_mj + excluded.energy_mj"
        ),
        {"e": energy_mj},
    )


def test_migration_0014_refuses_sums_past_64_bits_on_an_sqlite_database_in_use(
    at_0013: Engine,
) -> None:
    with at_0013.begin() as conn:
        idle_month(conn, INT64_MAX - 5)
    kept = indexes(at_0013)

    migrate.upgrade(at_0013, "0014")

    assert migrate.current_revision(at_0013) == "0014"
    assert indexes(at_0013) == kept  # partial unique indexes, as the upserts need them
    with at_0013.begin() as conn:
        assert (
            conn.execute(text("SELECT energy_mj FROM usage_monthly")).scalar_one() == INT64_MAX - 5
        )
        idle_month(conn, 5)  # up to 2^63 - 1: an integer still
    with pytest.raises(IntegrityError) as past, at_0013.begin() as conn:
        idle_month(conn, 1)
    assert past_64_bits(past.value)
    assert "ck_usage_monthly_energy_mj_integer" in str(past.value.orig)
    with at_0013.connect() as conn:
        assert conn.execute(text("SELECT energy_mj FROM usage_monthly")).scalar_one() == INT64_MAX
        for table in ROLLUP:
            checks = conn.execute(
                text("SELECT sql FROM sqlite_master WHERE name = :table"), {"table": table}
            ).scalar_one()
            assert (
                f"CONSTRAINT ck_{table}_gpu_us_integer CHECK (typeof(gpu_us) = 'integer')" in checks
            )


def test_migration_0014_stops_at_sums_already_past_64_bits(at_0013: Engine) -> None:
    with at_0013.begin() as conn:
        idle_month(conn, INT64_MAX)
        idle_month(conn, 1)  # a real, as SQLite made such sums before 0014
        assert conn.execute(text("SELECT typeof(energy_mj) FROM usage_monthly")).scalar() == "real"

    with pytest.raises(RuntimeError, match=r"no longer exact \(usage_monthly: 1 rows\)"):
        migrate.upgrade(at_0013, "0014")
    assert migrate.current_revision(at_0013) == "0013"
