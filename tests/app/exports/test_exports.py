"""Finance exports: FOCUS 1.2 rows that add up to the cost API, streamed and injection-safe."""

import csv
import io
import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support import CLUSTER, entry, report

Auth = dict[str, dict[str, str]]
MANDATORY = [
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargePeriodEnd",
    "ChargePeriodStart", "ContractedCost", "EffectiveCost", "InvoiceIssuerName", "ListCost",
    "PricingQuantity", "PricingUnit", "ProviderName", "PublisherName", "ServiceCategory",
    "ServiceName",
]  # fmt: skip
DECIMALS = ["BilledCost", "ContractedCost", "EffectiveCost", "ListCost", "PricingQuantity",
            "ConsumedQuantity", "ListUnitPrice", "ContractedUnitPrice"]  # fmt: skip
NOT_NULL = [c for c in MANDATORY if c != "ChargeClass"]


def iso(text: str) -> datetime:
    assert len(text) == 20 and text.endswith("Z"), text  # YYYY-MM-DDTHH:MM:SSZ
    return datetime.fromisoformat(text)


def validate_focus(rows: list[dict[str, str]]) -> None:
    """The FOCUS 1.2 rules for the mandatory columns this export fills."""
    for row in rows:
        assert set(MANDATORY) <= set(row), set(MANDATORY) - set(row)
        for column in NOT_NULL:
            assert row[column] != "", (column, row)
        for column in DECIMALS:
            value = row[column]
            assert "," not in value and "e" not in value.lower()
            Decimal(value)
        assert row["BillingCurrency"] == "USD"
        assert row["ChargeCategory"] == "Usage"
        assert row["ChargeClass"] in ("", "Correction")
        assert row["ServiceCategory"] == "AI and Machine Learning"
        assert row["PricingUnit"] == row["ConsumedUnit"] == "GPU-Hours"
        charge = iso(row["ChargePeriodStart"]), iso(row["ChargePeriodEnd"])
        billing = iso(row["BillingPeriodStart"]), iso(row["BillingPeriodEnd"])
        assert charge[0] < charge[1] and billing[0] < billing[1]
        if row["ChargeClass"] != "Correction":
            assert billing[0] <= charge[0] and charge[1] <= billing[1]
        else:
            assert charge[1] <= billing[0]  # a correction points at an earlier period
        assert row["BilledCost"] == row["EffectiveCost"]
        # One price a row: list cost is quantity x price, exactly (FOCUS ListCost).
        list_cost = Decimal(row["PricingQuantity"]) * Decimal(row["ListUnitPrice"])
        assert Decimal(row["ListCost"]) == Decimal(row["ContractedCost"]) == list_cost
        assert abs(Decimal(row["ListCost"]) - Decimal(row["BilledCost"])) < Decimal("1e-7")
        json.loads(row["Tags"])


def send(
    client: TestClient, auth: Auth, seq: int, day: int, hour: int, gpus: list[dict[str, Any]]
) -> None:
    body = report(
        seq,
        start=f"2025-01-{day:02d}T{hour:02d}:00:00Z",
        end=f"2025-01-{day:02d}T{hour + 1:02d}:00:00Z",
        gpus=gpus,
    )
    response = client.post("/v1/reports", json=body, headers=auth["collector"])
    assert response.status_code == 201, response.text


def export(
    client: TestClient, auth: Auth, path: str = "focus.csv", **params: str
) -> list[dict[str, str]]:
    response = client.get(f"/v1/exports/{path}", params=params, headers=auth["viewer"])
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.text)))


@pytest.fixture
def usage(client: TestClient, auth: Auth) -> None:
    rate = {
        "gpu_model": "NVIDIA H800",
        "usd_per_gpu_hour": "2.10",
        "effective_from": "2025-01-01T00:00:00Z",
    }
    assert client.post("/v1/rates", json=rate, headers=auth["admin"]).status_code == 201
    client.put(
        f"/v1/jobs/{CLUSTER}/7",
        json={
            "model": "llama",
            "phase": "pretrain",
            "team": "red",
            "user": "ada",
            "labels": {"cost-center": "cc-42", "project": "=HYPERLINK(1)"},
        },
        headers=auth["admin"],
    )
    send(
        client,
        auth,
        1,
        5,
        10,
        [entry(0, job_id="7", gpu_seconds=3600), entry(1, job_id=None, gpu_seconds=3600)],
    )
    send(
        client,
        auth,
        2,
        5,
        11,
        [entry(0, job_id="7", gpu_seconds="1234.5"), entry(1, job_id="8", gpu_seconds=60)],
    )
    send(client, auth, 3, 6, 9, [entry(0, job_id="7", gpu_seconds=3600, util_pct=10)])


