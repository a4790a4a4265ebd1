"""A budget's spend is what the books bill for its scope and hours: the cost API's GPU-hour
cost (or GPU-hours) and the FOCUS export's billed cost (or quantity), exactly, whether or not
energy has a price; and reading many budgets costs the database no more than reading a few."""

import csv
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.budgets.service import MAX_BUDGETS
from app.models import Budget
from tests.app.budgets.test_budgets import MONTH_END, NOW, Auth, monthly, put, seed
from tests.support import CLUSTER

JANUARY = {"from": "2025-01-01T00:00:00Z", "to": MONTH_END}


def focus_rows(client: TestClient, auth: Auth) -> list[dict[str, str]]:
    response = client.get("/v1/exports/focus.csv", params=JANUARY, headers=auth["viewer"])
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.text)))


def billed(rows: list[dict[str, str]], scope: str, value: str) -> tuple[Decimal, Decimal]:
    """The FOCUS rows of jobs in scope: billed cost and GPU-hours, summed exactly."""
    chosen = [
        row
        for row in rows
        if row["ResourceType"] == "Job"
        and (
            row["RegionId"] == value
            if scope == "cluster"
            else json.loads(row["Tags"])[f"gpucost/{scope}"] == value
        )
    ]
    assert chosen, (scope, value)
    cost = sum((Decimal(row["BilledCost"]) for row in chosen), Decimal(0))
    return cost, sum((Decimal(row["PricingQuantity"]) for row in chosen), Decimal(0))


def test_spend_is_what_the_cost_api_and_the_focus_export_bill(
    client: TestClient, auth: Auth, clock: Any
) -> None:
    clock.moment = NOW
    seed(client, auth)
    # Energy priced from the 15th only: some of January's hours have an energy cost.
    energy = {"usd_per_kwh": "0.2", "effective_from": "2025-01-15T00:00:00Z"}
    assert client.post("/v1/energy-rates", json=energy, headers=auth["admin"]).status_code == 201
    rows = focus_rows(client, auth)
    scopes = [("team", "red"), ("team", "blue"), ("model", "m-red"), ("cluster", CLUSTER)]

    for scope, value in scopes:
        usd = put(client, auth, f"{scope}-usd", **monthly("1000", scope=scope, value=value))
        hours = put(
            client,
            auth,
            f"{scope}-{value}-h",
            **monthly("1000", scope=scope, value=value, unit="gpu_hours"),
        )
        # Jobs only: a cluster's idle capacity is no budget's spend.
        params = {**JANUARY, scope: value, "include_idle": "false"}
        total = client.get("/v1/costs", params=params, headers=auth["viewer"]).json()["total"]
        cost, quantity = billed(rows, scope, value)

        assert Decimal(usd["spent"]) == Decimal(total["cost_usd"]) == cost, (scope, value)
        assert Decimal(hours["spent"]) == Decimal(total["gpu_hours"]) == quantity, (scope, value)
        client.delete(f"/v1/budgets/{scope}-usd", headers=auth["admin"])
    # The energy cost is there, shown apart and never added: red's 0.175 kWh since the 15th.
    red = client.get("/v1/costs", params={**JANUARY, "team": "red"}, headers=auth["viewer"])
    assert red.json()["total"]["energy_cost_usd"] == "0.035"
    assert put(client, auth, "red", **monthly("100"))["spent"] == "57.5"


@contextmanager
def statements(client: TestClient) -> Iterator[list[str]]:
    """The SQL statements the app sends while the block runs."""
    sent: list[str] = []
    engine = client.app.state.engine  # type: ignore[attr-defined]

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_reading_many_budgets_costs_no_more_queries_than_a_few(
    client: TestClient, auth: Auth, clock: Any
) -> None:
    clock.moment = NOW
    seed(client, auth)
    bounds = {"period": "range", "starts_at": "2025-01-15T00:00:00Z", "ends_at": MONTH_END}

    def add(names: range) -> None:
        for n in names:
            scope = ("team", "model", "cluster")[n % 3]
            body = monthly(str(n + 1), scope=scope, value=f"v{n % 7}")
            put(client, auth, f"b{n}", **(body if n % 2 else {**body, **bounds}))

    add(range(6))
    with statements(client) as few:
        assert client.get("/v1/budgets", headers=auth["viewer"]).status_code == 200
    add(range(6, 60))
    with statements(client) as many:
        listed = client.get("/v1/budgets", headers=auth["viewer"])

    assert len(listed.json()) == 60
    assert len(many) == len(few), (len(few), len(many))
    # And each still reads its own scope's spend.
    put(client, auth, "b0", 200, **monthly("100"))
    by_name = {b["name"]: b for b in client.get("/v1/budgets", headers=auth["viewer"]).json()}
    assert (by_name["b0"]["spent"], by_name["b1"]["spent"]) == ("57.5", "0")


def test_budgets_are_limited_in_number_and_replacing_one_is_not(
    client: TestClient, auth: Auth, db: Session, clock: Any
) -> None:
    clock.moment = NOW
    stamps = {"created_at": NOW, "created_by": "t", "updated_at": NOW, "updated_by": "t"}
    row = {"scope": "team", "scope_value": "red", "period": "month", "unit": "usd"}
    db.add_all(Budget(name=f"b{n}", amount_micro=1, **row, **stamps) for n in range(MAX_BUDGETS))
    db.commit()

    refused = client.put("/v1/budgets/one-more", json=monthly("1"), headers=auth["admin"])
    replaced = client.put("/v1/budgets/b0", json=monthly("2"), headers=auth["admin"])

    assert refused.status_code == 409, refused.text
    assert refused.json() == {
        "error": "Conflict",
        "detail": f"at most {MAX_BUDGETS} budgets: delete one before creating another",
    }
    assert replaced.status_code == 200, replaced.text
    names = [b["name"] for b in client.get("/v1/budgets", headers=auth["viewer"]).json()]
    assert len(names) == MAX_BUDGETS and "one-more" not in names


def test_a_relabelled_job_moves_its_spend_as_the_cost_api_shows_it(
    client: TestClient, auth: Auth, clock: Any
) -> None:
    clock.moment = NOW
    seed(client, auth)
    put(client, auth, "red", **monthly("100"))
    put(client, auth, "blue", **monthly("100", value="blue"))
    put(client, auth, "green", **monthly("100", value="green"))  # no job carries it yet

    relabel = {"model": "m-red", "team": "green"}
    response = client.put(f"/v1/jobs/{CLUSTER}/r1", json=relabel, headers=auth["admin"])
    assert response.status_code == 200, response.text
    by_name = {b["name"]: b for b in client.get("/v1/budgets", headers=auth["viewer"]).json()}

    # Budgets read the jobs' labels as they are now, as the cost API does.
    assert {name: b["spent"] for name, b in by_name.items()} == {
        "blue": "10",
        "green": "57.5",
        "red": "0",
    }
    green = client.get("/v1/costs", params={**JANUARY, "team": "green"}, headers=auth["viewer"])
    assert green.json()["total"]["cost_usd"] == "57.5"
