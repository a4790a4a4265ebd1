"""The fleet simulator end to end: the collector's real code on simulated nodes, a real
server process, and totals that must come out exact on both databases."""

import subprocess
import sys
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import httpx
import pytest

from simulator import scenario as scenarios
from simulator.expected import IDLE, expected_totals
from simulator.fleet import Fleet, Options
from tests.conftest import make_token
from tests.support import running_server

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def shortened_v3() -> scenarios.SimScenario:
    """DeepSeek-V3 with every time divided by 100, as 8 collectors of 256 GPUs."""
    full = scenarios.load("deepseek-v3").regrouped(256)
    jobs = tuple(replace(j, start=j.start / 100, end=j.end / 100) for j in full.jobs)
    return replace(full, jobs=jobs, end=full.end / 100)


def decimal(value: Fraction) -> Decimal:
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    assert exact * value.denominator == value.numerator, value  # no rounding hides here
    return exact


def get(server: str, token: str, path: str, **params: str) -> dict:
    response = httpx.get(
        server + path, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_shortened_v3_reproduces_its_exact_phase_totals(db_url: str, log_dir: Path) -> None:
    scenario = shortened_v3()
    collector = make_token(db_url, "collector", scenario.cluster, name="sim")
    viewer = make_token(db_url, "viewer", name="viewer")
    with running_server(db_url, log_dir) as server:
        fleet = Fleet(scenario, server=server.url, token=collector, options=Options())
        try:
            progress = fleet.run()
        finally:
            fleet.close()
        body = get(server.url, viewer, "/v1/models/deepseek-v3/cost")

    phases = [(p["phase"], Decimal(p["gpu_hours"]), Decimal(p["cost_usd"])) for p in body["phases"]]
    assert phases == [
        ("pre-training", Decimal(26_640), Decimal(53_280)),
        ("context-extension", Decimal(1_190), Decimal(2_380)),
        ("post-training", Decimal(50), Decimal(100)),
    ]
    assert Decimal(body["total"]["cost_usd"]) == Decimal(55_760)
    # Peak: the most GPU-hours in one UTC hour; the two short phases fit in one hour each.
    assert [p["peak_gpus"] for p in body["phases"]] == ["2048", "1190", "50"]
    expected = expected_totals(scenario).by(scenario, "phase")
    assert {p: decimal(t.gpu_seconds / 3600) for p, t in expected.items()} == {
        "pre-training": 26_640,
        "context-extension": 1_190,
        "post-training": 50,
        IDLE: Decimal("29.76"),
    }
    assert progress.reports_sent == 8 * 14  # 13 whole hours and 37.67 minutes


def test_mixed_cluster_equals_its_independent_expectation(db_url: str, log_dir: Path) -> None:
    scenario = scenarios.load("mixed-cluster")
    (log_dir / "collector").write_text(make_token(db_url, "collector", scenario.cluster, name="c"))
    (log_dir / "admin").write_text(make_token(db_url, "admin", name="admin"))
    viewer = make_token(db_url, "viewer", name="viewer")
    with running_server(db_url, log_dir) as server:
        done = subprocess.run(
            [
                str(BIN / "gpucost"),
                "simulate",
                "mixed-cluster",
                "--server",
                server.url,
                "--token-file",
                str(log_dir / "collector"),
                "--admin-token-file",
                str(log_dir / "admin"),
                "--as-fast-as-possible",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        measured = {
            key: get(server.url, viewer, "/v1/costs", group_by=key)["rows"]
            for key in ("team", "model", "phase", "job")
        }

    expected = expected_totals(scenario)
    for key in ("team", "model", "phase"):
        want = {
            name: (
                decimal(t.gpu_seconds / 3600),
                decimal(t.busy_gpu_seconds / 3600),
                decimal(t.cost_usd),
            )
            for name, t in expected.by(scenario, key).items()
        }
        got = {
            row[key]: (
                Decimal(row["gpu_hours"]),
                Decimal(row["busy_gpu_hours"]),
                Decimal(row["cost_usd"]),
            )
            for row in measured[key]
        }
        assert got == want, key
    by_job = {row["job"]: row for row in measured["job"]}
    for job_id, totals in expected.by_job.items():
        row = by_job[job_id]
        assert Decimal(row["gpu_hours"]) == decimal(totals.gpu_seconds / 3600), job_id
        assert Decimal(row["busy_gpu_hours"]) == decimal(totals.busy_gpu_seconds / 3600), job_id
    # Held but idle: paid for in full, and visibly not busy.
    assert Decimal(by_job["rerank-hold"]["gpu_hours"]) == 4 * 120
    assert Decimal(by_job["rerank-hold"]["busy_gpu_hours"]) == 0
    assert Decimal(by_job["rerank-eval"]["gpu_hours"]) == Decimal(300) / 4
    assert Decimal(by_job[None]["gpu_hours"]) == decimal(expected.by_job[None].gpu_seconds / 3600)
