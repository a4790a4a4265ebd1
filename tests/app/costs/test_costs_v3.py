"""Acceptance: the DeepSeek-V3 training-cost table, reproduced exactly from measured usage.

256 nodes x 8 NVIDIA H800 is the reference fleet; this test reports the same 2,048 GPUs as
8 collectors of 256 GPUs each, one report per node and phase, through the HTTP API, with the
report interval limit raised to cover a phase (a limit the service lets operators set). The
hourly rollup still splits every report into UTC hours, and costs are summed from those.
"""

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli import cli
from app.main import create_app
from tests.support import ROOT, SettableClock, entry, report

REFERENCE = (
    json.loads((ROOT.parent / "shared/reference/deepseek-v3-training-cost.json").read_text())
    if (ROOT.parent / "shared/reference/deepseek-v3-training-cost.json").exists()
    else None
)
NODES, GPUS_PER_NODE = 8, 256
PHASES = [  # phase, job id, start, GPU-hours
    ("pre-training", "v3-pretrain", datetime(2024, 9, 1, tzinfo=UTC), 2_664_000),
    ("context-extension", "v3-long-context", datetime(2024, 11, 1, tzinfo=UTC), 119_000),
    ("post-training", "v3-sft-rl", datetime(2024, 11, 10, tzinfo=UTC), 5_000),
]


V3_PHASES = [
    ("pre-training", "2664000", "5328000"),
    ("context-extension", "119000", "238000"),
    ("post-training", "5000", "10000"),
]
# The report's table, as `gpucost report --format markdown` prints it; then the rows a
# model gets once its pre-training job carries the report's 14.8T tokens.
V3_MARKDOWN = [
    "| Training Costs | Pre-Training | Context Extension | Post-Training | Total |",
    "| --- | --- | --- | --- | --- |",
    "| in H800 GPU Hours | 2664K | 119K | 5K | 2788K |",
    "| in USD | $5.328M | $0.238M | $0.01M | $5.576M |",
]
V3_EFFICIENCY_MARKDOWN = [
    "| GPU Hours per Trillion Tokens | 180K | - | - | - |",
    "| USD per Million Tokens | $0.36 | - | - | - |",
]


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def v3_client(settings, clock: SettableClock, auth) -> TestClient:
    wide = settings.model_copy(update={"max_report_interval_seconds": 60 * 86400})
    with TestClient(create_app(wide, clock=clock)) as client:
        rate = {
            "gpu_model": "NVIDIA H800",
            "usd_per_gpu_hour": "2.00",
            "effective_from": "2024-01-01T00:00:00Z",
        }
        assert client.post("/v1/rates", json=rate, headers=auth["admin"]).status_code == 201
        seq = 0
        for phase, job_id, start, gpu_hours in PHASES:
            per_gpu_seconds = Decimal(gpu_hours) * 3600 / (NODES * GPUS_PER_NODE)
            end = start + timedelta(seconds=float(per_gpu_seconds))
            assert (end - start).total_seconds() == per_gpu_seconds  # exact to the microsecond
            labels = {"model": "deepseek-v3", "phase": phase, "team": "foundation"}
            put = client.put(f"/v1/jobs/hf-h800/{job_id}", json=labels, headers=auth["admin"])
            assert put.status_code == 201, put.text
            for node in range(NODES):
                gpus = [
                    entry(node * GPUS_PER_NODE + g, job_id=job_id, gpu_seconds=str(per_gpu_seconds))
                    for g in range(GPUS_PER_NODE)
                ]
                for g, gpu in enumerate(gpus):
                    gpu["index"] = g
                body = report(
                    seq, start=iso(start), end=iso(end), node=f"node-{node:03d}", gpus=gpus
                )
                response = client.post("/v1/reports", json=body, headers=auth["collector"])
                assert response.status_code == 201, response.text
                seq += 1
        yield client


