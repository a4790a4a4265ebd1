"""Instants at the edges of what a datetime can hold, anywhere the API takes one: a 422
naming the field, never a 500."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support import report

Auth = dict[str, dict[str, str]]
# A zone that moves them past year 1 or 9999, and years outside 1970-2999.
EXTREMES = [
    "0001-01-01T00:30:00+01:00",
    "9999-12-31T23:30:00-01:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:00:00Z",
    "1900-01-01T00:00:00Z",
]
LATER = "2025-02-01T00:00:00Z"
EARLIER = "2025-01-01T00:00:00Z"


def fields(response: Any) -> set[str]:
    assert response.status_code == 422, response.text
    return {e["field"] for e in response.json()["errors"]}


@pytest.mark.parametrize("moment", EXTREMES)
def test_query_instants(client: TestClient, auth: Auth, moment: str) -> None:
    viewer, admin = auth["viewer"], auth["admin"]
    asks = [
        ("/v1/costs", {"from": moment}, viewer, "from"),
        ("/v1/costs", {"from": EARLIER, "to": moment}, viewer, "to"),
        ("/v1/models/m/cost", {"from": moment}, viewer, "from"),
        ("/v1/exports/focus.csv", {"from": moment, "to": LATER}, viewer, "from"),
        ("/v1/exports/costs.csv", {"from": EARLIER, "to": moment}, viewer, "to"),
        ("/v1/audit", {"since": moment}, admin, "since"),
    ]
    for path, params, headers, name in asks:
        response = client.get(path, params=params, headers=headers)
        assert any(f.endswith(name) for f in fields(response)), (path, response.text)


@pytest.mark.parametrize("moment", EXTREMES)
def test_body_instants(client: TestClient, auth: Auth, moment: str) -> None:
    rate = {"gpu_model": "H800", "usd_per_gpu_hour": "2", "effective_from": moment}
    energy = {"usd_per_kwh": "0.1", "effective_from": moment}
    for path, body in (("/v1/rates", rate), ("/v1/energy-rates", energy)):
        response = client.post(path, json=body, headers=auth["admin"])
        assert any(f.endswith("effective_from") for f in fields(response)), response.text
    for name in ("start", "end"):
        body = report(1, **{name: moment})
        response = client.post("/v1/reports", json=body, headers=auth["collector"])
        assert any(f.endswith(name) for f in fields(response)), response.text


@pytest.mark.parametrize("month", ["0001-01", "9999-12", "1900-01"])
def test_months(client: TestClient, auth: Auth, month: str) -> None:
    assert client.get(f"/v1/periods/{month}", headers=auth["viewer"]).status_code == 422
    listed = client.get("/v1/periods", params={"from": month}, headers=auth["viewer"])
    assert listed.status_code == 422
    closed = client.post(f"/v1/periods/{month}/close", headers=auth["admin"])
    assert closed.status_code == 422
