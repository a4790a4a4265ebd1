"""A model's cost table: peaks and rates when prices change within the period, and models
with more phases than one peaks query asks about at once."""

from fastapi.testclient import TestClient

from app.costs.model_cost import PHASES_PER_PEAKS_QUERY
from tests.app.costs.test_costs import Auth, hour_report, label_job, send, set_rate
from tests.app.scenarios.test_scenarios import priced, put_scenario
from tests.support import entry

A100 = "NVIDIA A100"


def model_cost(client: TestClient, auth: Auth, model: str) -> dict:
    response = client.get(f"/v1/models/{model}/cost", headers=auth["viewer"])
    assert response.status_code == 200, response.text
    return response.json()


def test_peaks_and_rates_across_a_price_change(client: TestClient, auth: Auth) -> None:
    assert set_rate(client, auth, "1.50", "2025-01-01T00:00:00Z").status_code == 201
    assert set_rate(client, auth, "3.50", "2025-01-06T11:00:00Z").status_code == 201
    label_job(client, auth, "a", model="m", phase="pre-training")
    label_job(client, auth, "b", model="m", phase="post-training")
    hour_10 = [entry(g, job_id="a", gpu_seconds=3600) for g in range(4)]
    send(client, auth, hour_report(1, 10, [*hour_10, entry(4, job_id="b", gpu_seconds=3600)]))
    hour_11 = [
        *(entry(g, job_id="a", gpu_seconds=3600) for g in range(2)),
        *(entry(g, job_id="b", gpu_seconds=3600) for g in range(4, 8)),
        # No card for this GPU model: the default rate, $2.
        entry(8, job_id="b", gpu_seconds=1800, model=A100),
    ]
    send(client, auth, hour_report(2, 11, hour_11))

    body = model_cost(client, auth, "m")

    # pre-training: 4 GPU-hours at $1.50, then 2 at $3.50; busiest at 10:00 with 4 GPUs.
    # post-training: 1 at $1.50, then 4 at $3.50 and half an A100 hour at $2; 4.5 GPUs at 11:00.
    # The model's busiest hour is 11:00 (6.5 GPUs): neither phase's busiest, nor their sum.
    assert [
        (p["phase"], p["gpu_hours"], p["cost_usd"], p["peak_gpus"], p["rate_sources"])
        for p in body["phases"]
    ] == [
        ("pre-training", "6", "13", "4", ["card"]),
        ("post-training", "5.5", "16.5", "4.5", ["card", "default"]),
    ]
    total = body["total"]
    assert (total["gpu_hours"], total["cost_usd"], total["peak_gpus"]) == ("11.5", "29.5", "6.5")
    assert body["rates"] == [
        {"gpu_model": A100, "usd_per_gpu_hour": "2", "source": "default"},
        {"gpu_model": "NVIDIA H800", "usd_per_gpu_hour": "1.5", "source": "card"},
        {"gpu_model": "NVIDIA H800", "usd_per_gpu_hour": "3.5", "source": "card"},
    ]


def test_a_model_with_more_phases_than_one_peaks_query_asks(client: TestClient, auth: Auth) -> None:
    phases = [f"phase-{n:02d}" for n in range(PHASES_PER_PEAKS_QUERY + 1)]
    for n, phase in enumerate(phases):
        label_job(client, auth, f"job-{n}", model="m", phase=phase)
    # 10:00: one GPU a phase. 11:00: the last phase alone, on 3 GPUs.
    hour_10 = [entry(n, job_id=f"job-{n}", gpu_seconds=3600) for n in range(len(phases))]
    send(client, auth, hour_report(1, 10, hour_10))
    last = f"job-{len(phases) - 1}"
    send(
        client,
        auth,
        hour_report(2, 11, [entry(g, job_id=last, gpu_seconds=3600) for g in range(3)]),
    )

    body = model_cost(client, auth, "m")

    assert [(p["phase"], p["peak_gpus"]) for p in body["phases"]] == [
        *((phase, "1") for phase in phases[:-1]),
        (phases[-1], "3"),
    ]
    total = body["total"]
    assert (total["gpu_hours"], total["peak_gpus"]) == (str(len(phases) + 3), str(len(phases)))