def test_model_cost_reproduces_the_v3_table(v3_client: TestClient, auth) -> None:
    response = v3_client.get("/v1/models/deepseek-v3/cost", headers=auth["viewer"])

    assert response.status_code == 200, response.text
    body = response.json()
    # Exact, not rounded: each figure is summed exactly and rounded once, where shown.
    assert [(p["phase"], p["gpu_hours"], p["cost_usd"]) for p in body["phases"]] == V3_PHASES
    assert (body["total"]["gpu_hours"], body["total"]["cost_usd"]) == ("2788000", "5576000")
    phases = [(p["phase"], Decimal(p["gpu_hours"]), Decimal(p["cost_usd"])) for p in body["phases"]]
    assert [p["peak_gpus"] for p in body["phases"]] == ["2048", "2048", "2048"]
    assert body["phases"][0]["first_usage"] == "2024-09-01T00:00:00Z"
    assert body["phases"][0]["last_usage"] == "2024-10-25T04:46:52.500000Z"
    assert [Decimal(p["share"]) for p in body["phases"]] == [
        Decimal("0.955524"),
        Decimal("0.042683"),
        Decimal("0.001793"),
    ]
    assert body["rates"] == [
        {"gpu_model": "NVIDIA H800", "usd_per_gpu_hour": "2", "source": "card"}
    ]
    if REFERENCE:
        reference = {p["phase"]: p for p in REFERENCE["phases"]}
        for phase, gpu_hours, cost in phases:
            assert gpu_hours == reference[phase]["gpu_hours"]
            assert cost == Decimal(reference[phase]["cost_usd"])


def test_every_grouping_agrees_on_the_v3_total(v3_client: TestClient, auth) -> None:
    totals = set()
    for group_by in ["", "phase", "team,model", "job", "day", "month,phase", "gpu_model,cluster"]:
        body = v3_client.get(
            "/v1/costs", params={"group_by": group_by}, headers=auth["viewer"]
        ).json()
        row_sum = sum(Decimal(r["cost_usd"]) for r in body["rows"])
        assert row_sum == Decimal(body["total"]["cost_usd"]), group_by
        totals.add((body["total"]["cost_usd"], body["total"]["gpu_hours"]))
    assert totals == {("5576000", "2788000")}


def test_every_route_and_export_shows_the_v3_phases_exactly(
    v3_client: TestClient, auth, db_url: str
) -> None:
    viewer = auth["viewer"]
    rows = v3_client.get("/v1/costs", params={"group_by": "phase"}, headers=viewer).json()["rows"]
    assert sorted((r["phase"], r["gpu_hours"], r["cost_usd"]) for r in rows) == sorted(V3_PHASES)
    window = {"from": "2024-09-01T00:00:00Z", "to": "2024-12-01T00:00:00Z"}
    per_phase: dict[str, list[Decimal]] = {}
    for name, hours, cost in (("focus.csv", "PricingQuantity", "BilledCost"),
                              ("costs.csv", "gpu_hours", "cost_usd")):  # fmt: skip
        response = v3_client.get(f"/v1/exports/{name}", params=window, headers=viewer)
        assert response.status_code == 200, response.text
        figures = per_phase[name] = []
        for row in csv.DictReader(io.StringIO(response.text)):
            figures.append(
                (
                    row.get("phase") or json.loads(row["Tags"])["gpucost/phase"],
                    row[hours],
                    row[cost],
                )
            )
    # Each month's rows, with nothing to round, read exactly as the usage was: whole figures
    # (the FOCUS export writes every number of a column with that column's decimals).
    assert all("." not in hours and "." not in cost for _, hours, cost in per_phase["costs.csv"])
    assert all(
        hours.endswith(".000000000") and cost.endswith(".000000000")
        for _, hours, cost in per_phase["focus.csv"]
    )
    for figures in per_phase.values():
        summed = {phase: (sum(Decimal(h) for p, h, _ in figures if p == phase),
                          sum(Decimal(c) for p, _, c in figures if p == phase))
                  for phase, _, _ in V3_PHASES}  # fmt: skip
        assert summed == {p: (Decimal(h), Decimal(c)) for p, h, c in V3_PHASES}
    metrics = v3_client.get("/metrics").text
    for phase, _, cost in V3_PHASES:
        line = next(m for m in metrics.splitlines()
                    if m.startswith("gpucost_cost_usd{") and f'phase="{phase}"' in m)  # fmt: skip
        assert Decimal(line.split()[-1]) == Decimal(cost), line
    as_json = CliRunner().invoke(
        cli, ["report", "deepseek-v3", "--format", "json"], env={"GPUCOST_DATABASE_URL": db_url}
    )
    body = json.loads(as_json.stdout)
    assert [(p["phase"], p["gpu_hours"], p["cost_usd"]) for p in body["phases"]] == V3_PHASES


