"""Physical bounds: no report carries more GPU time than its interval, more energy than its
interval at the maximum power, or a start before the books can hold; and the largest values
the API accepts, in the densest hour, read back exactly on every route."""

import csv
import io
import json
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.support import CLUSTER, entry, report

Auth = dict[str, dict[str, str]]


def refused_field(client: TestClient, auth: Auth, body: dict[str, Any]) -> str:
    response = client.post("/v1/reports", json=body, headers=auth["collector"])
    assert response.status_code == 422, response.text
    return str(response.json()["errors"][0]["field"])


def test_back_to_back_reports_cannot_hold_more_than_their_seconds(
    client: TestClient, auth: Auth
) -> None:
    # A hundred one-second reports claiming two GPU-seconds each: each refused on its own.
    fields = {
        refused_field(
            client,
            auth,
            report(
                seq,
                start=f"2025-01-06T10:00:{seq % 60:02d}Z",
                end=f"2025-01-06T10:00:{seq % 60:02d}.999999Z",
                gpus=[entry(gpu_seconds=2, energy_j=0)],
            ),
        )
        for seq in range(100)
    }
    assert fields == {"gpus[0].gpu_seconds"}


def test_gpu_time_is_bounded_by_the_interval_to_the_microsecond(
    client: TestClient, auth: Auth
) -> None:
    micro = {"start": "2025-01-06T10:00:00Z", "end": "2025-01-06T10:00:00.000001Z"}
    over = report(1, **micro, gpus=[entry(gpu_seconds="1.000001", energy_j=0)])
    assert refused_field(client, auth, over) == "gpus[0].gpu_seconds"
    just = report(1, **micro, gpus=[entry(gpu_seconds="0.000001", energy_j=0)])
    response = client.post("/v1/reports", json=just, headers=auth["collector"])
    assert response.status_code == 201, response.text


def test_energy_is_bounded_by_the_interval_at_the_maximum_power(
    client: TestClient, auth: Auth
) -> None:
    huge = report(1, gpus=[{**entry(n), "energy_j": 10**12} for n in range(1000)])
    assert refused_field(client, auth, huge) == "gpus[0].energy_j"
    # 60 s at the default 2,000 W is 120,000 J: that much is accepted, a millijoule more not.
    over = report(1, gpus=[entry(energy_j="120000.001")])
    assert refused_field(client, auth, over) == "gpus[0].energy_j"
    at_limit = report(1, gpus=[entry(energy_j=120_000)])
    assert client.post("/v1/reports", json=at_limit, headers=auth["collector"]).status_code == 201


@pytest.mark.parametrize(
    "start",
    [
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:30:00+01:00",
        "1900-01-01T00:00:00Z",
        "1999-12-31T23:59:00Z",
    ],
)
def test_reports_from_before_the_books_are_refused_naming_start(
    client: TestClient, auth: Auth, start: str
) -> None:
    end = "0001-01-01T00:01:00+01:00" if start.startswith("0001") else "2000-01-01T00:00:30Z"
    assert refused_field(client, auth, report(1, start=start, end=end)) == "start"


def test_numbers_are_strict_and_read_as_decimals(client: TestClient, auth: Auth) -> None:
    for value in (True, "3_0", " 30", "0x1e"):
        body = report(1, gpus=[entry(gpu_seconds=value)])
        assert refused_field(client, auth, body) == "gpus[0].gpu_seconds", value
    assert refused_field(client, auth, report(1, gpus=[{**entry(), "index": "1_0"}])) == (
        "gpus[0].index"
    )
    # 21 significant digits: rounded once, from the decimal, on both routes.
    digits = "1.00000149999999999999"
    single = _raw(report(1), digits)
    batch = (
        '{"reports": ['
        + _raw(report(2, start="2025-01-06T10:01:00Z", end="2025-01-06T10:02:00Z"), digits)
        + "]}"
    )
    headers = {**auth["collector"], "Content-Type": "application/json"}
    assert client.post("/v1/reports", content=single, headers=headers).status_code == 201
    batched = client.post("/v1/reports:batch", content=batch, headers=headers)
    assert batched.json()["results"][0]["http_status"] == 201, batched.text
    job = client.get(f"/v1/jobs/{CLUSTER}/91234", headers=auth["viewer"]).json()
    assert job["gpu_seconds"] == "2.000002"


