"""The books: where they start, months closing one after another, a bounded page of months."""

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import AuditEntry, PeriodLine
from tests.support import SettableClock, entry, report

Auth = dict[str, dict[str, str]]


def send(client: TestClient, auth: Auth, seq: int, start: str, end: str) -> None:
    body = report(seq, start=start, end=end, gpus=[entry(0, job_id="7", gpu_seconds=3600)])
    response = client.post("/v1/reports", json=body, headers=auth["collector"])
    assert response.status_code == 201, response.text


def close(client: TestClient, auth: Auth, month: str) -> Any:
    return client.post(f"/v1/periods/{month}/close", headers=auth["admin"])


def period(client: TestClient, auth: Auth, month: str) -> dict[str, Any]:
    response = client.get(f"/v1/periods/{month}", headers=auth["viewer"])
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


@pytest.fixture
def autumn(client: TestClient, auth: Auth, clock: SettableClock) -> None:
    """September and October 2026 closed; a late October hour waits to be billed in November."""
    clock.moment = datetime(2026, 12, 15, tzinfo=UTC)
    send(client, auth, 1, "2026-09-10T10:00:00Z", "2026-09-10T11:00:00Z")
    send(client, auth, 2, "2026-10-05T10:00:00Z", "2026-10-05T11:00:00Z")
    assert close(client, auth, "2026-09").status_code == 200
    assert close(client, auth, "2026-10").status_code == 200
    send(client, auth, 3, "2026-10-20T10:00:00Z", "2026-10-20T11:00:00Z")


def test_a_month_before_the_last_closed_one_is_refused_with_the_month_expected(
    client: TestClient, auth: Auth, autumn: None, db: Session
) -> None:
    # A late report before the books' start, then an attempt to close its month.
    send(client, auth, 4, "2020-01-15T10:00:00Z", "2020-01-15T11:00:00Z")
    lines_before = db.execute(select(func.count()).select_from(PeriodLine)).scalar_one()

    long_ago = close(client, auth, "2020-01")
    just_before = close(client, auth, "2026-08")
    closed = close(client, auth, "2026-09")
    ahead = close(client, auth, "2026-12")

    assert long_ago.status_code == 409
    assert long_ago.json()["detail"] == (
        "months close in order: 2020-01 is before the last closed month, 2026-10; "
        "the next month to close is 2026-11"
    )
    assert (
        just_before.status_code == 409
        and "next month to close is 2026-11" in (just_before.json()["detail"])
    )
    assert (closed.status_code, closed.json()["detail"]) == (409, "2026-09 is already closed")
    assert ahead.status_code == 409 and "not over yet" in ahead.json()["detail"]
    # Nothing was booked by the refusals: the late October hour still waits for November.
    assert db.execute(select(func.count()).select_from(PeriodLine)).scalar_one() == lines_before
    assert period(client, auth, "2020-01")["state"] == "open"

    november = close(client, auth, "2026-11")
    assert november.status_code == 200, november.text
    assert period(client, auth, "2026-10")["corrections_booked"] == {
        "gpu_hours": "1",
        "cost_usd": "2",
    }
    # Usage dated before the books' start was never booked: billed in November as a
    # correction of its own hour, like any late report.
    assert period(client, auth, "2020-01")["current"]["gpu_hours"] == "1"
    assert period(client, auth, "2020-01")["corrections_booked"] == {
        "gpu_hours": "1",
        "cost_usd": "2",
    }
    booked_charges = db.execute(select(func.min(PeriodLine.charge_hour))).scalar_one()
    assert booked_charges.replace(tzinfo=UTC) == datetime(2020, 1, 15, 10, tzinfo=UTC)
    closes = db.execute(
        select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "period.close")
    ).scalar_one()
    assert closes == 3


def test_the_books_start_at_the_first_month_with_usage_or_earlier(
    client: TestClient, auth: Auth, clock: SettableClock
) -> None:
    clock.moment = datetime(2025, 3, 15, tzinfo=UTC)
    send(client, auth, 1, "2025-01-10T10:00:00Z", "2025-01-10T11:00:00Z")
    before_any = client.get("/v1/periods", headers=auth["viewer"]).json()

    skipping = close(client, auth, "2025-02")
    earlier = close(client, auth, "2024-11")
    then_january = close(client, auth, "2025-01")

    assert (before_any["first"], before_any["last"]) == ("2025-01", "2025-01")
    assert (
        skipping.status_code == 409
        and "close 2025-01 before 2025-02" in (skipping.json()["detail"])
    )
    # An empty month before the first usage may start the books; then they go in order.
    assert earlier.status_code == 200
    assert then_january.status_code == 409
    assert then_january.json()["detail"] == "months close in order: close 2024-12 before 2025-01"
    # A page asked from before the books' start begins at their start.
    listed = client.get("/v1/periods", params={"from": "2020-01"}, headers=auth["viewer"]).json()
    assert [(p["month"], p["state"]) for p in listed["periods"]] == [
        ("2024-11", "closed"),
        ("2024-12", "open"),
        ("2025-01", "open"),
    ]


def test_periods_are_listed_a_bounded_page_at_a_time(
    client: TestClient, auth: Auth, clock: SettableClock
) -> None:
    # A stray report from 2000 would have the list walk 26 years of months in one answer.
    clock.moment = datetime(2026, 11, 20, tzinfo=UTC)
    send(client, auth, 1, "2000-01-01T00:00:00Z", "2000-01-01T01:00:00Z")
    send(client, auth, 2, "2026-11-02T00:00:00Z", "2026-11-02T01:00:00Z")

    def listed(**params: Any) -> Any:
        return client.get("/v1/periods", params=params, headers=auth["viewer"])

    default = listed().json()
    second = listed(**{"from": default["next_from"], "limit": 2}).json()
    tail = listed(**{"from": "2026-10"}).json()

    assert (default["first"], default["last"]) == ("2000-01", "2026-11")
    assert [p["month"] for p in default["periods"]] == [f"2000-{m:02d}" for m in range(1, 13)]
    assert default["next_from"] == "2001-01"
    assert [p["month"] for p in second["periods"]] == ["2001-01", "2001-02"]
    assert second["next_from"] == "2001-03"
    assert [(p["month"], p["current"]["gpu_hours"]) for p in tail["periods"]] == [
        ("2026-10", "0"),
        ("2026-11", "1"),
    ]
    assert tail["next_from"] is None
    for params, field in [
        ({"limit": 121}, "limit"),
        ({"limit": 0}, "limit"),
        ({"limit": "1_0"}, "limit"),
        ({"from": "2000-13"}, "from"),
        ({"from": "0001-01"}, "from"),
        ({"from": "1969-12"}, "from"),
    ]:
        refused = listed(**params)
        assert refused.status_code == 422, (params, refused.text)
        assert refused.json()["errors"][0]["field"] == field


def test_no_usage_and_nothing_closed_is_an_empty_page(client: TestClient, auth: Auth) -> None:
    assert client.get("/v1/periods", headers=auth["viewer"]).json() == {
        "periods": [],
        "first": None,
        "last": None,
        "next_from": None,
    }


@pytest.mark.parametrize("month", ["0001-01", "9999-12", "3000-01", "1969-12"])
def test_months_outside_the_accepted_range_are_a_422_naming_the_month(
    client: TestClient, auth: Auth, month: str
) -> None:
    for response in (
        close(client, auth, month),
        client.get(f"/v1/periods/{month}", headers=auth["viewer"]),
    ):
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "month"
