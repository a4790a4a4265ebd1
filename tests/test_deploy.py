"""The shipped deployment files: Prometheus config and rules, Grafana provisioning, compose."""

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support import skip_or_fail

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
COMPOSE = ROOT / "docker-compose.yml"
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|PRIVATE_KEY)$", re.IGNORECASE)
ONLY_REFERENCES = re.compile(r"^(?:[^$]|\$\{[A-Z0-9_]+(?::?[-?][^}]*)?\})*$")


def require_tool(name: str) -> str:
    """The tool's path; a skip with the reason when it is missing, a failure under CI=true."""
    path = shutil.which(name)
    if path is None:
        skip_or_fail(f"{name} is not installed (Debian: apt-get install -y prometheus)")
    return path


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def panel_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, rows' nested panels included."""
    found = []
    panels = list(dashboard.get("panels", []))
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))
        found.extend((panel["title"], t["expr"]) for t in panel.get("targets", []) if "expr" in t)
    return found


def test_promtool_accepts_the_scrape_config() -> None:
    promtool = require_tool("promtool")

    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(RULES)} rule files found" in result.stdout + result.stderr


def test_the_commented_metrics_token_block_is_valid_once_uncommented(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    shutil.copytree(PROMETHEUS_CONFIG.parent, tmp_path / "prometheus")
    config = tmp_path / "prometheus" / "prometheus.yml"
    token = tmp_path / "gpucost-metrics.token"
    token.write_text("scrape-3f9c2a7d41e8b6\n")
    text = config.read_text()
    block = "    # authorization:\n    #   type: Bearer\n    #   credentials_file: "
    assert block in text
    opened = text.replace(block, "    authorization:\n      type: Bearer\n      credentials_file: ")
    config.write_text(opened.replace("/etc/prometheus/gpucost-metrics.token", str(token)))

    result = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"credentials_file: {token}" in config.read_text()


def test_promtool_accepts_the_recording_rules() -> None:
    promtool = require_tool("promtool")
    assert RULES

    result = subprocess.run(
        [promtool, "check", "rules", *map(str, RULES)], capture_output=True, text=True
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_use_the_provisioned_datasource_and_have_queries() -> None:
    datasources = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    uids = {source["uid"] for source in datasources["datasources"]}
    assert DASHBOARDS

    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        expressions = panel_expressions(dashboard)
        assert expressions, path.name
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] in uids, (path.name, panel["title"])
            assert all(t["datasource"]["uid"] in uids for t in panel["targets"])
        for _, expr in expressions:
            assert "job_id" not in expr


def compose() -> dict[str, Any]:
    parsed = load_yaml(COMPOSE)
    assert isinstance(parsed, dict) and parsed["services"]
    return parsed


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    return [tuple(volume.split(":")[:2]) for volume in service.get("volumes", [])]


def mounted_paths(service: dict[str, Any]) -> list[Path]:
    """Files a service's command or environment names in its bind mounts, as paths here."""
    binds = [(source, target) for source, target in mounts(service) if source.startswith(".")]
    environment = service.get("environment", {})
    words = [*service.get("entrypoint", []), *service.get("command", []), *environment.values()]
    found = []
    for path in (m for word in words for m in re.findall(r"/[\w./-]+", str(word))):
        for source, target in binds:
            if path.startswith(target + "/"):
                found.append(ROOT / source / path.removeprefix(target + "/"))
    return found


def test_compose_names_only_services_volumes_and_files_that_exist() -> None:
    spec = compose()
    services, volumes = spec["services"], set(spec.get("volumes") or {})

    for name, service in services.items():
        if "build" in service:
            build = service["build"]
            assert (ROOT / build["context"]).is_dir(), name
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
        for source, _target in mounts(service):
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), (name, source)
            else:
                assert source in volumes, (name, source)
        for env_file in service.get("env_file", []):
            assert (ROOT / env_file).is_file(), (name, env_file)
        assert set(service.get("depends_on", [])) <= set(services), name
    used = {source for s in services.values() for source, _ in mounts(s)}
    for name, service in services.items():
        for path in mounted_paths(service):
            assert path.exists(), (name, path)
    assert volumes <= used, "a declared volume no service mounts"
    # What the mounted directories must hold for Prometheus and Grafana to start.
    config_dir = dict(mounts(services["prometheus"]))["./deploy/prometheus"]
    assert "--config.file=" + config_dir + "/prometheus.yml" in services["prometheus"]["command"]
    provider = load_yaml(DEPLOY / "grafana/provisioning/dashboards/gpucost.yml")
    dashboard_dir = dict(mounts(services["grafana"]))["./deploy/grafana/dashboards"]
    assert provider["providers"][0]["options"]["path"] == dashboard_dir


def test_compose_pins_every_image_and_checks_the_api() -> None:
    services = compose()["services"]
    for name, service in services.items():
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        assert tag and tag != "latest" and re.search(r"\d", tag), (name, image)
    api = services["api"]
    assert "readyz" in " ".join(api["healthcheck"]["test"])
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    demo = {name for name, s in services.items() if s.get("profiles") == ["demo"]}
    assert demo == {"demo-setup", "collector-sim-a", "collector-sim-b"}
    assert {"demo"} == {p for s in services.values() for p in s.get("profiles", [])}


def test_compose_publishes_on_localhost_unless_told_otherwise() -> None:
    published = [
        (name, port) for name, s in compose()["services"].items() for port in s.get("ports", [])
    ]
    assert {name for name, _ in published} == {"api", "prometheus", "grafana"}
    for name, port in published:
        host, inside = port.rsplit(":", 2)[0], port.rsplit(":", 2)[1:]
        assert host == "${GPUCOST_BIND_ADDRESS:-127.0.0.1}", (name, port)
        assert inside[0] == inside[1], (name, port)
    assert "GPUCOST_BIND_ADDRESS=127.0.0.1" in (DEPLOY / "env.example").read_text()


def strings_under(node: Any, key: str = "") -> list[tuple[str, str]]:
    if isinstance(node, dict):
        return [pair for k, v in node.items() for pair in strings_under(v, str(k))]
    if isinstance(node, list):
        return [pair for item in node for pair in strings_under(item, key)]
    return [(key, str(node))] if node is not None else []


def test_compose_holds_no_secret() -> None:
    for key, value in strings_under(compose()):
        if SECRET_NAME.search(key):
            assert ONLY_REFERENCES.match(value) and "${" in value, f"{key} is set in the file"
        # A URL with credentials may only take its password from a variable.
        for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", value):
            assert password.startswith("${"), f"a password in {key}: {value}"
    example = (DEPLOY / "env.example").read_text()
    assert "POSTGRES_PASSWORD=" in example and "GRAFANA_ADMIN_PASSWORD=" in example
