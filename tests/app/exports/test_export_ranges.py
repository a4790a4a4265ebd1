"""An export's range: it visits the months that have something to export, never the empty
years around them (the statements it runs do not grow with the range), and each granularity
has a documented limit answered with a clear 422."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from app.exports.service import MAX_RANGE_DAYS
from tests.support import entry, report

Auth = dict[str, dict[str, str]]


@contextmanager
def statements(client: TestClient) -> Iterator[list[str]]:
    """The SQL statements the app runs meanwhile for its data (not a token's look-up, which
    comes when its cache says, nor a transaction's BEGIN)."""
    seen: list[str] = []

    def count(*args: Any) -> None:
        if "api_tokens" not in args[2] and not args[2].startswith("BEGIN"):
            seen.append(args[2])

    engine = client.app.state.engine  # type: ignore[attr-defined]
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def export(client: TestClient, auth: Auth, kind: str, **params: str) -> Any:
    return client.get(f"/v1/exports/{kind}", params=params, headers=auth["viewer"])


@pytest.mark.parametrize("kind", ["focus.csv", "focus.parquet", "costs.csv"])
def test_a_century_of_months_reads_no_more_than_the_month_with_data(
    client: TestClient, auth: Auth, kind: str
) -> None:
    body = report(1, start="2025-01-06T10:00:00Z", end="2025-01-06T11:00:00Z",
                  gpus=[entry(0, gpu_seconds=3600)])  # fmt: skip
    assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201
    month = {"from": "2025-01-01T00:00:00Z", "to": "2025-02-01T00:00:00Z"}
    ages = {"from": "1970-01-01T00:00:00Z", "to": "2999-01-01T00:00:00Z"}
    granularity = {} if kind == "costs.csv" else {"granularity": "month"}
    with statements(client) as narrow:
        one = export(client, auth, kind, **month, **granularity)
    with statements(client) as wide:
        all_of_them = export(client, auth, kind, **ages, **granularity)
    assert one.status_code == all_of_them.status_code == 200, all_of_them.text
    assert len(wide) == len(narrow), (len(wide), len(narrow))
    if kind.endswith(".csv"):
        assert all_of_them.text == one.text and one.text.count("\n") == 2

    empty = {"from": "1970-01-01T00:00:00Z", "to": "2000-01-01T00:00:00Z"}
    with statements(client) as none:
        nothing = export(client, auth, kind, **empty, **granularity)
    assert nothing.status_code == 200 and len(none) <= len(narrow)


@pytest.mark.parametrize("granularity", ["hour", "day"])
def test_each_granularity_has_its_longest_range(
    client: TestClient, auth: Auth, granularity: str
) -> None:
    days = MAX_RANGE_DAYS[granularity]
    assert days is not None
    start = "2000-01-01T00:00:00Z"
    at_limit = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(days=days)
    past = at_limit + timedelta(hours=1 if granularity == "hour" else 24)
    ok = export(client, auth, "focus.csv", granularity=granularity,
                **{"from": start, "to": at_limit.strftime("%Y-%m-%dT%H:%M:%SZ")})  # fmt: skip
    refused = export(client, auth, "focus.parquet", granularity=granularity,
                     **{"from": start, "to": past.strftime("%Y-%m-%dT%H:%M:%SZ")})  # fmt: skip
    assert ok.status_code == 200, ok.text
    assert refused.status_code == 422
    assert f"at most {days} days after from at {granularity} granularity" in refused.text
