"""A model's efficiency: GPU-hours per trillion tokens and USD per million tokens, per phase
and in total, exact, and only where the jobs that carry tokens hold all of a phase's GPU-time."""

from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli import cli
from app.core.units import PARTS, US_PER_HOUR, plain
from app.costs._efficiency import Counted, efficiency
from app.costs.figures import Exact
from app.costs.report_table import (
    efficiency_note,
    figure_rows,
    table_rows,
    tokens_text,
    usd_per_token_text,
)
from app.costs.schemas import ModelCost
from tests.app.costs.test_costs import Auth, hour_report, send, set_rate
from tests.support import CLUSTER, entry

EFFICIENCY = (
    "tokens",
    "gpu_hours_with_tokens",
    "gpu_hours_per_trillion_tokens",
    "usd_per_million_tokens",
)


def put_job(client: TestClient, auth: Auth, job_id: str, **fields: Any) -> None:
    response = client.put(f"/v1/jobs/{CLUSTER}/{job_id}", json=fields, headers=auth["admin"])
    assert response.status_code in (200, 201), response.text


def gpu_hours(job_id: str, first_gpu: int, gpus: int) -> list[dict[str, Any]]:
    """`gpus` GPUs for a whole hour each."""
    return [entry(g, job_id=job_id, gpu_seconds=3600) for g in range(first_gpu, first_gpu + gpus)]


def model_cost(client: TestClient, auth: Auth, **params: str) -> dict[str, Any]:
    response = client.get("/v1/models/m/cost", params=params, headers=auth["viewer"])
    assert response.status_code == 200, response.text
    return dict(response.json())


