"""Scenario files: what the shipped ones promise, and one clear line for a bad one."""

from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from simulator import scenario as scenarios
from simulator.expected import IDLE, expected_totals


def test_deepseek_v3_is_sized_to_the_published_table() -> None:
    scenario = scenarios.load("deepseek-v3")
    expected = expected_totals(scenario)

    assert (scenario.nodes, scenario.gpus_per_node, scenario.gpu_model) == (256, 8, "NVIDIA H800")
    by_phase = expected.by(scenario, "phase")
    assert {p: t.gpu_seconds / 3600 for p, t in by_phase.items()} == {
        "pre-training": 2_664_000,
        "context-extension": 119_000,
        "post-training": 5_000,
        IDLE: 48 * Fraction(62),  # 48 GPUs idle through the two later phases
    }
    model_cost = sum(t.cost_usd for p, t in by_phase.items() if p != IDLE)
    assert model_cost == 5_576_000
    # The report's tokens: 14.8T in pre-training, at 180K GPU-hours per trillion; none given
    # for the later phases.
    assert [(j.phase, j.tokens) for j in scenario.jobs] == [
        ("pre-training", 14_800_000_000_000),
        ("context-extension", None),
        ("post-training", None),
    ]
    assert scenario.reference == scenarios.Reference("pre-training", Decimal(180_000))
    pre_training_hours = by_phase["pre-training"].gpu_seconds / 3600
    assert pre_training_hours * 10**12 / 14_800_000_000_000 == 180_000
    assert scenario.jobs[0].registration() == {
        "model": "deepseek-v3",
        "phase": "pre-training",
        "team": "foundation",
        "user": "v3-train",
        "tokens": 14_800_000_000_000,
    }
    assert "tokens" not in scenario.jobs[1].registration()


def test_mixed_cluster_has_what_the_issue_asks_for() -> None:
    scenario = scenarios.load("mixed-cluster")
    expected = expected_totals(scenario)

    assert {j.team for j in scenario.jobs} == {"foundation", "applied", "research"}
    assert len({j.model for j in scenario.jobs}) == 3
    assert any(j.held_idle for j in scenario.jobs) and scenario.mig
    kinds = {e.kind for e in scenario.events}
    assert kinds == {"node-down", "gpu-lost", "job-restart", "rate-change"}
    assert expected.by_job[None].gpu_seconds > 0  # idle capacity
    # 40 GPUs for 720 h, less node 3's 12 h outage and GPU 7 after it is lost at 650 h.
    total = expected.total().gpu_seconds / 3600
    assert total == 40 * 720 - 8 * 12 - 70
    assert expected.by_job["rerank-eval"].gpu_seconds / 3600 == 75  # 300 h of 1 slice in 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[jobs]]\nid = "a"\ngpus = 1\nduration = "1h"\n[[jobs]]\nid = "b"\ngpus = 1\n'
            'duration = "2h"\n',
            "jobs a and b overlap on GPU 0",
        ),
        ('[[jobs]]\nid = "a"\ngpus = 1\nduration = "soon"\n', "is not a duration"),
        ('[[events]]\nkind = "meteor"\n', "is not one of"),
        ('[[jobs]]\nid = "a"\nfirst_gpu = 8\ngpus = 1\nduration = "1h"\n', "not in the cluster"),
        (
            '[[jobs]]\nid = "a"\ngpus = 1\nduration = "1h"\ntokens = -5\n',
            "jobs[0].tokens: -5 is not a whole number of tokens",
        ),
        (
            '[reference]\nphase = "pre-training"\ngpu_hours_per_trillion_tokens = "lots"\n',
            "reference.gpu_hours_per_trillion_tokens: 'lots' is not a number of GPU-hours",
        ),
        (
            '[reference]\nphase = "pre-training"\ngpu_hours_per_trillion_tokens = nan\n',
            "reference.gpu_hours_per_trillion_tokens: nan is not a number of GPU-hours",
        ),
        (
            '[[jobs]]\nid = "a"\ngpus = 1\nduration = "1h"\ntokens = 10_000_000_000_000_000_000\n',
            "is not a whole number of tokens from 0 to 10**18",
        ),
    ],
)
def test_a_bad_scenario_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("nodes = 1\ngpus_per_node = 8\n" + text)
    token = tmp_path / "token"
    token.write_text("x")

    result = CliRunner().invoke(
        cli, ["simulate", str(path), "--server", "http://127.0.0.1:9", "--token-file", str(token)]
    )

    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_an_unknown_scenario_names_the_shipped_ones(tmp_path: Path) -> None:
    with pytest.raises(scenarios.ScenarioError, match="deepseek-v3, mixed-cluster"):
        scenarios.load("gpt-5")
