"""Admin input that means one thing: rates start on a whole UTC hour after conversion to UTC,
numbers are plainly numbers, labels hold no controls or direction overrides, and the audit
filter matches `%` and `_` as themselves. Each refusal is a 422 naming the field."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support import CLUSTER

Auth = dict[str, dict[str, str]]
RATE = {
    "gpu_model": "NVIDIA H800",
    "usd_per_gpu_hour": "2",
    "effective_from": "2025-01-01T00:00:00Z",
}
ENERGY_RATE = {"usd_per_kwh": "0.12", "effective_from": "2025-01-01T00:00:00Z"}


def refused(response: Any, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "ValidationError"
    assert response.json()["errors"][0]["field"] == field, response.json()


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        # 18:30Z: a whole hour in India, not in UTC.
        ("/v1/rates", {**RATE, "effective_from": "2026-11-10T00:00:00+05:30"}, "effective_from"),
        ("/v1/rates", {**RATE, "effective_from": "0001-01-01T00:30:00+01:00"}, "effective_from"),
        ("/v1/rates", {**RATE, "effective_from": "9999-12-31T23:00:00-01:00"}, "effective_from"),
        ("/v1/rates", {**RATE, "effective_from": "1969-12-31T23:00:00Z"}, "effective_from"),
        ("/v1/rates", {**RATE, "usd_per_gpu_hour": True}, "usd_per_gpu_hour"),
        ("/v1/rates", {**RATE, "usd_per_gpu_hour": "3_0"}, "usd_per_gpu_hour"),
        ("/v1/rates", {**RATE, "usd_per_gpu_hour": "1_0"}, "usd_per_gpu_hour"),
        ("/v1/rates", {**RATE, "usd_per_gpu_hour": " 2"}, "usd_per_gpu_hour"),
        ("/v1/rates", {**RATE, "gpu_model": "H800\u0085"}, "gpu_model"),
        ("/v1/energy-rates", {**ENERGY_RATE, "usd_per_kwh": False}, "usd_per_kwh"),
        ("/v1/energy-rates", {**ENERGY_RATE, "usd_per_kwh": "0_1"}, "usd_per_kwh"),
        (
            "/v1/energy-rates",
            {**ENERGY_RATE, "effective_from": "2026-11-10T00:00:00+05:30"},
            "effective_from",
        ),
    ],
)
def test_bad_prices_are_422_naming_the_field_and_change_nothing(
    client: TestClient, auth: Auth, path: str, body: dict[str, Any], field: str
) -> None:
    refused(client.post(path, json=body, headers=auth["admin"]), field)
    assert client.get(path, headers=auth["viewer"]).json() == []


def test_a_start_that_is_a_whole_utc_hour_in_another_zone_is_stored_in_utc(
    client: TestClient, auth: Auth
) -> None:
    body = {**RATE, "effective_from": "2026-11-10T05:30:00+05:30"}
    # A JSON number is read as the decimal it spells, never through a binary float.
    raw = (
        '{"gpu_model": "NVIDIA H800", "usd_per_gpu_hour": 2.35, '
        f'"effective_from": "{body["effective_from"]}"}}'
    )

    response = client.post(
        "/v1/rates", content=raw, headers={**auth["admin"], "Content-Type": "application/json"}
    )

    assert response.status_code == 201, response.text
    assert (response.json()["effective_from"], response.json()["usd_per_gpu_hour"]) == (
        "2026-11-10T00:00:00Z",
        "2.35",
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"labels": {"env": "prod\u0085"}}, "labels.env"),
        ({"labels": {"env": "\u009bprod"}}, "labels.env"),
        ({"labels": {"env": "evil\u202etxt.exe"}}, "labels.env"),
        ({"labels": {"env": "a\u2066b\u2069"}}, "labels.env"),
        ({"name": "run\u202d1"}, "name"),
        ({"model": "llama\u0080"}, "model"),
        ({"team": "red\u2067"}, "team"),
        ({"user": "\u202aalice"}, "user"),
        ({"phase": "pre\u2068training"}, "phase"),
    ],
)
def test_labels_with_c1_controls_or_direction_overrides_are_refused(
    client: TestClient, auth: Auth, body: dict[str, Any], field: str
) -> None:
    refused(client.put(f"/v1/jobs/{CLUSTER}/1", json=body, headers=auth["admin"]), field)
    assert client.get(f"/v1/jobs/{CLUSTER}/1", headers=auth["viewer"]).status_code == 404


def test_labels_in_any_script_are_kept(client: TestClient, auth: Auth) -> None:
    body = {"team": "équipe rouge", "name": "训练 run", "labels": {"note": "שלום · ok"}}

    response = client.put(f"/v1/jobs/{CLUSTER}/1", json=body, headers=auth["admin"])

    assert response.status_code == 201, response.text
    assert (response.json()["team"], response.json()["labels"]) == (
        "équipe rouge",
        {"note": "שלום · ok"},
    )


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/audit", {"since": "0001-01-01T00:30:00+01:00"}, "since"),
        ("/v1/audit", {"since": "9999-12-31T23:30:00-01:00"}, "since"),
        ("/v1/audit", {"limit": "1_0"}, "limit"),
        ("/v1/audit", {"before": "3_0"}, "before"),
        ("/v1/audit", {"action": "rate\u0085"}, "action"),
        ("/v1/jobs", {"limit": "3_0"}, "limit"),
        ("/v1/jobs", {"offset": "1_0"}, "offset"),
        ("/v1/jobs", {"team": "red\u202e"}, "team"),
    ],
)
def test_bad_admin_queries_are_422_naming_the_parameter(
    client: TestClient, auth: Auth, path: str, params: dict[str, str], field: str
) -> None:
    refused(client.get(path, params=params, headers=auth["admin"]), field)


def test_the_audit_filter_matches_percent_and_underscore_literally(
    client: TestClient, auth: Auth
) -> None:
    client.post("/v1/rates", json=RATE, headers=auth["admin"])
    client.put(f"/v1/jobs/{CLUSTER}/1", json={"model": "m"}, headers=auth["admin"])

    def actions(**params: str) -> list[str]:
        page = client.get("/v1/audit", params=params, headers=auth["admin"]).json()
        return [e["action"] for e in page["entries"]]

    assert actions(action="rate") == ["rate.create"]
    assert actions(action="%") == []
    assert actions(action="rat_") == []
    assert actions(action="_ob") == []
    assert actions(action="job.%") == []
    # A zone or none: the same instant.
    assert actions(since="2025-01-07T01:00:00+01:00", action="job") == ["job.create"]
    assert actions(since="2025-01-07T00:00:01", action="job") == []
