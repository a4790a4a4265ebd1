"""The shipped deployment files: Prometheus config and rules, Grafana provisioning, compose."""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from app import __version__
from app.cli.common import KEEP_ALIVE_SECONDS
from app.core.config import PLACEHOLDER_SECRET as PLACEHOLDER
from app.core.config import Settings
from tests.support import ROOT, skip_or_fail

DEPLOY = ROOT / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
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
    assert demo == {"demo-setup", "demo-http", "collector-sim-a", "collector-sim-b"}
    assert {"demo"} == {p for s in services.values() for p in s.get("profiles", [])}


def test_compose_publishes_the_api_only_through_the_proxy() -> None:
    services = compose()["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert set(published) == {"proxy", "prometheus", "grafana", "demo-http"}
    assert "ports" not in services["api"] and "8000" not in str(published.get("proxy"))
    assert {"443:443", "443:443/udp", "80:80"} == set(published["proxy"])
    for name in ("prometheus", "grafana"):
        (port,) = published[name]
        host, outside, inside = port.rsplit(":", 2)
        assert host == "${GPUCOST_BIND_ADDRESS:-127.0.0.1}" and outside == inside, (name, port)
    # Plain http only for the demo, and only on this host.
    assert services["demo-http"]["profiles"] == ["demo"]
    assert published["demo-http"] == ["127.0.0.1:8000:8000"]
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


def env_example() -> dict[str, str]:
    lines = (DEPLOY / "env.example").read_text().splitlines()
    pairs = (line.partition("=") for line in lines if line and not line.startswith("#"))
    return {name: value for name, _, value in pairs}


def test_every_variable_compose_uses_is_in_env_example() -> None:
    # `$$` is compose's escape for a `$` the container's shell sees.
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z0-9_]+)", COMPOSE.read_text()))
    assert {"POSTGRES_PASSWORD", "GPUCOST_HOSTNAME", "GPUCOST_TLS"} <= used
    assert used <= set(env_example()), used - set(env_example())


def test_env_example_ships_placeholder_secrets_that_are_refused() -> None:
    secrets = {name: value for name, value in env_example().items() if SECRET_NAME.search(name)}
    # The metrics token is optional: empty means none (tests/app/metrics/test_metrics_token.py).
    assert secrets.pop("GPUCOST_METRICS_TOKEN") == ""
    assert secrets == {"POSTGRES_PASSWORD": PLACEHOLDER, "GRAFANA_ADMIN_PASSWORD": PLACEHOLDER}
    # Compose requires each one to be set, not empty.
    text = COMPOSE.read_text()
    for name in secrets:
        assert f"${{{name}:?set {name} in .env}}" in text, name


def test_settings_refuse_the_placeholder_database_password() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(database_url=f"postgresql://gpucost:{PLACEHOLDER}@postgres:5432/gpucost")

    (error,) = refused.value.errors()
    assert error["loc"] == ("database_url",)
    assert "\n" not in error["msg"]
    assert (
        f"the password is '{PLACEHOLDER}'" in error["msg"] and "POSTGRES_PASSWORD" in error["msg"]
    )
    # Only the placeholder itself: a password that merely contains it, or none, is the user's.
    for url in (
        f"postgresql+psycopg://gpucost:{PLACEHOLDER}-not@postgres/gpucost",
        "postgresql+psycopg://postgres@127.0.0.1:5432/gpucost",
    ):
        assert Settings(database_url=url).database_url == url


@pytest.mark.parametrize("command", [["db", "upgrade"], ["serve", "--port", "0"]])
def test_the_service_will_not_start_on_the_placeholder_password(command: list[str]) -> None:
    url = f"postgresql+psycopg://gpucost:{PLACEHOLDER}@127.0.0.1:1/gpucost"
    env = {**os.environ, "GPUCOST_DATABASE_URL": url}

    result = subprocess.run(
        [str(Path(sys.executable).parent / "gpucost"), *command],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )

    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(
        "error: invalid setting GPUCOST_DATABASE_URL: the password is 'change-me', "
    )
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "POSTGRES_PASSWORD" in result.stderr and result.stdout == ""


def check_secrets(**environment: str) -> subprocess.CompletedProcess[str]:
    """compose's check-secrets service, run here by the same shell command."""
    service = compose()["services"]["check-secrets"]
    assert service["entrypoint"] == ["sh", "-c"]
    script = service["command"][0].replace("$$", "$")
    return subprocess.run(
        ["sh", "-c", script],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], **environment},
        timeout=10,
    )