@pytest.mark.parametrize("granularity", ["hour", "day", "month"])
def test_focus_export_is_valid_and_adds_up_to_the_cost_api(
    client: TestClient, auth: Auth, usage: None, granularity: str
) -> None:
    window = {"from": "2025-01-01T00:00:00Z", "to": "2025-02-01T00:00:00Z"}
    rows = export(client, auth, granularity=granularity, **window)
    costs = client.get("/v1/costs", params=window, headers=auth["viewer"]).json()["total"]

    validate_focus(rows)
    assert sum(Decimal(r["BilledCost"]) for r in rows) == Decimal(costs["cost_usd"])
    assert sum(Decimal(r["PricingQuantity"]) for r in rows) == Decimal(costs["gpu_hours"])
    assert {r["ResourceType"] for r in rows} == {"Job", "Idle GPU Capacity"}
    expected_rows = {"hour": 5, "day": 4, "month": 3}[granularity]
    assert len(rows) == expected_rows


def test_focus_row_fields(client: TestClient, auth: Auth, usage: None) -> None:
    rows = export(
        client,
        auth,
        granularity="hour",
        **{"from": "2025-01-05T10:00:00Z", "to": "2025-01-05T11:00:00Z"},
    )

    job_row = next(r for r in rows if r["ResourceType"] == "Job")
    assert {
        k: job_row[k]
        for k in (
            "BilledCost",
            "PricingQuantity",
            "ListUnitPrice",
            "ChargePeriodStart",
            "ChargePeriodEnd",
            "BillingPeriodStart",
            "BillingPeriodEnd",
            "RegionId",
            "ResourceId",
            "SubAccountName",
            "SkuId",
            "RegionName",
            "SkuMeter",
            "SkuPriceId",
            "ChargeFrequency",
            "InvoiceId",
            "ServiceSubcategory",
        )
    } == {
        "BilledCost": "2.100000000",
        "PricingQuantity": "1.000000000",
        "ListUnitPrice": "2.100000",
        "ChargePeriodStart": "2025-01-05T10:00:00Z",
        "ChargePeriodEnd": "2025-01-05T11:00:00Z",
        "BillingPeriodStart": "2025-01-01T00:00:00Z",
        "BillingPeriodEnd": "2025-02-01T00:00:00Z",
        "RegionId": CLUSTER,
        "ResourceId": f"{CLUSTER}/7",
        "SubAccountName": "red",
        "SkuId": "NVIDIA H800",
        "RegionName": CLUSTER,
        "SkuMeter": "GPU Time",
        "SkuPriceId": "NVIDIA H800:2.100000:card",
        "ChargeFrequency": "Usage-Based",
        "InvoiceId": "gpucost:2025-01",  # January's invoice, provisional while it is open
        "ServiceSubcategory": "Machine Learning",
    }
    # gpucost's own tags carry its prefix; the job's labels are the users' own (unprefixed),
    # as they are: inside JSON a formula is not a cell.
    assert json.loads(job_row["Tags"]) == {
        "gpucost/job_id": "7",
        "gpucost/model": "llama",
        "gpucost/phase": "pre-training",
        "gpucost/team": "red",
        "gpucost/user": "ada",
        "cost-center": "cc-42",
        "project": "=HYPERLINK(1)",
    }
    assert json.loads(job_row["SkuPriceDetails"]) == {
        "x_GpuModel": "NVIDIA H800",
        "x_PriceSource": "card",
    }
    idle = next(r for r in rows if r["ResourceType"] == "Idle GPU Capacity")
    assert (idle["ResourceId"], idle["SubAccountName"], idle["BilledCost"]) == (
        f"{CLUSTER}/idle/NVIDIA H800",
        "(idle)",
        "2.100000000",
    )


def test_export_is_an_attachment_streamed_as_csv(
    client: TestClient, auth: Auth, usage: None
) -> None:
    response = client.get(
        "/v1/exports/focus.csv",
        params={"from": "2025-01-01T00:00:00Z", "to": "2025-02-01T00:00:00Z"},
        headers=auth["viewer"],
    )

    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert (
        response.headers["content-disposition"]
        == 'attachment; filename="gpucost-focus-2025010100-2025020100-day.csv"'
    )
    assert "content-length" not in response.headers  # streamed, not buffered whole