def _raw(body: dict[str, Any], gpu_seconds: str) -> str:
    """The report as JSON text with `gpu_seconds` written as the literal number given."""
    body = {**body, "gpus": [{**body["gpus"][0], "gpu_seconds": "__N__"}]}
    return json.dumps(body).replace('"__N__"', gpu_seconds)


# The densest hour the API accepts: every GPU held the whole hour by one job, at full power
# and utilisation, the most memory, at the highest price.
NODES = 4
PER_REPORT = 1024
HOUR = {"start": "2025-01-06T10:00:00Z", "end": "2025-01-06T11:00:00Z"}
FULL = {"gpu_seconds": 3600, "util_pct": 100, "energy_j": 7_200_000, "mem_peak_bytes": 2**53}


@pytest.mark.slow
def test_largest_values_in_the_densest_hour_read_back_exactly_everywhere(
    client: TestClient, auth: Auth
) -> None:
    gpus = NODES * PER_REPORT
    rate = {
        "gpu_model": "NVIDIA H800",
        "usd_per_gpu_hour": "10000",
        "effective_from": "2025-01-01T00:00:00Z",
    }
    assert client.post("/v1/rates", json=rate, headers=auth["admin"]).status_code == 201
    energy = {"usd_per_kwh": "10000", "effective_from": "2025-01-01T00:00:00Z"}
    assert client.post("/v1/energy-rates", json=energy, headers=auth["admin"]).status_code == 201
    for node in range(NODES):
        entries = [{**entry(node * PER_REPORT + i, **FULL), "index": i} for i in range(PER_REPORT)]
        body = report(1, node=f"node-{node}", gpus=entries, **HOUR)
        response = client.post("/v1/reports", json=body, headers=auth["collector"])
        assert response.status_code == 201, response.text
    job = {"model": "m", "phase": "pre-training", "team": "t", "user": "u"}
    client.put(f"/v1/jobs/{CLUSTER}/91234", json=job, headers=auth["admin"])

    viewer = auth["viewer"]
    hours = Decimal(gpus)
    kwh = Decimal(gpus * 2)  # 7.2 MJ is 2 kWh
    for group_by in ("", "job", "model", "phase", "team", "user", "cluster", "gpu_model"):
        response = client.get(f"/v1/costs?group_by={group_by}", headers=viewer)
        assert response.status_code == 200, (group_by, response.text)
        total = response.json()["total"]
        assert Decimal(total["gpu_hours"]) == hours
        assert Decimal(total["busy_gpu_hours"]) == hours
        assert Decimal(total["energy_kwh"]) == kwh
        assert Decimal(total["cost_usd"]) == hours * 10_000
    model = client.get("/v1/models/m/cost", headers=viewer)
    assert model.status_code == 200, model.text
    assert Decimal(model.json()["total"]["gpu_hours"]) == hours
    for path in ("/v1/jobs", f"/v1/jobs/{CLUSTER}/91234", "/v1/periods", "/v1/periods/2025-01"):
        response = client.get(path, headers=viewer)
        assert response.status_code == 200, (path, response.text)
    window = "from=2025-01-01T00:00:00Z&to=2025-02-01T00:00:00Z"
    for export in ("focus.csv", "costs.csv"):
        response = client.get(f"/v1/exports/{export}?{window}", headers=viewer)
        assert response.status_code == 200, (export, response.text)
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert rows, export
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    seconds = sum(s.value for s in families["gpucost_gpu_seconds"].samples)
    cost = sum(s.value for s in families["gpucost_cost_usd"].samples)
    assert (seconds, cost) == (gpus * 3600, gpus * 10_000)


def test_long_numbers_are_rounded_once(client: TestClient, auth: Auth) -> None:
    # 32 significant digits, just under half a microsecond past 1 µs: one rounding, down
    # (a 28-digit intermediate would have rounded it up to the half, then to 2 µs).
    just_under = report(1, gpus=[entry(gpu_seconds="0.0000014999999999999999999999999999999")])
    long = report(
        2,
        start="2025-01-06T10:01:00Z",
        end="2025-01-06T10:02:00Z",
        gpus=[entry(gpu_seconds="1.0000004" + "9" * 60)],
    )
    for body in (just_under, long):
        response = client.post("/v1/reports", json=body, headers=auth["collector"])
        assert response.status_code == 201, response.text
    job = client.get(f"/v1/jobs/{CLUSTER}/91234", headers=auth["viewer"]).json()
    assert job["gpu_seconds"] == "1.000001"
