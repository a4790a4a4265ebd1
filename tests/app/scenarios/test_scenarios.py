"""Price scenarios: the TCO formula, costs under a scenario (price and TCO), effective
dates, GPU-model prices over general ones, the books' prices where a scenario has none,
and the books themselves untouched."""

from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.cli.demo_scenarios import OWNED  # the demo's illustrative TCO inputs
from app.core.config import Settings
from app.models import Scenario, ScenarioPrice
from app.scenarios import _tco as tco
from tests.app.costs.test_costs import Auth, costs, hour_report, label_job, send, set_rate
from tests.support import DEFAULT_NOW, entry

A100 = "NVIDIA A100"
H800 = "NVIDIA H800"
KWH = 3_600_000  # joules in a kWh


@pytest.fixture
def settings(db_url: str) -> Settings:
    # Read the database on every scrape, so /metrics shows the latest writes.
    return Settings(database_url=db_url, metrics_cache_seconds=0)


def put_scenario(client: TestClient, auth: Auth, name: str, description: str = "") -> Any:
    body = {"description": description}
    return client.put(f"/v1/scenarios/{name}", json=body, headers=auth["admin"])


def add_price(client: TestClient, auth: Auth, name: str, **body: Any) -> Any:
    return client.post(f"/v1/scenarios/{name}/prices", json=body, headers=auth["admin"])


