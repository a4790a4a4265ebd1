"""Closing months: what was booked stays byte for byte; later changes become corrections."""

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import AuditEntry
from tests.support import CLUSTER, SettableClock, entry, report

Auth = dict[str, dict[str, str]]
JANUARY = {"from": "2025-01-01T00:00:00Z", "to": "2025-02-01T00:00:00Z"}
FEBRUARY = {"from": "2025-02-01T00:00:00Z", "to": "2025-03-01T00:00:00Z"}
MARCH = {"from": "2025-03-01T00:00:00Z", "to": "2025-04-01T00:00:00Z"}


def send(
    client: TestClient, auth: Auth, seq: int, start: str, end: str, gpus: list[dict[str, Any]]
) -> None:
    response = client.post(
        "/v1/reports", json=report(seq, start=start, end=end, gpus=gpus), headers=auth["collector"]
    )
    assert response.status_code == 201, response.text


def focus(client: TestClient, auth: Auth, window: dict[str, str], granularity: str = "hour") -> str:
    response = client.get(
        "/v1/exports/focus.csv",
        params={**window, "granularity": granularity},
        headers=auth["viewer"],
    )
    assert response.status_code == 200, response.text
    return response.text


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def cost(client: TestClient, auth: Auth, window: dict[str, str]) -> Decimal:
    return Decimal(
        client.get("/v1/costs", params=window, headers=auth["viewer"]).json()["total"]["cost_usd"]
    )


def close(client: TestClient, auth: Auth, month: str) -> Any:
    return client.post(f"/v1/periods/{month}/close", headers=auth["admin"])


@pytest.fixture
def january(client: TestClient, auth: Auth, clock: SettableClock) -> None:
    clock.moment = datetime(2025, 3, 15, tzinfo=UTC)
    rate = {
        "gpu_model": "NVIDIA H800",
        "usd_per_gpu_hour": "2.00",
        "effective_from": "2025-01-01T00:00:00Z",
    }
    client.post("/v1/rates", json=rate, headers=auth["admin"])
    job = {"model": "llama", "team": "red", "labels": {"cost-center": "cc-42"}}
    client.put(f"/v1/jobs/{CLUSTER}/7", json=job, headers=auth["admin"])
    send(
        client,
        auth,
        1,
        "2025-01-10T10:00:00Z",
        "2025-01-10T11:00:00Z",
        [entry(0, job_id="7", gpu_seconds=3600)],
    )
    send(
        client,
        auth,
        2,
        "2025-02-03T10:00:00Z",
        "2025-02-03T11:00:00Z",
        [entry(0, job_id="7", gpu_seconds=1800)],
    )


def test_closed_month_stays_byte_for_byte_and_corrections_add_up(
    client: TestClient, auth: Auth, january: None, db: Session
) -> None:
    before_close = focus(client, auth, JANUARY)
    closed = close(client, auth, "2025-01")
    assert closed.status_code == 200, closed.text
    assert closed.json()["state"] == "closed"
    booked_bytes = focus(client, auth, JANUARY)
    assert booked_bytes == before_close

    # After closing: a late report for January, the job re-labelled, January's rate restated.
    send(
        client,
        auth,
        3,
        "2025-01-20T00:00:00Z",
        "2025-01-20T01:00:00Z",
        [entry(1, job_id="7", gpu_seconds=3600)],
    )
    client.put(f"/v1/jobs/{CLUSTER}/7", json={"team": "blue"}, headers=auth["admin"])
    rate = {
        "gpu_model": "NVIDIA H800",
        "usd_per_gpu_hour": "2.50",
        "effective_from": "2025-01-01T00:00:00Z",
    }
    assert client.post("/v1/rates", json=rate, headers=auth["admin"]).status_code == 200

    assert focus(client, auth, JANUARY) == booked_bytes
    booked_january = sum(Decimal(r["BilledCost"]) for r in rows(booked_bytes))
    current_january = cost(client, auth, JANUARY)
    assert (booked_january, current_january) == (Decimal("2"), Decimal("5"))

    february = rows(focus(client, auth, FEBRUARY))
    corrections = [r for r in february if r["ChargeClass"] == "Correction"]
    assert sum(Decimal(r["BilledCost"]) for r in corrections) == current_january - booked_january
    assert {r["BillingPeriodStart"] for r in corrections} == {"2025-02-01T00:00:00Z"}
    assert {r["ChargePeriodStart"] for r in corrections} == {
        "2025-01-10T10:00:00Z",
        "2025-01-20T00:00:00Z",
    }
    # What moved where: red's booked $2 taken back, blue charged at the restated rate.
    assert sorted((r["SubAccountName"], r["BilledCost"]) for r in corrections) == [
        ("blue", "2.500000000"),
        ("blue", "2.500000000"),
        ("red", "-2.000000000"),
    ]
    usage = [r for r in february if r["ChargeClass"] == ""]
    assert (
        sum(Decimal(r["BilledCost"]) for r in usage)
        == cost(client, auth, FEBRUARY)
        == Decimal("1.25")
    )

    period = client.get("/v1/periods/2025-01", headers=auth["viewer"]).json()
    assert (period["booked"]["cost_usd"], period["current"]["cost_usd"]) == ("2", "5")
    assert period["corrections_booked"]["cost_usd"] == "0"  # billed in February, not booked yet
    audit = db.execute(
        select(AuditEntry.action, AuditEntry.target).where(AuditEntry.action == "period.close")
    ).all()
    assert [tuple(a) for a in audit] == [("period.close", "period:2025-01")]