def test_compose_refuses_placeholder_passwords_before_postgres_and_grafana_start() -> None:
    services = compose()["services"]
    for name in ("postgres", "grafana"):
        condition = services[name]["depends_on"]["check-secrets"]["condition"]
        assert condition == "service_completed_successfully", name
    assert "${POSTGRES_PASSWORD" in services["check-secrets"]["environment"]["POSTGRES_PASSWORD"]
    own = {"POSTGRES_PASSWORD": "pg-9f3c2a7d41e8", "GRAFANA_ADMIN_PASSWORD": "gf-5b1e0c9a77d2"}

    assert check_secrets(**own).returncode == 0
    for name in own:
        refused = check_secrets(**{**own, name: PLACEHOLDER})
        assert refused.returncode == 1, name
        assert refused.stderr == (
            f"error: {name} is change-me, the placeholder of deploy/env.example:"
            " set your own in .env\n"
        )


def test_the_proxy_fronts_the_api_with_tls() -> None:
    services = compose()["services"]
    proxy = services["proxy"]
    assert proxy["image"].startswith("caddy:2.")
    assert proxy["depends_on"]["api"]["condition"] == "service_healthy"
    assert "443:443" in proxy["ports"]
    config_dir = dict(mounts(proxy))["./deploy/caddy"]
    assert proxy["command"][proxy["command"].index("--config") + 1] == config_dir + "/Caddyfile"
    for name in ("GPUCOST_HOSTNAME", "GPUCOST_TLS"):
        assert proxy["environment"][name] == f"${{{name}:?set {name} in .env}}"
    # Certificates survive a restart (ACME's rate limits), in a named volume.
    assert dict(mounts(proxy))["caddy-data"] == "/data"
    caddyfile = (DEPLOY / "caddy" / "Caddyfile").read_text()
    assert re.search(r"^\{\$GPUCOST_HOSTNAME\} \{$", caddyfile, re.MULTILINE)
    assert re.search(r"^\ttls \{\$GPUCOST_TLS\}$", caddyfile, re.MULTILINE)
    api_port = services["api"]["command"][services["api"]["command"].index("--port") + 1]
    assert re.search(rf"^\treverse_proxy api:{api_port} \{{$", caddyfile, re.MULTILINE)
    demo_http = services["demo-http"]["command"]
    assert demo_http[demo_http.index("--to") + 1] == f"api:{api_port}"


