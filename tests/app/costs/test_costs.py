"""Cost queries: rates in force per hour, overrides, restatements, idle and unattributed time."""

from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import AuditEntry
from tests.support import CLUSTER, entry, report

Auth = dict[str, dict[str, str]]


def hour_report(
    seq: int,
    hour: int,
    gpus: list[dict[str, Any]],
    *,
    node: str = "node-017",
    cluster: str = CLUSTER,
) -> dict:
    """One full hour, 2025-01-06 at `hour`:00, for the given entries (3600 s each by default)."""
    return report(
        seq,
        start=f"2025-01-06T{hour:02d}:00:00Z",
        end=f"2025-01-06T{hour + 1:02d}:00:00Z",
        gpus=gpus,
        node=node,
        cluster=cluster,
    )


def send(client: TestClient, auth: Auth, body: dict, token: str = "collector") -> None:
    response = client.post("/v1/reports", json=body, headers=auth[token])
    assert response.status_code == 201, response.text


def set_rate(
    client: TestClient,
    auth: Auth,
    usd: str,
    start: str,
    cluster: str | None = None,
    model: str = "NVIDIA H800",
) -> Any:
    body = {
        "gpu_model": model,
        "usd_per_gpu_hour": usd,
        "effective_from": start,
        "cluster": cluster,
    }
    return client.post("/v1/rates", json=body, headers=auth["admin"])


def costs(client: TestClient, auth: Auth, **params: Any) -> dict:
    response = client.get("/v1/costs", params=params, headers=auth["viewer"])
    assert response.status_code == 200, response.text
    return response.json()


def label_job(client: TestClient, auth: Auth, job_id: str, **labels: str) -> None:
    assert client.put(
        f"/v1/jobs/{CLUSTER}/{job_id}", json=labels, headers=auth["admin"]
    ).status_code in (200, 201)


def test_each_hour_is_priced_at_the_rate_in_force_then(
    client: TestClient, auth: Auth, db: Session
) -> None:
    assert set_rate(client, auth, "2.00", "2025-01-01T00:00:00Z").status_code == 201
    assert set_rate(client, auth, "3.50", "2025-01-06T11:00:00Z").status_code == 201
    for hour in (10, 11, 12):
        send(
            client,
            auth,
            hour_report(hour, hour, [entry(0, gpu_seconds=3600), entry(1, gpu_seconds=1800)]),
        )

    body = costs(client, auth, group_by="day")

    # 1.5 GPU-hours an hour: 10:00 at $2.00, 11:00 and 12:00 at $3.50.
    assert body["rows"] == [
        {
            "day": "2025-01-06",
            "gpu_seconds": "16200",
            "gpu_hours": "4.5",
            "busy_gpu_hours": "4.3875",
            "energy_kwh": "0.068666667",
            "cost_usd": "13.5",
            "energy_cost_usd": None,
            "rate_sources": ["card"],
        }
    ]
    assert body["total"]["cost_usd"] == "13.5"
    rates = client.get("/v1/rates", headers=auth["viewer"]).json()
    assert [(r["usd_per_gpu_hour"], r["effective_from"], r["effective_to"]) for r in rates] == [
        ("2", "2025-01-01T00:00:00Z", "2025-01-06T11:00:00Z"),
        ("3.5", "2025-01-06T11:00:00Z", None),
    ]


def test_cluster_override_applies_to_its_cluster_only(
    client: TestClient, auth: Auth, db_url: str
) -> None:
    from tests.conftest import make_token

    other = {"Authorization": f"Bearer {make_token(db_url, 'collector', 'eu-a100', name='eu')}"}
    set_rate(client, auth, "2.00", "2025-01-01T00:00:00Z")
    set_rate(client, auth, "1.25", "2025-01-01T00:00:00Z", cluster="eu-a100")
    send(client, auth, hour_report(1, 10, [entry(0, gpu_seconds=3600)]))
    response = client.post(
        "/v1/reports",
        json=hour_report(1, 10, [entry(9, gpu_seconds=3600)], cluster="eu-a100"),
        headers=other,
    )
    assert response.status_code == 201

    rows = costs(client, auth, group_by="cluster")["rows"]

    assert [(r["cluster"], r["cost_usd"]) for r in rows] == [("eu-a100", "1.25"), ("hf-h800", "2")]


