"""`/v1/scenarios`: writes by admins only and audited, prices given or from TCO inputs,
restatements refused, errors that name the field, and unknown names answered with the
nearest."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.scenarios import service
from tests.app.costs.test_costs import Auth
from tests.app.scenarios.test_scenarios import OWNED, add_price, priced, put_scenario, seed

START = "2025-01-01T00:00:00Z"


def test_a_scenario_is_created_listed_described_and_deleted(client: TestClient, auth: Auth) -> None:
    created = put_scenario(client, auth, "owned-tco", "illustrative")
    assert created.status_code == 201, created.text
    assert put_scenario(client, auth, "owned-tco", "illustrative").status_code == 200
    assert put_scenario(client, auth, "owned-tco", "ours").status_code == 200
    priced(client, auth, "owned-tco", effective_from=START, tco=OWNED)
    priced(client, auth, "owned-tco", effective_from="2025-03-01T00:00:00Z",
           usd_per_gpu_hour="1.25")  # fmt: skip
    priced(client, auth, "owned-tco", gpu_model="NVIDIA H800", effective_from=START,
           usd_per_gpu_hour="2", usd_per_kwh="0.1")  # fmt: skip

    [listed] = client.get("/v1/scenarios", headers=auth["viewer"]).json()
    one = client.get("/v1/scenarios/owned-tco", headers=auth["viewer"]).json()

    assert listed == one
    assert (one["name"], one["description"], one["created_by"]) == ("owned-tco", "ours", "admin")
    prices = [
        (p["gpu_model"], p["effective_from"], p["effective_to"], p["basis"],
         p["usd_per_gpu_hour"], p["usd_per_kwh"], p["tco"])
        for p in one["prices"]
    ]  # fmt: skip
    assert prices == [
        (None, START, "2025-03-01T00:00:00Z", "tco", "1.061644", "0.104",
         {**OWNED, "amortisation_months": 48}),
        (None, "2025-03-01T00:00:00Z", None, "price", "1.25", None, None),
        ("NVIDIA H800", START, None, "price", "2", "0.1", None),
    ]  # fmt: skip

    deleted = client.delete("/v1/scenarios/owned-tco", headers=auth["admin"])
    assert deleted.status_code == 204, deleted.text
    assert client.get("/v1/scenarios", headers=auth["viewer"]).json() == []
    gone = client.get("/v1/scenarios/owned-tco", headers=auth["viewer"])
    assert gone.status_code == 404
    actions = [
        (e["action"], e["target"], e["actor"])
        for e in client.get(
            "/v1/audit", params={"action": "scenario"}, headers=auth["admin"]
        ).json()["entries"]
    ]
    assert actions == [
        ("scenario.delete", "scenario:owned-tco", "admin"),
        ("scenario.update", "scenario:owned-tco", "admin"),
        ("scenario.create", "scenario:owned-tco", "admin"),
    ]
    price_entries = client.get(
        "/v1/audit", params={"action": "scenario_price"}, headers=auth["admin"]
    ).json()["entries"]
    assert [e["target"] for e in price_entries] == [
        f"scenario_price:owned-tco/NVIDIA H800/{START.replace('Z', '+00:00')}",
        "scenario_price:owned-tco/(all)/2025-03-01T00:00:00+00:00",
        f"scenario_price:owned-tco/(all)/{START.replace('Z', '+00:00')}",
    ]
    assert price_entries[-1]["details"]["tco"]["pue"] == "1.3"


def test_the_same_price_again_is_no_change_and_another_one_a_conflict(
    client: TestClient, auth: Auth
) -> None:
    assert put_scenario(client, auth, "rental-2usd").status_code == 201
    body = {"gpu_model": "NVIDIA H800", "effective_from": START, "usd_per_gpu_hour": "2"}
    assert add_price(client, auth, "rental-2usd", **body).status_code == 201

    again = add_price(client, auth, "rental-2usd", **{**body, "usd_per_gpu_hour": "2.000"})
    other = add_price(client, auth, "rental-2usd", **{**body, "usd_per_gpu_hour": "2.5"})
    owned = add_price(client, auth, "rental-2usd", **{**body, "usd_per_gpu_hour": None},
                      tco=OWNED)  # fmt: skip

    assert again.status_code == 200 and again.json()["usd_per_gpu_hour"] == "2"
    assert other.status_code == owned.status_code == 409
    assert other.json()["detail"].startswith(
        "scenario 'rental-2usd' already has another price for NVIDIA H800 from "
        "2025-01-01T00:00:00+00:00 ($2 per GPU-hour, price)"
    )
    entries = client.get("/v1/audit", params={"action": "scenario_price"}, headers=auth["admin"])
    assert len(entries.json()["entries"]) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"usd_per_gpu_hour": "2", "tco": OWNED}, "tco"),
        ({"usd_per_kwh": "0.1", "tco": OWNED}, "tco"),
        ({}, "usd_per_gpu_hour"),
        ({"usd_per_gpu_hour": "2.0000001"}, "usd_per_gpu_hour"),
        ({"usd_per_gpu_hour": "-1"}, "usd_per_gpu_hour"),
        ({"tco": {**OWNED, "pue": "0.99"}}, "tco.pue"),
        ({"tco": {**OWNED, "pue": "1.3001"}}, "tco.pue"),
        ({"tco": {**OWNED, "amortisation_months": 0}}, "tco.amortisation_months"),
        ({"tco": {**OWNED, "amortisation_months": "1.5"}}, "tco.amortisation_months"),
        ({"tco": {**OWNED, "purchase_usd": "-30000"}}, "tco.purchase_usd"),
        # Past what the columns hold: refused at the edge, never a database error.
        ({"tco": {**OWNED, "purchase_usd": "1000000000000"}}, "tco.purchase_usd"),
        ({"tco": {**OWNED, "amortisation_months": 1_000_000}}, "tco.amortisation_months"),
        ({"tco": {**OWNED, "pue": "1.0005"}}, "tco.pue"),
        # $100M over one month: $136,986.30 a GPU-hour, over the $10,000 any price may be.
        ({"tco": {**OWNED, "purchase_usd": "100000000", "amortisation_months": 1}}, "tco"),
        ({"tco": {**OWNED, "hosting_usd_per_month": "150.0000001"}}, "tco.hosting_usd_per_month"),
        ({"tco": {**OWNED, "electricity_usd_per_kwh": True}}, "tco.electricity_usd_per_kwh"),
        ({"usd_per_gpu_hour": "2", "effective_from": "2025-01-01T00:30:00Z"}, "effective_from"),
    ],
)
def test_a_wrong_price_is_refused_naming_the_field(
    client: TestClient, auth: Auth, body: dict[str, Any], field: str
) -> None:
    assert put_scenario(client, auth, "s").status_code == 201

    response = add_price(client, auth, "s", **{"effective_from": START, **body})

    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert client.get("/v1/scenarios/s", headers=auth["viewer"]).json()["prices"] == []


def test_an_unknown_scenario_is_refused_naming_the_nearest(client: TestClient, auth: Auth) -> None:
    for name in ("rental-2usd", "owned-tco"):
        assert put_scenario(client, auth, name).status_code == 201

    for path in ("/v1/costs", "/v1/models/m/cost", "/v1/scenarios/rental-2us"):
        response = client.get(path, params={"scenario": "rental-2us"}, headers=auth["viewer"])
        assert response.status_code == 404, (path, response.text)
        assert response.json()["detail"] == (
            "no scenario named 'rental-2us'; did you mean rental-2usd?"
        )
    far = client.get("/v1/costs", params={"scenario": "zzz"}, headers=auth["viewer"])
    assert far.json()["detail"] == "no scenario named 'zzz' (there are owned-tco, rental-2usd)"
    price = add_price(client, auth, "nope", effective_from=START, usd_per_gpu_hour="2")
    assert price.status_code == 404
    bad_name = client.get("/v1/costs", params={"scenario": "a b"}, headers=auth["viewer"])
    assert bad_name.status_code == 422
    assert bad_name.json()["errors"][0]["field"] == "scenario"
    assert put_scenario(client, auth, "-x").status_code == 422
    assert put_scenario(client, auth, "x" * 65).status_code == 422


def test_only_an_admin_changes_scenarios(client: TestClient, auth: Auth) -> None:
    assert put_scenario(client, auth, "s").status_code == 201
    viewer = auth["viewer"]
    writes = [
        client.put("/v1/scenarios/t", json={}, headers=viewer),
        client.post(
            "/v1/scenarios/s/prices",
            json={"effective_from": START, "usd_per_gpu_hour": "2"},
            headers=viewer,
        ),
        client.delete("/v1/scenarios/s", headers=viewer),
        client.delete("/v1/scenarios/s", headers=auth["collector"]),
    ]

    assert [w.status_code for w in writes] == [403] * 4
    assert client.get("/v1/scenarios", headers=auth["collector"]).status_code == 403
    assert [s["name"] for s in client.get("/v1/scenarios", headers=viewer).json()] == ["s"]
    assert client.get("/v1/scenarios").status_code == 401


def test_booked_names_the_books_everywhere_and_no_scenario(client: TestClient, auth: Auth) -> None:
    seed(client, auth)
    for path in ("/v1/costs", "/v1/models/m/cost"):
        books = client.get(path, headers=auth["viewer"]).json()
        for name in ("booked", "Booked"):
            asked = client.get(path, params={"scenario": name}, headers=auth["viewer"])
            assert asked.status_code == 200, asked.text
            assert asked.json() == books and books["scenario"] is None, path
    for name in ("booked", "Booked", "BOOKED"):
        refused = put_scenario(client, auth, name)
        assert refused.status_code == 422
        assert refused.json()["detail"] == (
            f"name: '{name}' is what reports call the books: choose another"
        )


def test_a_scenario_holds_at_most_max_prices_and_a_refused_one_stores_nothing(
    client: TestClient, auth: Auth, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "MAX_PRICES", 3)
    assert put_scenario(client, auth, "s").status_code == 201
    hours = [f"2025-01-01T0{h}:00:00Z" for h in range(5)]
    for hour in hours[:3]:
        priced(client, auth, "s", effective_from=hour, usd_per_gpu_hour="2")

    refused = add_price(client, auth, "s", effective_from=hours[3], usd_per_gpu_hour="2")
    again = add_price(client, auth, "s", effective_from=hours[0], usd_per_gpu_hour="2")

    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        "scenario 's' has 3 prices, the most one may have: delete the scenario and set it "
        "again with fewer, or make another"
    )
    assert again.status_code == 200  # the same price again is still no change
    stored = client.get("/v1/scenarios/s", headers=auth["viewer"]).json()["prices"]
    assert [p["effective_from"] for p in stored] == hours[:3]
    audit = client.get("/v1/audit", headers=auth["admin"]).json()
    created = [e for e in audit["entries"] if e["action"] == "scenario_price.create"]
    assert len(created) == 3