def test_corrections_are_booked_once_when_their_month_closes(
    client: TestClient, auth: Auth, january: None, clock: SettableClock
) -> None:
    close(client, auth, "2025-01")
    send(
        client,
        auth,
        3,
        "2025-01-20T00:00:00Z",
        "2025-01-20T01:00:00Z",
        [entry(1, job_id="7", gpu_seconds=3600)],
    )
    february_before = focus(client, auth, FEBRUARY, "day")

    assert close(client, auth, "2025-02").status_code == 200
    assert focus(client, auth, FEBRUARY, "day") == february_before
    # The late hour was booked in February: March owes nothing for it, only new news.
    assert [r for r in rows(focus(client, auth, MARCH)) if r["ChargeClass"]] == []
    send(
        client,
        auth,
        4,
        "2025-01-21T00:00:00Z",
        "2025-01-21T00:30:00Z",
        [entry(2, job_id="7", gpu_seconds=1800)],
    )
    march = [r for r in rows(focus(client, auth, MARCH)) if r["ChargeClass"] == "Correction"]
    assert [(r["ChargePeriodStart"], r["BilledCost"]) for r in march] == [
        ("2025-01-21T00:00:00Z", "1.000000000")
    ]

    january = client.get("/v1/periods/2025-01", headers=auth["viewer"]).json()
    assert (
        january["booked"]["cost_usd"],
        january["corrections_booked"]["cost_usd"],
        january["current"]["cost_usd"],
    ) == ("2", "2", "5")
    listed = client.get("/v1/periods", headers=auth["viewer"]).json()
    # From the books' start to the first open month, where the next corrections go.
    assert [(p["month"], p["state"]) for p in listed["periods"]] == [
        ("2025-01", "closed"),
        ("2025-02", "closed"),
        ("2025-03", "open"),
    ]
    assert (listed["first"], listed["last"], listed["next_from"]) == ("2025-01", "2025-03", None)


def test_close_rules(client: TestClient, auth: Auth, january: None, clock: SettableClock) -> None:
    out_of_order = close(client, auth, "2025-02")
    not_over = close(client, auth, "2025-03")
    bad = close(client, auth, "2025-13")
    viewer = client.post("/v1/periods/2025-01/close", headers=auth["viewer"])
    first = close(client, auth, "2025-01")
    again = close(client, auth, "2025-01")

    assert (
        out_of_order.status_code == 409
        and "close 2025-01 before 2025-02" in out_of_order.json()["detail"]
    )
    assert not_over.status_code == 409 and "not over yet" in not_over.json()["detail"]
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "month"
    assert viewer.status_code == 403
    assert first.status_code == 200
    assert again.status_code == 409 and again.json()["detail"] == "2025-01 is already closed"


def test_cli_exports_a_closed_month_to_a_file(
    client: TestClient, auth: Auth, january: None, db_url: str, tmp_path
) -> None:
    from typer.testing import CliRunner

    from app.cli import cli

    close(client, auth, "2025-01")
    target = tmp_path / "january.csv"
    runner = CliRunner()
    written = runner.invoke(
        cli,
        ["export", "focus", "--month", "2025-01", "--granularity", "hour", "-o", str(target)],
        env={"GPUCOST_DATABASE_URL": db_url},
    )
    summary = runner.invoke(
        cli, ["export", "costs", "--month", "2025-01"], env={"GPUCOST_DATABASE_URL": db_url}
    )
    wrong = runner.invoke(
        cli, ["export", "focus", "--month", "January"], env={"GPUCOST_DATABASE_URL": db_url}
    )

    assert written.exit_code == 0, written.output
    assert target.read_bytes().decode() == focus(client, auth, JANUARY)
    assert summary.exit_code == 0 and summary.stdout.splitlines()[1].startswith(
        "2025-01,usage,2025-01,red,llama"
    )
    assert wrong.exit_code == 1 and "'January' is not a month like 2025-01" in wrong.stderr