def test_restating_a_past_rate_reprices_the_past_and_is_audited(
    client: TestClient, auth: Auth, db: Session
) -> None:
    set_rate(client, auth, "2.00", "2025-01-01T00:00:00Z")
    send(client, auth, hour_report(1, 10, [entry(0, gpu_seconds=3600)]))
    assert costs(client, auth)["total"]["cost_usd"] == "2"

    restated = set_rate(client, auth, "2.40", "2025-01-01T00:00:00Z")
    unchanged = set_rate(client, auth, "2.40", "2025-01-01T00:00:00Z")

    assert restated.status_code == 200 and restated.json()["usd_per_gpu_hour"] == "2.4"
    assert unchanged.status_code == 200
    assert costs(client, auth)["total"]["cost_usd"] == "2.4"
    audit = (
        db.execute(
            select(AuditEntry).where(AuditEntry.action.like("rate.%")).order_by(AuditEntry.id)
        )
        .scalars()
        .all()
    )
    assert [(a.action, a.actor, a.details["old"], a.details["new"]) for a in audit] == [
        ("rate.create", "admin", None, "2"),
        ("rate.restate", "admin", "2", "2.4"),
    ]


def test_default_rate_prices_unknown_models_and_says_so(client: TestClient, auth: Auth) -> None:
    set_rate(client, auth, "2.00", "2025-01-01T00:00:00Z")
    send(
        client,
        auth,
        hour_report(
            1, 10, [entry(0, gpu_seconds=3600), entry(1, gpu_seconds=3600, model="NVIDIA B200")]
        ),
    )

    body = costs(client, auth, group_by="gpu_model")

    assert [(r["gpu_model"], r["cost_usd"], r["rate_sources"]) for r in body["rows"]] == [
        ("NVIDIA B200", "2", ["default"]),
        ("NVIDIA H800", "2", ["card"]),
    ]
    assert body["total"]["rate_sources"] == ["card", "default"]
    assert body["default_usd_per_gpu_hour"] == "2"


def test_idle_and_unattributed_time_are_groups_of_their_own(client: TestClient, auth: Auth) -> None:
    label_job(client, auth, "1", model="llama", phase="Pretrain", team="red")
    send(
        client,
        auth,
        hour_report(
            1,
            10,
            [
                entry(0, job_id="1", gpu_seconds=3600),
                entry(1, job_id=None, gpu_seconds=3600),
                entry(2, job_id="2", gpu_seconds=1800),
            ],
        ),
    )

    rows = costs(client, auth, group_by="model,phase")["rows"]
    without_idle = costs(client, auth, group_by="model", include_idle="false")
    idle_only = costs(client, auth, model="(idle)")

    assert [(r["model"], r["phase"], r["gpu_hours"]) for r in rows] == [
        ("(idle)", "(idle)", "1"),
        ("(unattributed)", "(unattributed)", "0.5"),
        ("llama", "pre-training", "1"),
    ]
    assert [r["model"] for r in without_idle["rows"]] == ["(unattributed)", "llama"]
    assert without_idle["total"]["gpu_hours"] == "1.5"
    assert idle_only["total"]["gpu_hours"] == "1"


def test_filters_and_period_edges_work_by_whole_hours(client: TestClient, auth: Auth) -> None:
    label_job(client, auth, "1", model="llama", phase="pre_training", team="red", user="ada")
    label_job(client, auth, "2", model="mistral", team="blue")
    for hour in (9, 10, 11):
        send(
            client,
            auth,
            hour_report(
                hour,
                hour,
                [entry(0, job_id="1", gpu_seconds=3600), entry(1, job_id="2", gpu_seconds=3600)],
            ),
        )

    window = costs(client, auth, **{"from": "2025-01-06T10:00:00Z", "to": "2025-01-06T11:00:00Z"})
    open_start = costs(client, auth, to="2025-01-06T11:00:00Z", team="red")
    by_phase_spelling = costs(client, auth, phase="PRE-TRAINING", user="ada")
    one_job = costs(client, auth, job_id="2", group_by="job")

    assert window["total"]["gpu_hours"] == "2"
    assert open_start["total"]["gpu_hours"] == "2"
    assert by_phase_spelling["total"]["gpu_hours"] == "3"
    assert [(r["cluster"], r["job"], r["gpu_hours"]) for r in one_job["rows"]] == [
        (CLUSTER, "2", "3")
    ]