def caddy_config(caddy: str, hostname: str, tls: str) -> dict[str, Any]:
    """The shipped Caddyfile as Caddy reads it, with these values in the environment."""
    result = subprocess.run(
        [caddy, "adapt", "--config", str(DEPLOY / "caddy" / "Caddyfile")],
        capture_output=True,
        text=True,
        env={**os.environ, "GPUCOST_HOSTNAME": hostname, "GPUCOST_TLS": tls},
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_caddy_reads_the_caddyfile_in_each_certificate_mode() -> None:
    caddy = shutil.which("caddy")
    if caddy is None:
        skip_or_fail("caddy is not installed (Debian: apt-get install -y caddy)")
        return
    own = "/etc/caddy/certs/gpucost.crt /etc/caddy/certs/gpucost.key"

    acme = caddy_config(caddy, "gpucost.example.org", "ops@example.org")
    files = caddy_config(caddy, "gpucost.corp.internal", own)
    local = caddy_config(caddy, "localhost", "internal")

    (server,) = acme["apps"]["http"]["servers"].values()
    assert server["listen"] == [":443"]
    (route,) = server["routes"]
    assert route["match"] == [{"host": ["gpucost.example.org"]}]
    metrics, proxied = route["handle"][0]["routes"]
    assert metrics == {
        "match": [{"path": ["/metrics"]}],
        "handle": [{"handler": "static_response", "status_code": 404}],
    }
    (proxy,) = proxied["handle"]
    assert proxy["upstreams"] == [{"dial": "api:8000"}]
    # Caddy must drop an idle connection before `gpucost serve` does.
    idle_ns = proxy["transport"]["keep_alive"]["idle_timeout"]
    assert idle_ns < KEEP_ALIVE_SECONDS * 10**9
    (policy,) = acme["apps"]["tls"]["automation"]["policies"]
    assert policy["subjects"] == ["gpucost.example.org"]
    assert {"module": "acme", "email": "ops@example.org"} in policy["issuers"]
    assert files["apps"]["tls"]["certificates"]["load_files"] == [
        {
            "certificate": "/etc/caddy/certs/gpucost.crt",
            "key": "/etc/caddy/certs/gpucost.key",
            "tags": ["cert0"],
        }
    ]
    assert "automation" not in files["apps"]["tls"]
    (policy,) = local["apps"]["tls"]["automation"]["policies"]
    assert policy == {"subjects": ["localhost"], "issuers": [{"module": "internal"}]}


def test_the_prune_service_prunes_daily_with_the_real_command(db_url: str) -> None:
    services = compose()["services"]
    prune = services["prune"]
    assert prune["image"] == services["api"]["image"]
    assert (
        prune["environment"]["GPUCOST_DATABASE_URL"]
        == (services["api"]["environment"]["GPUCOST_DATABASE_URL"])
    )
    assert prune["depends_on"]["api"]["condition"] == "service_healthy"
    assert prune["restart"] == "unless-stopped"
    (loop,) = prune["command"]
    command = re.fullmatch(r"while true; do (gpucost db prune); sleep 86400; done", loop)
    assert command is not None, loop
    # The command the loop runs, as it runs it, on a database the API has migrated.
    result = subprocess.run(
        [str(Path(sys.executable).parent / "gpucost"), *command[1].split()[1:]],
        env={**os.environ, "GPUCOST_DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pruned raw usage before ")


def test_prometheus_in_compose_loads_the_alert_rules() -> None:
    prometheus = compose()["services"]["prometheus"]
    config_dir = dict(mounts(prometheus))["./deploy/prometheus"]
    assert f"--config.file={config_dir}/prometheus.yml" in prometheus["command"]
    # rule_files are read relative to the config file: inside the mounted directory.
    patterns = load_yaml(PROMETHEUS_CONFIG)["rule_files"]
    assert not any(Path(pattern).is_absolute() for pattern in patterns)
    loaded = {path for pattern in patterns for path in PROMETHEUS_CONFIG.parent.glob(pattern)}
    alerts = DEPLOY / "prometheus" / "rules" / "alerts.yml"
    assert alerts in loaded
    rules = [rule for group in load_yaml(alerts)["groups"] for rule in group["rules"]]
    assert rules and all("alert" in rule for rule in rules)


def dockerfile_copies() -> list[str]:
    """What the Dockerfile copies from the tree, in order: files and folders."""
    copied = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            *sources, _target = line.split()[1:]
            copied.extend(sources)
    return copied


def copy_of_what_the_image_copies(into: Path) -> Path:
    """The tree as the Dockerfile copies it, so a build leaves nothing in the working tree."""
    into.mkdir()
    for name in dockerfile_copies():
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, into / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, into / name)
    return into


def test_the_image_installs_the_service_at_the_locked_versions() -> None:
    copied = dockerfile_copies()
    (install,) = [line for line in DOCKERFILE.read_text().splitlines() if "pip install" in line]

    assert "-c requirements.lock '.[server]'" in install
    assert {"pyproject.toml", "README.md", "LICENSE", "requirements.lock"} <= set(copied)
    # Every package the wheel holds, so `gpucost demo` and `simulate` run in the image too.
    assert {"app", "collectors", "migrations", "simulator"} <= set(copied)
    # The lock is resolved for Python 3.11, which the image runs.
    assert re.search(r"^FROM python:3\.11\.\d+-slim", DOCKERFILE.read_text(), re.M)


def test_the_collector_wheel_builds_from_the_tree(tmp_path: Path) -> None:
    source = copy_of_what_the_image_copies(tmp_path / "source")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]

    subprocess.run(
        [*pip, "wheel", str(source), "--no-deps", "-w", str(tmp_path / "dist")],
        check=True,
        capture_output=True,
        timeout=300,
    )

    (wheel,) = (tmp_path / "dist").glob("gpucost-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    assert {"collectors/cli.py", "collectors/agent.py", "collectors/sender.py"} <= names
    assert "collectors/deploy/gpucost-collector.service" in names
    assert "collectors/deploy/collector.example.toml" in names
    assert "gpucost-collector = collectors.cli:main" in scripts.splitlines()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "simulator/scenarios/deepseek-v3.toml" in names
    # Installed as a node installs it (no dependencies), its entry point runs from the wheel
    # and the collector loads none of the server.
    site = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    version = subprocess.run(
        [str(site / "bin" / "gpucost-collector"), "--version"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"gpucost-collector {__version__}\n"
    probe = (
        "import sys, collectors.cli; print(collectors.cli.__file__);"
        " print(sorted(m for m in sys.modules if m == 'app' or m.startswith('app.')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout == f"{site / 'collectors' / 'cli.py'}\n[]\n"