def priced(client: TestClient, auth: Auth, name: str, **body: Any) -> dict[str, Any]:
    response = add_price(client, auth, name, **body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_the_tco_formula_is_exact_and_rounds_half_to_even_once() -> None:
    # (30,000 + 150 x 48) / (48 x 730) = 37,200 / 35,040 = 1.0616438... USD.
    assert (
        tco.micro_usd_per_gpu_hour(
            purchase_micro_usd=30_000_000_000,
            amortisation_months=48,
            hosting_micro_usd_per_month=150_000_000,
        )
        == 1_061_644
    )
    # One month (730 hours) of 365, 1095 and 1825 micro-USD: 0.5, 1.5 and 2.5 micro-USD.
    halves = [
        tco.micro_usd_per_gpu_hour(
            purchase_micro_usd=p, amortisation_months=1, hosting_micro_usd_per_month=0
        )
        for p in (365, 1095, 1825)
    ]
    assert halves == [0, 2, 2]
    # Hosting only: a month's hosting over a month's hours, whatever the months.
    assert (
        tco.micro_usd_per_gpu_hour(
            purchase_micro_usd=0, amortisation_months=36, hosting_micro_usd_per_month=730_000_000
        )
        == 1_000_000
    )
    assert tco.micro_usd_per_kwh(electricity_micro_usd_per_kwh=80_000, pue_milli=1300) == 104_000
    # 5.5 and 16.5 micro-USD: to the even neighbour, 6 and 16.
    assert tco.micro_usd_per_kwh(electricity_micro_usd_per_kwh=5, pue_milli=1100) == 6
    assert tco.micro_usd_per_kwh(electricity_micro_usd_per_kwh=15, pue_milli=1100) == 16
    assert tco.pue_milli(Decimal("1.3")) == 1300 and tco.pue_of(1300) == Decimal("1.3")


def seed(client: TestClient, auth: Auth) -> None:
    """2025-01-06, job `a` (model m, pre-training): 10:00 and 11:00 on two H800s, a kWh each
    GPU-hour; 11:00 half an hour on an A100 (half a kWh). Books: H800 $2.35 on the card, the
    A100 at the default $2, $0.12 a kWh."""
    assert set_rate(client, auth, "2.35", "2025-01-01T00:00:00Z").status_code == 201
    energy = {"usd_per_kwh": "0.12", "effective_from": "2025-01-01T00:00:00Z"}
    assert client.post("/v1/energy-rates", json=energy, headers=auth["admin"]).status_code == 201
    label_job(client, auth, "a", model="m", phase="pre-training")
    h800 = [entry(g, job_id="a", gpu_seconds=3600, energy_j=KWH) for g in range(2)]
    send(client, auth, hour_report(1, 10, h800))
    a100 = entry(2, job_id="a", gpu_seconds=1800, energy_j=KWH // 2, model=A100)
    send(client, auth, hour_report(2, 11, [*h800, a100]))


def by_gpu(body: dict[str, Any]) -> list[tuple[str, str, str | None, list[str]]]:
    rows = [*body["rows"], {**body["total"], "gpu_model": "total"}]
    return [(r["gpu_model"], r["cost_usd"], r["energy_cost_usd"], r["rate_sources"]) for r in rows]


def test_a_price_scenario_with_a_change_mid_range_and_the_books_where_it_has_no_price(
    client: TestClient, auth: Auth
) -> None:
    seed(client, auth)
    assert put_scenario(client, auth, "rental", "as rented").status_code == 201
    start = "2025-01-01T00:00:00Z"
    priced(client, auth, "rental", gpu_model=H800, effective_from=start,
           usd_per_gpu_hour="2", usd_per_kwh="0.1")  # fmt: skip
    # From 11:00 the H800 is $1.50, with no kWh price of its own: the books' $0.12.
    priced(client, auth, "rental", gpu_model=H800, effective_from="2025-01-06T11:00:00Z",
           usd_per_gpu_hour="1.5")  # fmt: skip

    body = costs(client, auth, group_by="gpu_model", scenario="rental")

    # H800: 2 GPU-hours at $2, 2 at $1.50; 2 kWh at $0.10, 2 at $0.12. The A100 has no
    # price in the scenario: the books' default $2 and $0.12 a kWh, and it says so.
    assert body["scenario"] == "rental"
    assert by_gpu(body) == [
        (A100, "1", "0.06", ["default"]),
        (H800, "7", "0.44", ["scenario"]),
        ("total", "8", "0.5", ["scenario", "default"]),
    ]

    # A general price: the A100 now has one; the H800 keeps its own, which beats it.
    priced(client, auth, "rental", effective_from=start, usd_per_gpu_hour="3", usd_per_kwh="1")
    body = costs(client, auth, group_by="gpu_model", scenario="rental")
    assert by_gpu(body) == [
        (A100, "1.5", "0.5", ["scenario"]),
        (H800, "7", "0.44", ["scenario"]),
        ("total", "8.5", "0.94", ["scenario"]),
    ]

    model = client.get("/v1/models/m/cost", params={"scenario": "rental"}, headers=auth["viewer"])
    assert model.status_code == 200, model.text
    cost = model.json()
    assert (cost["scenario"], cost["total"]["cost_usd"], cost["total"]["energy_cost_usd"]) == (
        "rental",
        "8.5",
        "0.94",
    )
    assert cost["rates"] == [
        {"gpu_model": A100, "usd_per_gpu_hour": "3", "source": "scenario"},
        {"gpu_model": H800, "usd_per_gpu_hour": "1.5", "source": "scenario"},
        {"gpu_model": H800, "usd_per_gpu_hour": "2", "source": "scenario"},
    ]
    # The books, asked without a scenario, as they were.
    books = costs(client, auth, group_by="gpu_model")
    assert books["scenario"] is None
    assert by_gpu(books) == [
        (A100, "1", "0.06", ["default"]),
        (H800, "9.4", "0.48", ["card"]),
        ("total", "10.4", "0.54", ["card", "default"]),
    ]


def test_a_tco_scenario_prices_gpu_hours_and_measured_energy(
    client: TestClient, auth: Auth
) -> None:
    seed(client, auth)
    assert put_scenario(client, auth, "owned-tco").status_code == 201
    price = priced(client, auth, "owned-tco", effective_from="2025-01-01T00:00:00Z", tco=OWNED)

    assert price["basis"] == "tco"
    assert (price["usd_per_gpu_hour"], price["usd_per_kwh"]) == ("1.061644", "0.104")
    assert price["tco"] == {**OWNED, "amortisation_months": 48}
    body = costs(client, auth, group_by="gpu_model", scenario="owned-tco")
    # 4 H800 GPU-hours and half an A100 hour at $1.061644; 4.5 kWh at $0.104.
    assert by_gpu(body) == [
        (A100, "0.530822", "0.052", ["scenario"]),
        (H800, "4.246576", "0.416", ["scenario"]),
        ("total", "4.777398", "0.468", ["scenario"]),
    ]


def metrics_costs(client: TestClient) -> list[str]:
    """The cost series of /metrics (the rest count requests, which these tests make)."""
    text = client.get("/metrics").text
    series = ("gpucost_cost_usd", "gpucost_month_to_date_cost_usd")
    return sorted(line for line in text.splitlines() if line.startswith(series))


def test_scenarios_never_touch_the_books_exports_or_metrics(client: TestClient, auth: Auth) -> None:
    seed(client, auth)
    window = {"from": "2025-01-01T00:00:00Z", "to": "2025-02-01T00:00:00Z"}

    def books() -> tuple[Any, ...]:
        focus = client.get(
            "/v1/exports/focus.csv",
            params={**window, "granularity": "hour"},
            headers=auth["viewer"],
        )
        summary = client.get("/v1/exports/costs.csv", params=window, headers=auth["viewer"])
        assert focus.status_code == summary.status_code == 200
        return (
            costs(client, auth, group_by="team,model,gpu_model"),
            client.get("/v1/models/m/cost", headers=auth["viewer"]).json(),
            focus.content,
            summary.content,
            metrics_costs(client),
        )

    before = books()
    assert put_scenario(client, auth, "owned-tco").status_code == 201
    priced(client, auth, "owned-tco", effective_from="2025-01-01T00:00:00Z", tco=OWNED)
    priced(client, auth, "owned-tco", gpu_model=H800, effective_from="2025-01-01T00:00:00Z",
           usd_per_gpu_hour="9", usd_per_kwh="9")  # fmt: skip

    assert books() == before
    assert [line for line in before[4] if line.startswith("gpucost_cost_usd")]


def test_the_database_refuses_tco_inputs_that_disagree_with_the_basis_and_duplicates(
    db: Session,
) -> None:
    scenario_id = db.execute(
        insert(Scenario)
        .values(name="s", description="", created_at=DEFAULT_NOW, created_by="test")
        .returning(Scenario.id)
    ).scalar_one()
    base = {
        "scenario_id": scenario_id,
        "gpu_model": H800,
        "effective_from": DEFAULT_NOW,
        "micro_usd_per_gpu_hour": 2_000_000,
        "created_at": DEFAULT_NOW,
        "created_by": "test",
    }
    inputs = {
        "purchase_micro_usd": 1,
        "amortisation_months": 1,
        "hosting_micro_usd_per_month": 0,
        "electricity_micro_usd_per_kwh": 0,
        "pue_milli": 1000,
    }
    refused = [
        {**base, "basis": "price", "purchase_micro_usd": 1},  # a given price with TCO inputs
        {**base, "basis": "tco", **inputs, "pue_milli": None},  # TCO without all of them
        {**base, "basis": "tco", **inputs, "pue_milli": 999},  # a PUE below 1
        {**base, "basis": "guess"},
    ]
    for row in refused:
        with pytest.raises(IntegrityError), db.begin_nested():
            db.execute(insert(ScenarioPrice).values(**row))
    db.execute(insert(ScenarioPrice).values(**base, basis="tco", **inputs))
    general = {**base, "gpu_model": None, "basis": "price"}
    db.execute(insert(ScenarioPrice).values(**general))
    for duplicate in ({**base, "basis": "price"}, general):
        with pytest.raises(IntegrityError), db.begin_nested():
            db.execute(insert(ScenarioPrice).values(**duplicate))
    db.rollback()