def test_energy_has_its_own_price_and_figure(client: TestClient, auth: Auth) -> None:
    body = {"usd_per_kwh": "0.12", "effective_from": "2025-01-01T00:00:00Z"}
    assert client.post("/v1/energy-rates", json=body, headers=auth["admin"]).status_code == 201
    send(
        client, auth, hour_report(1, 10, [entry(0, gpu_seconds=3600, energy_j=2_520_000)])
    )  # 0.7 kWh

    total = costs(client, auth)["total"]

    assert (total["energy_kwh"], total["energy_cost_usd"], total["cost_usd"]) == (
        "0.7",
        "0.084",
        "2",
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2025-01-06T10:30:00Z"}, "from"),
        ({"from": "2025-01-06T11:00:00Z", "to": "2025-01-06T10:00:00Z"}, "to"),
        ({"group_by": "model,colour"}, "group_by"),
        ({"group_by": "model,model"}, "group_by"),
        ({"from": "soon"}, "from"),
    ],
)
def test_bad_cost_queries_are_422(client: TestClient, auth: Auth, params: dict, field: str) -> None:
    response = client.get("/v1/costs", params=params, headers=auth["viewer"])

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"usd_per_gpu_hour": "2.0000001"}, "usd_per_gpu_hour"),
        ({"usd_per_gpu_hour": "-1"}, "usd_per_gpu_hour"),
        ({"effective_from": "2025-01-01T00:30:00Z"}, "effective_from"),
        ({"effective_from": "2025-01-01T00:00:00"}, "effective_from"),
        ({"gpu_model": ""}, "gpu_model"),
    ],
)
def test_bad_rates_are_422_and_change_nothing(
    client: TestClient, auth: Auth, body: dict, field: str
) -> None:
    good = {
        "gpu_model": "NVIDIA H800",
        "usd_per_gpu_hour": "2",
        "effective_from": "2025-01-01T00:00:00Z",
    }

    response = client.post("/v1/rates", json={**good, **body}, headers=auth["admin"])

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field
    assert client.get("/v1/rates", headers=auth["viewer"]).json() == []


def test_only_admins_set_rates_and_model_cost_404s_without_usage(
    client: TestClient, auth: Auth
) -> None:
    good = {
        "gpu_model": "NVIDIA H800",
        "usd_per_gpu_hour": "2",
        "effective_from": "2025-01-01T00:00:00Z",
    }

    assert client.post("/v1/rates", json=good, headers=auth["viewer"]).status_code == 403
    assert client.post("/v1/rates", json=good, headers=auth["collector"]).status_code == 403
    missing = client.get("/v1/models/nothing/cost", headers=auth["viewer"])
    assert missing.status_code == 404
    assert missing.json()["error"] == "NotFound"


def test_model_cost_orders_phases_and_finds_the_peak(client: TestClient, auth: Auth) -> None:
    for job_id, phase in [
        ("a", "post-training"),
        ("b", "eval"),
        ("c", "pretrain"),
        ("d", "ablation"),
    ]:
        label_job(client, auth, job_id, model="m", phase=phase)
    send(
        client, auth, hour_report(1, 10, [entry(g, job_id="c", gpu_seconds=3600) for g in range(4)])
    )
    send(
        client,
        auth,
        hour_report(
            2,
            11,
            [
                entry(0, job_id="a", gpu_seconds=900),
                entry(1, job_id="b", gpu_seconds=3600),
                entry(2, job_id="d", gpu_seconds=1800),
            ],
        ),
    )

    body = client.get("/v1/models/m/cost", headers=auth["viewer"]).json()

    assert [(p["phase"], p["gpu_hours"], p["peak_gpus"]) for p in body["phases"]] == [
        ("pre-training", "4", "4"),
        ("post-training", "0.25", "0.25"),
        ("ablation", "0.5", "0.5"),
        ("eval", "1", "1"),
    ]
    assert (body["total"]["gpu_hours"], body["total"]["peak_gpus"]) == ("5.75", "4")
    assert sum(Decimal(p["share"]) for p in body["phases"]) == 1
