"""Exact figures, rounded once where shown, in every route and export; sums past 2^63."""

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.cli import cli
from app.core.config import Settings
from tests.app.metrics.test_metrics import scrape, series
from tests.support import CLUSTER, SettableClock, entry, report

Auth = dict[str, dict[str, str]]
MONTH = {"from": "2025-01-01T00:00:00Z", "to": "2025-02-01T00:00:00Z"}
ATTRIBUTION = ("cluster", "model", "phase", "team", "gpu_model")
# Past 2^63 in three hours: each a value SQLite's sum() of integers would overflow on.
HUGE = 2**62 + 123_456_789


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, metrics_cache_seconds=0)


def priced(client: TestClient, auth: Auth, usd: str) -> None:
    rate = {"gpu_model": "NVIDIA H800", "usd_per_gpu_hour": usd,
            "effective_from": "2025-01-01T00:00:00Z"}  # fmt: skip
    assert client.post("/v1/rates", json=rate, headers=auth["admin"]).status_code == 201


def labelled(client: TestClient, auth: Auth, job_id: str, model: str) -> None:
    labels = {"model": model, "phase": "pre-training", "team": "red"}
    response = client.put(f"/v1/jobs/{CLUSTER}/{job_id}", json=labels, headers=auth["admin"])
    assert response.status_code in (200, 201), response.text


def three_thirds(client: TestClient, auth: Auth) -> None:
    """One job on one GPU for 20 minutes in each of three hours."""
    for seq, hour in enumerate((10, 11, 12), start=1):
        body = report(
            seq,
            start=f"2025-01-06T{hour}:00:00Z",
            end=f"2025-01-06T{hour}:20:00Z",
            gpus=[entry(0, job_id="thirds", gpu_seconds=1200, energy_j=360000)],
        )
        assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201


def get(client: TestClient, auth: Auth, path: str, **params: str) -> Any:
    response = client.get(path, params=params, headers=auth["viewer"])
    assert response.status_code == 200, response.text
    return response.json()


def csv_rows(client: TestClient, auth: Auth, name: str, **params: str) -> list[dict[str, str]]:
    response = client.get(f"/v1/exports/{name}", params=params, headers=auth["viewer"])
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.text)))