def test_text_cells_are_neutralised_against_csv_injection(client: TestClient, auth: Auth) -> None:
    hostile = {
        "model": "=cmd|'/c calc'!A1",
        "team": "+SUM(1)",
        "user": "@evil",
        "name": "-2+3",
        "phase": "\tTab",
    }
    client.put(f"/v1/jobs/{CLUSTER}/66", json=hostile, headers=auth["admin"])
    send(client, auth, 1, 5, 10, [entry(0, job_id="66", gpu_seconds=3600)])

    rows = export(client, auth, **{"from": "2025-01-05T00:00:00Z", "to": "2025-01-06T00:00:00Z"})
    summary = export(
        client, auth, "costs.csv", **{"from": "2025-01-01T00:00:00Z", "to": "2025-02-01T00:00:00Z"}
    )

    row = rows[0]
    assert row["SubAccountName"] == "'+SUM(1)"
    assert row["ResourceName"] == "'-2+3"
    assert row["ChargeDescription"].startswith("NVIDIA H800 on hf-h800 for job 66 (=cmd")
    assert summary[0]["model"] == "'=cmd|'/c calc'!A1"
    assert summary[0]["team"] == "'+SUM(1)"
    for cell in [*row.values(), *summary[0].values()]:
        assert not cell.startswith(("=", "+", "@", "\t", "\r")), cell


def test_cost_summary_per_month(client: TestClient, auth: Auth, usage: None) -> None:
    window = {"from": "2025-01-01T00:00:00Z", "to": "2025-02-01T00:00:00Z"}
    rows = export(client, auth, "costs.csv", **window)

    assert [
        (r["team"], r["model"], r["phase"], r["gpu_hours"], r["usd_per_gpu_hour"], r["cost_usd"])
        for r in rows
    ] == [
        ("(idle)", "(idle)", "(idle)", "1", "2.1", "2.1"),
        ("(unattributed)", "(unattributed)", "(unattributed)", "0.016666667", "2.1", "0.035"),
        # 2.3429166666... shown 2.342916666: the rounding of the row above is carried, so
        # the month's rows add up to its total as the cost API shows it.
        ("red", "llama", "pre-training", "2.342916666", "2.1", "4.920125"),
    ]
    total = client.get("/v1/costs", params=window, headers=auth["viewer"]).json()["total"]
    assert sum(Decimal(r["gpu_hours"]) for r in rows) == Decimal(total["gpu_hours"])
    assert sum(Decimal(r["cost_usd"]) for r in rows) == Decimal(total["cost_usd"])
    assert {(r["billing_month"], r["charge_class"], r["charge_month"]) for r in rows} == {
        ("2025-01", "usage", "2025-01")
    }


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2025-01-01T00:30:00Z", "to": "2025-02-01T00:00:00Z"}, "from"),
        ({"from": "2025-01-02T00:00:00Z", "to": "2025-01-01T00:00:00Z"}, "to"),
        (
            {"from": "2025-01-01T05:00:00Z", "to": "2025-02-01T00:00:00Z", "granularity": "day"},
            "from",
        ),
        (
            {"from": "2025-01-02T00:00:00Z", "to": "2025-02-01T00:00:00Z", "granularity": "month"},
            "from",
        ),
        (
            {"from": "2025-01-01T00:00:00Z", "to": "2025-02-01T00:00:00Z", "granularity": "week"},
            "granularity",
        ),
        ({"to": "2025-02-01T00:00:00Z"}, "from"),
    ],
)
def test_bad_export_requests_are_422(
    client: TestClient, auth: Auth, params: dict[str, str], field: str
) -> None:
    response = client.get("/v1/exports/focus.csv", params=params, headers=auth["viewer"])

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field


def test_collectors_may_not_export(client: TestClient, auth: Auth) -> None:
    params = {"from": "2025-01-01T00:00:00Z", "to": "2025-02-01T00:00:00Z"}

    assert (
        client.get("/v1/exports/focus.csv", params=params, headers=auth["collector"]).status_code
        == 403
    )
    assert client.get("/v1/exports/focus.csv", params=params).status_code == 401
