"""Budgets: spent, remaining, burn rates, forecast crossing and state, exactly, per month or
over a range, in USD (energy included) or GPU-hours; the API's rules, audit and `/metrics`."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.calendar import floor_hour
from app.core.config import Settings
from tests.app.metrics.test_metrics import Http, scrape, series
from tests.support import CLUSTER, H800, SettableClock, entry, report

Auth = dict[str, dict[str, str]]
NOW = datetime(2025, 1, 20, 12, 30, tzinfo=UTC)
# (hour, GPUs, GPU-seconds each, job): team red's job r1, team blue's b1, idle capacity.
# Every GPU-second carries 100 J (0.1 kWh per GPU-hour). At $10 per GPU-hour:
USAGE = [
    ("2024-12-31T23", 1, 3600, "r1"),  # last month: in no January figure
    ("2025-01-05T10", 4, 3600, "r1"),  # $40: spent, before either burn window
    ("2025-01-15T10", 1, 1800, "r1"),  # $5: in the 7-day burn, not the 24-hour one
    ("2025-01-20T01", 1, 3600, "r1"),  # $10: in both burns
    ("2025-01-20T01", 1, 3600, "b1"),  # team blue's
    ("2025-01-20T01", 1, 3600, None),  # idle: no one's spend
    ("2025-01-20T12", 1, 900, "r1"),  # $2.50 in the current hour: spent, in no burn yet
]
JOBS = {"r1": {"model": "m-red", "team": "red"}, "b1": {"model": "m-blue", "team": "blue"}}
MONTH_END = "2025-02-01T00:00:00Z"


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, metrics_cache_seconds=0)


def seed(client: Http, auth: Auth) -> None:
    """USAGE on one node, its jobs labelled, H800 at $10 per GPU-hour."""
    rate = {"gpu_model": H800, "usd_per_gpu_hour": "10", "effective_from": "2024-12-01T00:00:00Z"}
    assert client.post("/v1/rates", json=rate, headers=auth["admin"]).status_code == 201
    for seq, (hour, gpus, seconds, job) in enumerate(USAGE, start=1):
        start = datetime.fromisoformat(f"{hour}:00:00+00:00")
        body = report(
            seq,
            start=f"{start:%Y-%m-%dT%H:%M:%SZ}",
            end=f"{start + timedelta(seconds=seconds):%Y-%m-%dT%H:%M:%SZ}",
            gpus=[
                entry(seq * 8 + n, job_id=job, gpu_seconds=seconds, energy_j=100 * seconds)
                for n in range(gpus)
            ],
        )
        response = client.post("/v1/reports", json=body, headers=auth["collector"])
        assert response.status_code == 201, response.text
    for job_id, labels in JOBS.items():
        response = client.put(f"/v1/jobs/{CLUSTER}/{job_id}", json=labels, headers=auth["admin"])
        assert response.status_code in (200, 201), response.text


def burning_budget(client: Http, auth: Auth, *, now: datetime) -> None:
    """A budget with every series `/metrics` has for one: the cluster's job 91234 spent in
    the hour before `now`, so the budget burns and has a forecast crossing (for the tests of
    the shipped alerts and dashboards, on usage from
    `tests.app.metrics.test_metrics.seed_usage`)."""
    hour = floor_hour(now) - timedelta(hours=1)
    spent = report(
        1,
        node="node-budget",
        start=f"{hour:%Y-%m-%dT%H:%M:%SZ}",
        end=f"{hour + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}",
        gpus=[entry(99, gpu_seconds=3600, energy_j=360000)],
    )
    assert client.post("/v1/reports", json=spent, headers=auth["collector"]).status_code == 201
    # A range, so that the crossing (in some 4 days) falls within it whatever the date.
    bounds = {"starts_at": hour - timedelta(hours=23), "ends_at": hour + timedelta(days=30)}
    budget = {
        "scope": "cluster",
        "value": CLUSTER,
        "period": "range",
        "unit": "usd",
        "amount": "10",
        **{k: f"{v:%Y-%m-%dT%H:%M:%SZ}" for k, v in bounds.items()},
    }
    response = client.put("/v1/budgets/fleet", json=budget, headers=auth["admin"])
    assert response.status_code == 201, response.text
    assert response.json()["forecast_crossing"] is not None, response.json()


def put(client: Http, auth: Auth, name: str, expected: int = 201, **body: Any) -> Any:
    response = client.put(f"/v1/budgets/{name}", json=body, headers=auth["admin"])
    assert response.status_code == expected, response.text
    return response.json()


def monthly(amount: str, *, scope: str = "team", value: str = "red", unit: str = "usd") -> Any:
    return {"scope": scope, "value": value, "period": "month", "unit": unit, "amount": amount}


def figures(budget: dict[str, Any]) -> tuple[Any, ...]:
    keys = (
        "spent",
        "remaining",
        "percent_used",
        "burn_per_day_24h",
        "burn_per_day_7d",
        "forecast_crossing",
        "at_80_percent",
        "crossing_within_7_days",
        "state",
    )
    return tuple(budget[key] for key in keys)


@pytest.fixture
def seeded(client: TestClient, auth: Auth, clock: SettableClock) -> TestClient:
    clock.moment = NOW
    seed(client, auth)
    return client


def test_each_state_of_a_monthly_usd_budget_exactly(seeded: TestClient, auth: Auth) -> None:
    # Spent $57.50 this month; burn $10 a day over the last 24 h, $15 / 7 over 7 days.
    burns = ("10", "2.142857143")
    cases = {
        # 94.25 days of burn left: after the month's end, so no forecast.
        "ok": ("1000", ("942.5", "5.75", *burns, None, False, False, "ok")),
        # 9.25 days: a crossing within the month, not within 7 days.
        "later": ("150", ("92.5", "38.33", *burns, "2025-01-29T18:30:00Z", False, False, "ok")),
        # 4.25 days.
        "forecast": (
            "100",
            ("42.5", "57.5", *burns, "2025-01-24T18:30:00Z", False, True, "forecast"),
        ),
        # 82.14 % and a crossing in 1.25 days: both flags, and warning is the state.
        "warning": ("70", ("12.5", "82.14", *burns, "2025-01-21T18:30:00Z", True, True, "warning")),
        # A millionth of a dollar left runs out in 8.64 ms: the crossing is the next second.
        "edge": (
            "57.500001",
            ("0.000001", "100", *burns, "2025-01-20T12:30:01Z", True, True, "warning"),
        ),
        "exceeded": ("57.5", ("0", "100", *burns, None, True, False, "exceeded")),
        "over": ("50", ("-7.5", "115", *burns, None, True, False, "exceeded")),
    }
    for name, (amount, _) in cases.items():
        created = put(seeded, auth, name, **monthly(amount))
        assert (created["name"], created["amount"], created["unit"]) == (name, amount, "usd")

    listed = seeded.get("/v1/budgets", headers=auth["viewer"])

    assert listed.status_code == 200, listed.text
    by_name = {budget["name"]: budget for budget in listed.json()}
    assert list(by_name) == sorted(cases)
    for name, (_, expected) in cases.items():
        assert figures(by_name[name]) == ("57.5", *expected), name
        assert (by_name[name]["window_start"], by_name[name]["window_end"]) == (
            "2025-01-01T00:00:00Z",
            MONTH_END,
        )
        assert by_name[name]["as_of"] == "2025-01-20T12:30:00Z"
    one = seeded.get("/v1/budgets/forecast", headers=auth["viewer"]).json()
    assert one == by_name["forecast"]


def test_model_and_cluster_budgets_in_gpu_hours(seeded: TestClient, auth: Auth) -> None:
    put(seeded, auth, "red-model", **monthly("10", scope="model", value="m-red", unit="gpu_hours"))
    # Both teams' jobs on the cluster, never its idle capacity.
    put(seeded, auth, "cluster", **monthly("8", scope="cluster", value=CLUSTER, unit="gpu_hours"))
    put(seeded, auth, "elsewhere", **monthly("8", scope="cluster", value="x", unit="gpu_hours"))

    model = seeded.get("/v1/budgets/red-model", headers=auth["viewer"]).json()
    cluster = seeded.get("/v1/budgets/cluster", headers=auth["viewer"]).json()
    elsewhere = seeded.get("/v1/budgets/elsewhere", headers=auth["viewer"]).json()

    # 4 + 0.5 + 1 + 0.25 GPU-hours; 1 a day; 1.5 / 7. 4.25 left: 4.25 days.
    assert figures(model) == (
        "5.75",
        "4.25",
        "57.5",
        "1",
        "0.214285714",
        "2025-01-24T18:30:00Z",
        False,
        True,
        "forecast",
    )
    # Blue's hour too: 6.75 of 8; 2 a day; 2.5 / 7; 1.25 left, 15 hours.
    assert figures(cluster) == (
        "6.75",
        "1.25",
        "84.38",
        "2",
        "0.357142857",
        "2025-01-21T03:30:00Z",
        True,
        True,
        "warning",
    )
    assert figures(elsewhere) == ("0", "8", "0", "0", "0", None, False, False, "ok")


def test_usd_spent_is_the_gpu_hour_cost_energy_shown_apart(seeded: TestClient, auth: Auth) -> None:
    energy = {"usd_per_kwh": "0.2", "effective_from": "2024-12-01T00:00:00Z"}
    assert seeded.post("/v1/energy-rates", json=energy, headers=auth["admin"]).status_code == 201

    budget = put(seeded, auth, "red", **monthly("100"))
    costs = seeded.get(
        "/v1/costs",
        params={"team": "red", "from": "2025-01-01T00:00:00Z", "to": MONTH_END},
        headers=auth["viewer"],
    ).json()["total"]

    # 0.575 kWh at $0.20: $0.115 beside $57.50, never added to it (as the cost API and
    # the FOCUS export, which bills GPU time only); the budget spends the $57.50.
    assert (costs["cost_usd"], costs["energy_cost_usd"]) == ("57.5", "0.115")
    burns = ("10", "2.142857143")
    assert figures(budget) == (
        "57.5",
        "42.5",
        "57.5",
        *burns,
        "2025-01-24T18:30:00Z",
        False,
        True,
        "forecast",
    )


def test_a_range_budget_counts_only_its_hours(seeded: TestClient, auth: Auth) -> None:
    bounds = {"starts_at": "2025-01-15T00:00:00Z", "ends_at": "2025-01-20T06:00:00Z"}
    body = {"scope": "team", "value": "red", "period": "range", "unit": "gpu_hours", **bounds}
    budget = put(seeded, auth, "red-range", **body, amount="2")
    later = {"starts_at": "2025-02-01T00:00:00Z", "ends_at": "2025-03-01T00:00:00Z"}
    future = put(seeded, auth, "red-february", **{**body, **later}, amount="2")

    # 0.5 + 1 GPU-hours; the 24 h burn reads 12:00 to 06:00 (the range's end), the 7 days
    # the range from its start. 0.5 left at 1 a day runs out after the range: no forecast.
    assert figures(budget) == ("1.5", "0.5", "75", "1", "0.214285714", None, False, False, "ok")
    assert (budget["window_start"], budget["window_end"]) == tuple(bounds.values())
    assert (budget["starts_at"], budget["ends_at"]) == tuple(bounds.values())
    assert figures(future) == ("0", "2", "0", "0", "0", None, False, False, "ok")


def test_burn_rates_stay_inside_the_window_as_time_passes(
    seeded: TestClient, auth: Auth, clock: SettableClock
) -> None:
    put(seeded, auth, "red", **monthly("100"))

    clock.moment = datetime(2025, 1, 25, 12, 30, tzinfo=UTC)
    quiet = seeded.get("/v1/budgets/red", headers=auth["viewer"]).json()
    clock.moment = datetime(2025, 2, 1, 0, 30, tzinfo=UTC)
    february = seeded.get("/v1/budgets/red", headers=auth["viewer"]).json()

    # No spend in the last 24 h: no forecast; the 7 days hold $10 and $2.50.
    assert figures(quiet) == ("57.5", "42.5", "57.5", "0", "1.785714286", None, False, False, "ok")
    # A new month: January's spend and its last hours are outside the window.
    assert figures(february) == ("0", "100", "0", "0", "0", None, False, False, "ok")
    assert (february["window_start"], february["window_end"]) == (MONTH_END, "2025-03-01T00:00:00Z")


def test_metrics_expose_each_budget_as_the_api_shows_it(seeded: TestClient, auth: Auth) -> None:
    put(seeded, auth, "forecast", **monthly("100"))
    put(seeded, auth, "exceeded", **monthly("50"))
    put(seeded, auth, "hours", **monthly("10", scope="model", value="m-red", unit="gpu_hours"))
    put(seeded, auth, "edge", **monthly("71.875"))  # $57.50 spent: exactly 80 %

    samples = scrape(seeded)

    labels = ("budget", "unit")
    assert series(samples, "gpucost_budget_limit", labels) == {
        ("forecast", "usd"): 100.0,
        ("exceeded", "usd"): 50.0,
        ("hours", "gpu_hours"): 10.0,
        ("edge", "usd"): 71.875,
    }
    assert series(samples, "gpucost_budget_spent", labels) == {
        ("forecast", "usd"): 57.5,
        ("exceeded", "usd"): 57.5,
        ("hours", "gpu_hours"): 5.75,
        ("edge", "usd"): 57.5,
    }
    # The alert's series, decided exactly by the service.
    assert series(samples, "gpucost_budget_at_80_percent", labels) == {
        ("forecast", "usd"): 0.0,
        ("exceeded", "usd"): 1.0,
        ("hours", "gpu_hours"): 0.0,
        ("edge", "usd"): 1.0,
    }
    assert series(samples, "gpucost_budget_burn_per_day", (*labels, "window")) == {
        ("forecast", "usd", "24h"): 10.0,
        ("forecast", "usd", "7d"): float(Decimal("2.142857143")),
        ("exceeded", "usd", "24h"): 10.0,
        ("exceeded", "usd", "7d"): float(Decimal("2.142857143")),
        ("hours", "gpu_hours", "24h"): 1.0,
        ("hours", "gpu_hours", "7d"): float(Decimal("0.214285714")),
        ("edge", "usd", "24h"): 10.0,
        ("edge", "usd", "7d"): float(Decimal("2.142857143")),
    }
    crossing = datetime(2025, 1, 24, 18, 30, tzinfo=UTC).timestamp()
    # None for the exceeded budget: it has crossed.
    assert series(samples, "gpucost_budget_forecast_crossing_timestamp_seconds", labels) == {
        ("forecast", "usd"): crossing,
        ("hours", "gpu_hours"): crossing,
        # $14.375 left at $10 a day: 34.5 hours after 2025-01-20 12:30.
        ("edge", "usd"): datetime(2025, 1, 21, 23, 0, tzinfo=UTC).timestamp(),
    }
    end = datetime(2025, 2, 1, tzinfo=UTC).timestamp()
    assert set(series(samples, "gpucost_budget_window_end_timestamp_seconds", labels).values()) == {
        end
    }