def test_three_thirds_of_an_hour_cost_one_hour_exactly_everywhere(
    client: TestClient, auth: Auth, db_url: str
) -> None:
    priced(client, auth, "2.35")
    labelled(client, auth, "thirds", "thirds")
    three_thirds(client, auth)

    for group_by in ("", "job", "day", "model,phase", "month,team,gpu_model"):
        body = get(client, auth, "/v1/costs", group_by=group_by)
        assert [(r["gpu_hours"], r["cost_usd"], r["energy_kwh"]) for r in body["rows"]] == [
            ("1", "2.35", "0.3")
        ], group_by
        assert (body["total"]["gpu_hours"], body["total"]["cost_usd"]) == ("1", "2.35")
    model = get(client, auth, "/v1/models/thirds/cost")
    assert [(p["gpu_hours"], p["cost_usd"]) for p in model["phases"]] == [("1", "2.35")]
    assert (model["total"]["gpu_hours"], model["total"]["cost_usd"]) == ("1", "2.35")
    assert model["total"]["peak_gpus"] == "0.333333333"

    for granularity in ("day", "month"):
        (row,) = csv_rows(client, auth, "focus.csv", granularity=granularity, **MONTH)
        # Every FOCUS number with its column's decimals (9; 15 for ListCost).
        assert (row["PricingQuantity"], row["BilledCost"], row["ListCost"]) == (
            "1.000000000", "2.350000000", "2.350000000000000"
        )  # fmt: skip
    hourly = csv_rows(client, auth, "focus.csv", granularity="hour", **MONTH)
    # Each third within a billionth of its exact value; together exactly one hour.
    assert [r["PricingQuantity"] for r in hourly] == ["0.333333333", "0.333333334", "0.333333333"]
    assert [r["BilledCost"] for r in hourly] == ["0.783333333", "0.783333334", "0.783333333"]
    assert sum(Decimal(r["BilledCost"]) for r in hourly) == Decimal("2.35")
    assert sum(Decimal(r["ListCost"]) for r in hourly) == Decimal("2.35")
    for row in hourly:
        assert Decimal(row["ListCost"]) == Decimal(row["PricingQuantity"]) * Decimal("2.35")
    (summary,) = csv_rows(client, auth, "costs.csv", **MONTH)
    assert (summary["gpu_hours"], summary["cost_usd"], summary["energy_kwh"]) == (
        "1",
        "2.35",
        "0.3",
    )

    samples = scrape(client)
    key = (CLUSTER, "thirds", "pre-training", "red", "NVIDIA H800")
    assert series(samples, "gpucost_cost_usd", ATTRIBUTION)[key] == 2.35
    assert series(samples, "gpucost_attributed_gpu_seconds", ATTRIBUTION)[key] == 3600.0

    env = {"GPUCOST_DATABASE_URL": db_url}
    as_json = CliRunner().invoke(cli, ["report", "thirds", "--format", "json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    total = json.loads(as_json.stdout)["total"]
    assert (total["gpu_hours"], total["cost_usd"]) == ("1", "2.35")
    # Below 1K GPU-hours and $1M the table shows its figures in full, not 0K and $0.00M.
    table = CliRunner().invoke(cli, ["report", "thirds", "--format", "markdown"], env=env)
    assert table.stdout.splitlines()[-1].endswith("| $2.35 |"), table.stdout
    assert "| 1 |" in table.stdout.splitlines()[-2], table.stdout


def exact(numerator: int, denominator: int) -> str:
    """numerator / denominator to nine decimals, half to even, computed apart from the app."""
    with localcontext() as context:
        context.prec = 80
        value = (Decimal(numerator) / Decimal(denominator)).quantize(Decimal("1e-9"))
    return format(value.normalize(), "f")


def test_sums_past_2_to_the_63_read_back_exactly(
    client: TestClient, auth: Auth, db: Session, clock: SettableClock
) -> None:
    clock.moment = datetime(2025, 4, 1, tzinfo=UTC)
    priced(client, auth, "2")
    labelled(client, auth, "huge", "huge")
    months = ("2025-01", "2025-02", "2025-03")
    for seq, month in enumerate(months, start=1):
        body = report(
            seq,
            start=f"{month}-06T10:00:00Z",
            end=f"{month}-06T10:01:00Z",
            gpus=[entry(0, job_id="huge")],
        )
        assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201
    # Stored values no report could carry, one a month, so that every sum of them passes
    # 2^63 on every level of the rollup (each level's one row a month, set alike).
    for table in ("usage_hourly", "usage_daily", "usage_monthly"):
        db.execute(text(f"UPDATE {table} SET gpu_us = :v, busy_us = :v, energy_mj = :v"),
                   {"v": HUGE})  # fmt: skip
    db.execute(text("UPDATE usage_model_hourly SET gpu_us = :v"), {"v": HUGE})
    db.commit()
    total = 3 * HUGE
    assert total >= 2**63
    hours, cost = exact(total, 3_600_000_000), exact(total * 2_000_000, 3_600_000_000 * 10**6)
    seconds = format((Decimal(total) / 10**6).normalize(), "f")
    one_hours = exact(HUGE, 3_600_000_000)
    one_cost = exact(HUGE * 2_000_000, 3_600_000_000 * 10**6)
    quarter = {"from": "2025-01-01T00:00:00Z", "to": "2025-04-01T00:00:00Z"}

    body = get(client, auth, "/v1/costs", group_by="team")
    for figures in (*body["rows"], body["total"]):
        assert (figures["gpu_seconds"], figures["gpu_hours"], figures["busy_gpu_hours"]) == (
            seconds, hours, hours
        )  # fmt: skip
        assert (figures["energy_kwh"], figures["cost_usd"]) == (hours, cost)
    by_day = get(client, auth, "/v1/costs", group_by="day,team", **quarter)
    assert [(r["day"], r["gpu_hours"], r["cost_usd"]) for r in by_day["rows"]] == [
        (f"{month}-06", one_hours, one_cost) for month in months
    ]
    assert (by_day["total"]["gpu_hours"], by_day["total"]["cost_usd"]) == (hours, cost)
    model = get(client, auth, "/v1/models/huge/cost")
    assert (model["total"]["gpu_hours"], model["total"]["cost_usd"]) == (hours, cost)
    assert model["total"]["peak_gpus"] == one_hours

    rows = csv_rows(client, auth, "focus.csv", granularity="month", **quarter)
    assert [(Decimal(r["PricingQuantity"]), Decimal(r["BilledCost"])) for r in rows] == [
        (Decimal(one_hours), Decimal(one_cost)) for _ in months
    ]
    assert [Decimal(r["ListCost"]) for r in rows] == [Decimal(one_hours) * 2 for _ in months]
    hourly = csv_rows(client, auth, "focus.csv", granularity="hour", **quarter)
    assert [Decimal(r["BilledCost"]) for r in hourly] == [Decimal(one_cost) for _ in months]
    summary = csv_rows(client, auth, "costs.csv", **quarter)
    assert [(r["gpu_hours"], r["cost_usd"], r["energy_kwh"]) for r in summary] == [
        (one_hours, one_cost, one_hours) for _ in months
    ]

    samples = scrape(client)
    fleet = (CLUSTER, "NVIDIA H800")
    counted = series(samples, "gpucost_gpu_seconds_total", ("cluster", "gpu_model"))
    assert counted[fleet] == float(Decimal(seconds))
    energy = series(samples, "gpucost_energy_joules_total", ("cluster", "gpu_model"))
    assert energy[fleet] == float(Decimal(total) / 1000)
    key = (CLUSTER, "huge", "pre-training", "red", "NVIDIA H800")
    assert series(samples, "gpucost_cost_usd", ATTRIBUTION)[key] == float(Decimal(cost))
