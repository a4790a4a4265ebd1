"""The shipped alert rules: `promtool test rules` fires each on bad series and keeps it quiet
on good ones, and those series are what gpucost really exposes: every metric the unit tests
feed, with the same label names, is in a live server's `/metrics`."""

import re
import subprocess
from pathlib import Path

import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.app.budgets.test_budgets import burning_budget
from tests.app.metrics.test_metrics import Auth, seed_usage
from tests.deploy.test_deploy import require_tool
from tests.support import ROOT, SettableClock, report

UNIT_TESTS = Path(__file__).parent / "prometheus" / "alerts_test.yml"
SERIES = re.compile(r"^(\w+)\{(.*)\}$")
# Added by Prometheus to whatever it scrapes, not by gpucost.
TARGET_LABELS = {"job", "instance"}


def test_promtool_fires_each_alert_only_on_bad_series() -> None:
    result = subprocess.run(
        [require_tool("promtool"), "test", "rules", str(UNIT_TESTS)],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        case["alertname"]
        for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    }
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/alerts.yml")
                           .resolve().read_text())  # fmt: skip
    assert tested == {rule["alert"] for group in rules["groups"] for rule in group["rules"]}


def test_the_alerts_series_are_those_gpucost_exposes(
    client: TestClient, auth: Auth, clock: SettableClock
) -> None:
    seed_usage(client, auth, live_end=clock())
    burning_budget(client, auth, now=clock())
    for path in ("/v1/exports/focus.csv?from=2025-01-01&to=2025-02-01", "/v1/costs"):
        assert client.get(path, headers=auth["viewer"]).status_code == 200
    refused = client.post("/v1/reports", json=report(9, cluster="x"), headers=auth["collector"])
    assert refused.status_code == 403
    exposition = client.get("/metrics").text
    for export in ("focus.parquet", "costs.csv"):
        # An export route's server errors are there from 0, asked for or not: the alert on
        # their increase sees the first.
        zero = f'route="/v1/exports/{export}",status="500"}} 0.0'
        assert zero in exposition, export
    exposed: dict[str, set[frozenset[str]]] = {}
    values: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            exposed.setdefault(sample.name, set()).add(frozenset(sample.labels))
            for label, value in sample.labels.items():
                values.setdefault(label, set()).add(value)

    fed = [
        series["series"]
        for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
        for series in test["input_series"]
    ]
    for text in fed:
        found = SERIES.match(text)
        assert found, text
        name, labels = found.groups()
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if name == "up":
            continue  # Prometheus' own
        names = frozenset(pairs) - TARGET_LABELS
        assert names in exposed.get(name, set()), (text, exposed.get(name))
        for label in ("outcome", "route"):
            if label in pairs:
                assert pairs[label] in values[label], (text, sorted(values[label]))