def efficiency_of(body: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    columns = {p["phase"]: p for p in body["phases"]} | {"total": body["total"]}
    return {name: tuple(column[field] for field in EFFICIENCY) for name, column in columns.items()}


def seed(client: TestClient, auth: Auth) -> None:
    """At $2 a GPU-hour, 10:00-11:00: pre-training on 2 GPUs (one job, 10^9 tokens),
    post-training on 1 GPU (a job without a count)."""
    assert set_rate(client, auth, "2.00", "2025-01-01T00:00:00Z").status_code == 201
    put_job(client, auth, "pre", model="m", phase="pre-training", tokens=10**9)
    put_job(client, auth, "post", model="m", phase="post-training")
    send(client, auth, hour_report(1, 10, [*gpu_hours("pre", 0, 2), *gpu_hours("post", 2, 1)]))


def test_phases_with_and_without_tokens(client: TestClient, auth: Auth) -> None:
    seed(client, auth)

    body = model_cost(client, auth)

    # 2 GPU-hours and $4 over 10^9 tokens: 2,000 GPU-hours per 10^12 tokens, $0.004 per 10^6.
    # The total's jobs with a count hold 2 of its 3 GPU-hours: no ratio for the whole run.
    assert efficiency_of(body) == {
        "pre-training": ("1000000000", "2", "2000", "0.004"),
        "post-training": (None, "0", None, None),
        "total": ("1000000000", "2", None, None),
    }


def test_a_phase_partly_covered_has_no_ratio_until_every_job_carries_tokens(
    client: TestClient, auth: Auth
) -> None:
    assert set_rate(client, auth, "2.00", "2025-01-01T00:00:00Z").status_code == 201
    put_job(client, auth, "a", model="m", phase="pre-training", tokens=2 * 10**12)
    put_job(client, auth, "b", model="m", phase="pre-training")
    send(client, auth, hour_report(1, 10, [*gpu_hours("a", 0, 1), *gpu_hours("b", 1, 1)]))

    partly = efficiency_of(model_cost(client, auth))
    put_job(client, auth, "b", tokens=10**12)
    whole = efficiency_of(model_cost(client, auth))

    assert partly["pre-training"] == ("2000000000000", "1", None, None)
    # 2 GPU-hours and $4 over 3 x 10^12 tokens: 0.666… and 0.000001333…, neither a finite
    # decimal, rounded half to even at the ninth place.
    assert whole["pre-training"] == ("3000000000000", "2", "0.666666667", "0.000001333")
    assert whole["total"] == whole["pre-training"]


def test_zero_tokens_give_no_ratio(client: TestClient, auth: Auth) -> None:
    assert set_rate(client, auth, "2.00", "2025-01-01T00:00:00Z").status_code == 201
    put_job(client, auth, "a", model="m", phase="pre-training", tokens=0)
    send(client, auth, hour_report(1, 10, gpu_hours("a", 0, 1)))

    body = model_cost(client, auth)

    assert efficiency_of(body)["pre-training"] == ("0", "1", None, None)
    rows = table_rows(ModelCost.model_validate(body))
    assert rows[3:] == [
        ["GPU Hours per Trillion Tokens", "-", "-", "-", "-"],
        ["USD per Million Tokens", "-", "-", "-", "-"],
    ]


def test_a_job_cut_by_the_period_carries_no_tokens_in_it(client: TestClient, auth: Auth) -> None:
    assert set_rate(client, auth, "2.00", "2025-01-01T00:00:00Z").status_code == 201
    put_job(client, auth, "a", model="m", phase="pre-training", tokens=10**12)
    send(client, auth, hour_report(1, 10, gpu_hours("a", 0, 1)))
    send(client, auth, hour_report(2, 11, gpu_hours("a", 0, 1)))

    whole = model_cost(
        client, auth, **{"from": "2025-01-06T10:00:00Z", "to": "2025-01-06T12:00:00Z"}
    )
    cut = model_cost(client, auth, **{"from": "2025-01-06T11:00:00Z"})

    # Its count is its whole run's: set against one of its two GPU-hours it would halve it.
    assert efficiency_of(whole)["pre-training"] == ("1000000000000", "2", "2", "0.000004")
    assert efficiency_of(cut)["pre-training"] == (None, "0", None, None)


def test_the_v3_pre_training_figure_is_exact() -> None:
    gpu_us = 2_664_000 * US_PER_HOUR
    figures = Exact(gpu_us=gpu_us, cost=gpu_us * 2_000_000)  # $2 per GPU-hour
    counted = Counted(tokens=14_800_000_000_000, gpu_us=gpu_us)

    shown = efficiency(figures, counted)

    assert shown == {
        "tokens": 14_800_000_000_000,
        "gpu_hours_with_tokens": Decimal("2664000"),
        "gpu_hours_per_trillion_tokens": Decimal("180000"),
        "usd_per_million_tokens": Decimal("0.36"),
    }
    assert plain(shown["gpu_hours_per_trillion_tokens"]) == "180000"
    assert figures.cost == 5_328_000 * PARTS


def test_report_shows_the_efficiency_rows_in_every_format(
    client: TestClient, auth: Auth, db_url: str
) -> None:
    seed(client, auth)
    env = {"GPUCOST_DATABASE_URL": db_url, "COLUMNS": "200"}
    run = lambda *args: CliRunner().invoke(cli, ["report", "m", *args], env=env)  # noqa: E731

    markdown, as_csv, table = run("--format", "markdown"), run("--format", "csv"), run()

    assert markdown.exit_code == 0, markdown.output
    assert markdown.stdout.splitlines() == [
        "| Training Costs | Pre-Training | Context Extension | Post-Training | Total |",
        "| --- | --- | --- | --- | --- |",
        "| in H800 GPU Hours | 2 | 0 | 1 | 3 |",
        "| in USD | $4.00 | $0.00 | $2.00 | $6.00 |",
        "| GPU Hours per Trillion Tokens | 2K | - | - | - |",
        "| USD per Million Tokens | $0.004 | - | - | - |",
    ]
    assert as_csv.stdout.splitlines() == [
        "figure,Pre-Training,Context Extension,Post-Training,Total",
        "gpu_hours,2,0,1,3",
        "cost_usd,4,0,2,6",
        "gpu_hours_per_trillion_tokens,2000,,,",
        "usd_per_million_tokens,0.004,,,",
    ]
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    [per_trillion] = [line for line in lines if "GPU Hours per Trillion Tokens" in line]
    [per_million] = [line for line in lines if "USD per Million Tokens" in line]
    assert [cell.strip() for cell in per_trillion.split("│")[1:-1]] == [
        "GPU Hours per Trillion Tokens",
        "2K",
        "-",
        "-",
        "-",
    ]
    assert [cell.strip() for cell in per_million.split("│")[1:-1]] == [
        "USD per Million Tokens",
        "$0.004",
        "-",
        "-",
        "-",
    ]


def test_the_efficiency_note_sets_the_measured_figure_beside_the_reported_one() -> None:
    cost = ModelCost.model_validate(
        {
            "model": "deepseek-v3",
            "start": None,
            "end": None,
            "phases": [phase("pre-training", "180000", 14_800_000_000_000)],
            "total": phase("total", None, 14_800_000_000_000),
            "rates": [{"gpu_model": "NVIDIA H800", "usd_per_gpu_hour": "2", "source": "card"}],
        }
    )
    stated = Decimal(180_000)

    assert efficiency_note(cost, phase="pre-training", stated=stated) == (
        "Efficiency: 180K H800 GPU-hours per trillion pre-training tokens (14.8T tokens), "
        "as the report states (180K)."
    )
    assert efficiency_note(cost, phase="pre-training", stated=Decimal(175_000)) == (
        "Efficiency: 180K H800 GPU-hours per trillion pre-training tokens (14.8T tokens), "
        "where the report states (175K)."
    )
    assert efficiency_note(cost, phase="post-training", stated=stated) == (
        "Efficiency: no GPU-hours per trillion post-training tokens measured; "
        "the report states 180K."
    )
    assert figure_rows(cost)[3:] == [
        ["gpu_hours_per_trillion_tokens", "180000", "", "", ""],
        ["usd_per_million_tokens", "0.36", "", "", ""],
    ]


def phase(name: str, per_trillion: str | None, tokens: int) -> dict[str, Any]:
    return {
        "phase": name,
        "gpu_seconds": "0",
        "gpu_hours": "2664000",
        "busy_gpu_hours": "0",
        "energy_kwh": "0",
        "cost_usd": "5328000",
        "energy_cost_usd": None,
        "rate_sources": ["card"],
        "share": "1",
        "first_usage": None,
        "last_usage": None,
        "peak_gpus": "2048",
        "tokens": tokens,
        "gpu_hours_with_tokens": "2664000",
        "gpu_hours_per_trillion_tokens": per_trillion,
        "usd_per_million_tokens": None if per_trillion is None else "0.36",
    }


def test_a_job_cut_by_the_end_alone_carries_no_tokens(client: TestClient, auth: Auth) -> None:
    assert set_rate(client, auth, "2.00", "2025-01-01T00:00:00Z").status_code == 201
    put_job(client, auth, "a", model="m", phase="pre-training", tokens=10**12)
    send(client, auth, hour_report(1, 10, gpu_hours("a", 0, 1)))
    send(client, auth, hour_report(2, 11, gpu_hours("a", 0, 1)))

    cut = model_cost(client, auth, to="2025-01-06T11:00:00Z")

    assert efficiency_of(cut)["pre-training"] == (None, "0", None, None)


def test_a_cluster_filter_counts_that_clusters_jobs_only(
    client: TestClient, auth: Auth, db_url: str
) -> None:
    """Two clusters' pre-training jobs, each with its tokens: asked for one cluster, the
    other's tokens and GPU-time are not counted."""
    from tests.conftest import make_token

    other = {"Authorization": f"Bearer {make_token(db_url, 'collector', 'eu-a100', name='eu')}"}
    assert set_rate(client, auth, "2.00", "2025-01-01T00:00:00Z").status_code == 201
    put_job(client, auth, "a", model="m", phase="pre-training", tokens=10**12)
    send(client, auth, hour_report(1, 10, gpu_hours("a", 0, 1)))
    labels = {"model": "m", "phase": "pre-training", "tokens": 3 * 10**12}
    assert client.put("/v1/jobs/eu-a100/b", json=labels, headers=other).status_code == 201
    body = hour_report(1, 10, gpu_hours("b", 8, 1), cluster="eu-a100")
    assert client.post("/v1/reports", json=body, headers=other).status_code == 201

    one = model_cost(client, auth, cluster=CLUSTER)
    both = model_cost(client, auth)

    assert efficiency_of(one)["pre-training"] == ("1000000000000", "1", "1", "0.000002")
    assert efficiency_of(both)["pre-training"] == ("4000000000000", "2", "0.5", "0.000001")


def test_a_job_without_a_phase_has_its_ratio_under_unattributed(
    client: TestClient, auth: Auth
) -> None:
    assert set_rate(client, auth, "2.00", "2025-01-01T00:00:00Z").status_code == 201
    put_job(client, auth, "a", model="m", tokens=10**12)
    send(client, auth, hour_report(1, 10, gpu_hours("a", 0, 1)))

    body = model_cost(client, auth)

    assert efficiency_of(body) == {
        "(unattributed)": ("1000000000000", "1", "1", "0.000002"),
        "total": ("1000000000000", "1", "1", "0.000002"),
    }


def test_the_cli_never_shows_a_figure_as_zero_or_in_a_unit_too_large() -> None:
    assert usd_per_token_text(Decimal("0.000001333")) == "$0.000001333"
    assert usd_per_token_text(Decimal("0.00354")) == "$0.0035"
    assert usd_per_token_text(Decimal(0)) == "$0.00"
    assert tokens_text(999_999_600_000) == "1T"
    assert tokens_text(999_400_000_000) == "999.4B"
    assert tokens_text(999) == "999"
