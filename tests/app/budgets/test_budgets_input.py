"""Budgets as admins set them: replace, delete and the audit log; each bad field refused by
name, by the API and, for the table's rules, by the database itself; who may do what."""

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import Budget
from tests.app.budgets.test_budgets import NOW, Auth, monthly, put, seed
from tests.support import SettableClock


def test_replace_delete_and_the_audit_log(
    client: TestClient, auth: Auth, clock: SettableClock
) -> None:
    clock.moment = NOW
    seed(client, auth)
    put(client, auth, "red", **monthly("100"))
    replaced = put(client, auth, "red", 200, **monthly("80.5", unit="gpu_hours"))
    put(client, auth, "red", 200, **monthly("80.5", unit="gpu_hours"))  # no change, no entry

    deleted = client.delete("/v1/budgets/red", headers=auth["admin"])
    again = client.delete("/v1/budgets/red", headers=auth["admin"])
    gone = client.get("/v1/budgets/red", headers=auth["viewer"])
    audit = client.get("/v1/audit", params={"action": "budget"}, headers=auth["admin"]).json()

    assert (replaced["amount"], replaced["unit"], replaced["spent"]) == (
        "80.5",
        "gpu_hours",
        "5.75",
    )
    assert (replaced["created_by"], replaced["updated_by"]) == ("admin", "admin")
    assert deleted.status_code == 204 and deleted.content == b""
    assert again.status_code == 404 and again.json()["error"] == "NotFound"
    assert gone.status_code == 404
    settings = {
        "scope": "team",
        "scope_value": "red",
        "period": "month",
        "starts_at": None,
        "ends_at": None,
    }
    first = {**settings, "unit": "usd", "amount": "100"}
    second = {**settings, "unit": "gpu_hours", "amount": "80.5"}
    assert [(e["action"], e["actor"], e["target"], e["details"]) for e in audit["entries"]] == [
        ("budget.delete", "admin", "budget:red", {"name": "red", "old": second, "new": None}),
        ("budget.replace", "admin", "budget:red", {"name": "red", "old": first, "new": second}),
        ("budget.create", "admin", "budget:red", {"name": "red", "old": None, "new": first}),
    ]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": "0"}, "amount"),
        ({"amount": "-5"}, "amount"),
        ({"amount": "1.0000001"}, "amount"),
        ({"amount": "1e13"}, "amount"),
        ({"amount": True}, "amount"),
        ({"scope": "user"}, "scope"),
        ({"unit": "eur"}, "unit"),
        ({"value": ""}, "value"),
        ({"value": "(idle)"}, "value"),
        ({"period": "week"}, "period"),
        ({"starts_at": "2025-01-01T00:00:00Z"}, "starts_at"),
        ({"period": "range", "starts_at": "2025-01-01T00:00:00Z"}, "ends_at"),
        ({"period": "range", "ends_at": "2025-01-01T00:00:00Z"}, "starts_at"),
        (
            {
                "period": "range",
                "starts_at": "2025-01-02T00:00:00Z",
                "ends_at": "2025-01-02T00:00:00Z",
            },
            "ends_at",
        ),
        (
            {
                "period": "range",
                "starts_at": "2025-01-01T00:30:00Z",
                "ends_at": "2025-01-02T00:00:00Z",
            },
            "starts_at",
        ),
        (
            {
                "period": "range",
                "starts_at": "2025-01-01T00:00:00",
                "ends_at": "2025-01-02T00:00:00Z",
            },
            "starts_at",
        ),
        ({"surplus": 1}, "surplus"),
    ],
)
def test_invalid_budgets_are_refused_naming_the_field(
    client: TestClient, auth: Auth, change: dict[str, Any], field: str
) -> None:
    body = {**monthly("100"), **change}

    response = client.put("/v1/budgets/red", json=body, headers=auth["admin"])

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field, response.json()
    assert client.get("/v1/budgets", headers=auth["viewer"]).json() == []


def test_names_roles_and_precise_amounts(client: TestClient, auth: Auth) -> None:
    body = monthly("1.000000")
    for name in ("bad name", "x" * 65, "-dash"):
        response = client.put(f"/v1/budgets/{name}", json=body, headers=auth["admin"])
        assert response.status_code == 422, (name, response.text)
    for role in ("viewer", "collector"):
        assert client.put("/v1/budgets/red", json=body, headers=auth[role]).status_code == 403
        assert client.delete("/v1/budgets/red", headers=auth[role]).status_code == 403
    assert client.get("/v1/budgets", headers=auth["collector"]).status_code == 403
    assert client.get("/v1/budgets").status_code == 401

    created = put(client, auth, "x" * 64, **body)
    # A range's bounds are whole hours after conversion to UTC.
    ranged = put(
        client,
        auth,
        "r",
        **{
            **body,
            "period": "range",
            "starts_at": "2025-01-01T01:00:00+01:00",
            "ends_at": "2025-01-02T00:00:00Z",
        },
    )

    assert created["amount"] == "1"
    assert ranged["window_start"] == "2025-01-01T00:00:00Z"


@pytest.mark.parametrize(
    "row",
    [
        {"period": "week"},
        {"scope": "user"},
        {"unit": "eur"},
        {"amount_micro": 0},
        {"amount_micro": -1},
        {"starts_at": datetime(2025, 1, 1, tzinfo=UTC)},
        {"period": "range"},
        {"period": "range", "starts_at": datetime(2025, 1, 1, tzinfo=UTC)},
        {
            "period": "range",
            "starts_at": datetime(2025, 1, 2, tzinfo=UTC),
            "ends_at": datetime(2025, 1, 1, tzinfo=UTC),
        },
    ],
)
def test_the_database_refuses_a_budget_that_breaks_its_rules(
    db: Session, row: dict[str, Any]
) -> None:
    stamps = {"created_at": NOW, "created_by": "t", "updated_at": NOW, "updated_by": "t"}
    good = {
        "name": "b",
        "scope": "team",
        "scope_value": "red",
        "period": "month",
        "unit": "usd",
        "amount_micro": 1,
        **stamps,
    }
    db.add(Budget(**good))
    db.flush()  # the good one is stored
    db.add(Budget(**{**good, "name": "bad", **row}))

    with pytest.raises(IntegrityError):
        db.flush()
    db.rollback()