def test_cli_report_prints_the_v3_layout(v3_client: TestClient, db_url: str) -> None:
    runner = CliRunner()
    env = {"GPUCOST_DATABASE_URL": db_url}

    markdown = runner.invoke(
        cli, ["report", "deepseek-v3", "--format", "markdown", "--rate-note"], env=env
    )
    as_json = runner.invoke(cli, ["report", "deepseek-v3", "--format", "json"], env=env)
    table = runner.invoke(cli, ["report", "deepseek-v3"], env=env)

    assert markdown.exit_code == 0, markdown.output
    assert markdown.stdout.splitlines() == [
        *V3_MARKDOWN,
        "Priced at NVIDIA H800 at $2 per GPU hour (the rate card).",
    ]
    assert Decimal(json.loads(as_json.stdout)["total"]["cost_usd"]) == Decimal("5576000.00")
    assert "$5.576M" in table.stdout and "2788K" in table.stdout


def test_the_reported_pre_training_tokens_give_the_reported_efficiency(
    v3_client: TestClient, auth, db_url: str
) -> None:
    """The report: 14.8T pre-training tokens, 180K H800 GPU-hours per trillion of them; no
    token count for the later phases, so none for the whole run."""
    tokens = {"tokens": 14_800_000_000_000}
    put = v3_client.put("/v1/jobs/hf-h800/v3-pretrain", json=tokens, headers=auth["admin"])
    assert put.status_code == 200, put.text

    body = v3_client.get("/v1/models/deepseek-v3/cost", headers=auth["viewer"]).json()
    markdown = CliRunner().invoke(
        cli, ["report", "deepseek-v3", "--format", "markdown"], env={"GPUCOST_DATABASE_URL": db_url}
    )

    fields = ("tokens", "gpu_hours_with_tokens", "gpu_hours_per_trillion_tokens")
    assert [tuple(p[f] for f in (*fields, "usd_per_million_tokens")) for p in body["phases"]] == [
        ("14800000000000", "2664000", "180000", "0.36"),
        (None, "0", None, None),
        (None, "0", None, None),
    ]
    assert tuple(body["total"][f] for f in fields) == ("14800000000000", "2664000", None)
    assert markdown.stdout.splitlines() == [*V3_MARKDOWN, *V3_EFFICIENCY_MARKDOWN]


def test_cli_report_finds_the_model_in_any_case_and_writes_exact_csv(
    v3_client: TestClient, db_url: str
) -> None:
    env = {"GPUCOST_DATABASE_URL": db_url}
    run = lambda *args: CliRunner().invoke(cli, list(args), env=env)  # noqa: E731

    as_csv = run("report", "DeepSeek-V3", "--format", "csv")
    near = run("report", "deepseek-v4")

    assert as_csv.exit_code == 0, as_csv.output
    assert as_csv.stdout.splitlines() == [
        "figure,Pre-Training,Context Extension,Post-Training,Total",
        "gpu_hours,2664000,119000,5000,2788000",
        "cost_usd,5328000,238000,10000,5576000",
    ]
    assert near.exit_code == 1
    assert "no usage recorded for model 'deepseek-v4'; did you mean deepseek-v3?" in near.stderr
    assert run("models").stdout.splitlines() == ["deepseek-v3"]
