"""A real Prometheus scraping a real gpucost server with the shipped configuration.

Every PromQL expression of every shipped dashboard panel and recording rule must evaluate
without error and return at least one series, and the totals Prometheus holds must equal
the REST API's totals for the same data, exactly.
"""

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.app.budgets.test_budgets import burning_budget
from tests.app.metrics.test_metrics import (
    ATTRIBUTION,
    Auth,
    busy_seconds,
    joules,
    rest_costs,
    seed_usage,
)
from tests.deploy.test_deploy import (
    DASHBOARDS,
    PROMETHEUS_CONFIG,
    RULES,
    panel_expressions,
    require_tool,
)
from tests.support import ServerProcess, free_port, running_server

pytestmark = pytest.mark.slow
WAIT_S = 60
# Grafana's variables, as a dashboard with every cluster selected fills them in.
GRAFANA_VARIABLES = {"$cluster": ".*", "$__rate_interval": "1m", "$__range": "1h"}


def eventually(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def prometheus_config_for(server: ServerProcess, workdir: Path) -> Path:
    """The shipped config with its targets pointed at the test server and 1 s intervals."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [
        str(PROMETHEUS_CONFIG.parent / pattern) for pattern in config["rule_files"]
    ]
    # No collectors run here; their job would only add a target that is down.
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == "gpucost"]
    jobs[0]["static_configs"] = [{"targets": [server.url.removeprefix("http://")]}]
    config["scrape_configs"] = jobs
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def running_prometheus(config: Path, workdir: Path) -> Iterator[str]:
    binary = require_tool("prometheus")
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited:\n{log_path.read_text(errors='replace')}")
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        eventually(ready, "Prometheus to be ready")
        yield url
    finally:
        process.terminate()
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        process.kill()  # a no-op once it has exited
        process.wait()


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    """An instant query's vector; an error from Prometheus fails the test with the expression."""
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (expr, body)
    assert body["data"]["resultType"] == "vector", (expr, body["data"]["resultType"])
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def shipped_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for each dashboard query, template variable and recording rule."""
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for title, expr in panel_expressions(dashboard):
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((f"{path.name}: {title}", expr))
        for variable in dashboard.get("templating", {}).get("list", []):
            # label_values(metric, label): the metric must have series carrying the label.
            metric, label = variable["definition"].removeprefix("label_values(")[:-1].split(", ")
            found.append((f"{path.name}: ${variable['name']}", f"count by ({label}) ({metric})"))
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            # Alerts return series only when they fire: tests/deploy/test_alerts.py tests them.
            for rule in (rule for rule in group["rules"] if "record" in rule):
                found.append((f"{path.name}: {rule['record']}", rule["expr"]))
                found.append((f"{path.name}: {rule['record']} (recorded)", rule["record"]))
    return found


def prometheus_total(prometheus: str, expr: str) -> Decimal:
    result = query(prometheus, expr)
    assert len(result) == 1, (expr, result)
    return Decimal(result[0]["value"][1])


@pytest.fixture
def server(db_url: str, log_dir: Path) -> Iterator[ServerProcess]:
    env = {"GPUCOST_METRICS_CACHE_SECONDS": "1"}
    with running_server(db_url, log_dir, env=env) as process:
        yield process


def test_shipped_dashboards_and_rules_work_on_a_real_prometheus(
    server: ServerProcess, auth: Auth, tmp_path: Path
) -> None:
    require_tool("prometheus")
    with httpx.Client(base_url=server.url, timeout=30) as api:
        now = datetime.now(UTC).replace(microsecond=0)
        seed_usage(api, auth, live_end=now)
        burning_budget(api, auth, now=now)
        totals = rest_costs(api, auth)["total"]
        idle = rest_costs(api, auth, model="(idle)")["total"]
        by_model = {r["model"]: r for r in rest_costs(api, auth, group_by="model")["rows"]}
        attributed = rest_costs(api, auth, group_by=",".join(ATTRIBUTION))["rows"]

        with running_prometheus(prometheus_config_for(server, tmp_path), tmp_path) as prometheus:
            # Enough scrapes for rate() and increase(), and the rules evaluated on them.
            eventually(
                lambda: query(prometheus, 'count_over_time(up{job="gpucost"}[1m]) >= 3'),
                "three scrapes of the server",
            )
            assert query(prometheus, 'up{job="gpucost"}')[0]["value"][1] == "1"
            for where, expr in shipped_expressions():
                eventually(lambda e=expr: query(prometheus, e), f"a series from {where}: {expr}")

            expected = {
                "sum(gpucost_cost_usd)": Decimal(totals["cost_usd"]),
                "sum(gpucost_gpu_seconds_total)": Decimal(totals["gpu_seconds"]),
                "sum(gpucost_attributed_gpu_seconds)": Decimal(totals["gpu_seconds"]),
                "sum(gpucost_idle_gpu_seconds_total)": Decimal(idle["gpu_seconds"]),
                "sum(gpucost_busy_gpu_seconds_total)": busy_seconds(totals),
                "sum(gpucost_energy_joules_total)": joules(totals),
                "sum(gpucost_attributed_energy_joules)": joules(totals),
            }
            seen = {expr: prometheus_total(prometheus, expr) for expr in expected}
            per_model = {
                r["metric"]["model"]: Decimal(r["value"][1])
                for r in query(prometheus, "sum by (model) (cluster_model:gpucost_cost_usd:sum)")
            }

    assert seen == expected
    assert per_model == {model: Decimal(row["cost_usd"]) for model, row in by_model.items()}
    assert set(by_model) == {"deepseek-v3", "m2", "(idle)", "(unattributed)"}
    assert len(attributed) == 6