def test_the_unattributed_model_has_its_jobs_first_and_last_usage(
    client: TestClient, auth: Auth
) -> None:
    # A job without a model is the unattributed model's: its span is that job's, as a named
    # model's is its jobs'.
    send(client, auth, hour_report(1, 10, [entry(0, job_id="x", gpu_seconds=3600)]))
    send(client, auth, hour_report(2, 11, [entry(0, job_id="x", gpu_seconds=1800)]))

    body = model_cost(client, auth, "(unattributed)")

    assert [(p["phase"], p["gpu_hours"]) for p in body["phases"]] == [("(unattributed)", "1.5")]
    phase = body["phases"][0]
    assert (phase["first_usage"], phase["last_usage"]) == (
        "2025-01-06T10:00:00Z",
        "2025-01-06T12:00:00Z",
    )
    assert (body["total"]["first_usage"], body["total"]["last_usage"]) == (
        phase["first_usage"],
        phase["last_usage"],
    )


def test_the_same_question_asked_again_after_a_price_changes_has_the_new_price(
    client: TestClient, auth: Auth
) -> None:
    # A model's figures statement is built once per question and prices (app.costs.
    # model_cost): a restated rate, a rate from a later hour, a scenario's new price each
    # make the next answer to the same question a new one.
    assert set_rate(client, auth, "2.00", "2025-01-01T00:00:00Z").status_code == 201
    label_job(client, auth, "a", model="m", phase="pre-training")
    send(client, auth, hour_report(1, 10, [entry(g, job_id="a", gpu_seconds=3600) for g in (0, 1)]))
    send(client, auth, hour_report(2, 11, [entry(0, job_id="a", gpu_seconds=3600)]))
    assert put_scenario(client, auth, "rental").status_code == 201

    def total(**params: str) -> tuple[str | int, list[str]]:
        response = client.get("/v1/models/m/cost", params=params, headers=auth["viewer"])
        if response.status_code == 404:
            return 404, []
        assert response.status_code == 200, response.text
        body = response.json()
        return body["total"]["cost_usd"], body["total"]["rate_sources"]

    assert total() == total() == ("6", ["card"])
    assert set_rate(client, auth, "2.50", "2025-01-01T00:00:00Z").status_code == 200
    assert total() == ("7.5", ["card"])
    # Back to the first price, and on again: each answer the prices' own.
    assert set_rate(client, auth, "2.00", "2025-01-01T00:00:00Z").status_code == 200
    assert total() == ("6", ["card"])
    assert set_rate(client, auth, "2.50", "2025-01-01T00:00:00Z").status_code == 200
    assert total() == ("7.5", ["card"])
    assert set_rate(client, auth, "4.00", "2025-01-06T11:00:00Z").status_code == 201
    assert total() == ("9", ["card"])
    # No price in the scenario yet: the books'.
    assert total(scenario="rental") == ("9", ["card"])
    priced(client, auth, "rental", effective_from="2025-01-06T11:00:00Z", usd_per_gpu_hour="1")
    assert total(scenario="rental") == ("6", ["scenario", "card"])
    priced(client, auth, "rental", effective_from="2025-01-01T00:00:00Z", usd_per_gpu_hour="3")
    assert total(scenario="rental") == total(scenario="rental") == ("7", ["scenario"])
    assert total() == ("9", ["card"])
    # The scenario deleted, set again as it was, then given another price.
    deleted = client.delete("/v1/scenarios/rental", headers=auth["admin"])
    assert deleted.status_code == 204, deleted.text
    assert total(scenario="rental") == (404, [])
    assert put_scenario(client, auth, "rental").status_code == 201
    priced(client, auth, "rental", effective_from="2025-01-06T11:00:00Z", usd_per_gpu_hour="1")
    priced(client, auth, "rental", effective_from="2025-01-01T00:00:00Z", usd_per_gpu_hour="3")
    assert total(scenario="rental") == ("7", ["scenario"])
    priced(client, auth, "rental", effective_from="2025-01-06T10:00:00Z", usd_per_gpu_hour="5")
    assert total(scenario="rental") == ("11", ["scenario"])
