"""What ships where: `pip install gpucost` is the collector alone, the service is the `server`
extra, and `requirements.lock` pins everything the `server` and `test` extras bring."""

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import ROOT, skip_or_fail

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# The service's stack: none of it may reach a GPU node.
SERVER_ONLY = {
    "alembic",
    "fastapi",
    "jinja2",
    "psycopg",
    "psycopg-binary",
    "pyarrow",
    "sqlalchemy",
    "starlette",
    "uvicorn",
}
# What the collector's code imports beyond the standard library, by import name.
COLLECTOR_IMPORTS = {"httpx", "prometheus_client", "pynvml", "rich", "typer"}


def closure(requirements: list[str]) -> set[str]:
    """The distributions `requirements` pull in, as installed here, themselves included."""
    seen: set[str] = set()
    pending: list[tuple[str, frozenset[str]]] = [(text, frozenset()) for text in requirements]
    while pending:
        text, extras = pending.pop()
        requirement = Requirement(text)
        if requirement.marker is not None and not any(
            requirement.marker.evaluate({"extra": extra}) for extra in ("", *extras)
        ):
            continue
        name = canonicalize_name(requirement.name)
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        if name == "gpucost":  # the test extra's `gpucost[server]`: this project's own
            wanted = [PROJECT["dependencies"]]
            wanted += [PROJECT["optional-dependencies"][e] for e in requirement.extras]
            pending.extend((inner, frozenset()) for texts in wanted for inner in texts)
            continue
        asked = frozenset(requirement.extras)
        pending.extend((inner, asked) for inner in metadata.requires(requirement.name) or [])
    return {key.split("[", 1)[0] for key in seen} - {"gpucost"}


def locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", (ROOT / "requirements.lock").read_text(), re.M)
    return {canonicalize_name(name): version for name, version in pins}


def test_the_base_install_brings_none_of_the_service() -> None:
    pulled = closure(PROJECT["dependencies"])

    assert pulled.isdisjoint(SERVER_ONLY), sorted(pulled & SERVER_ONLY)
    assert SERVER_ONLY - {"starlette", "psycopg-binary"} <= {
        canonicalize_name(Requirement(text).name)
        for text in PROJECT["optional-dependencies"]["server"]
    }


def test_the_collector_and_the_simulator_import_only_the_base_dependencies() -> None:
    found: dict[str, set[str]] = {}
    for path in [*(ROOT / "collectors").rglob("*.py"), *(ROOT / "simulator").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path.relative_to(ROOT).as_posix())
    outside = set(found) - set(sys.stdlib_module_names) - {"collectors", "simulator", "__future__"}

    assert outside == COLLECTOR_IMPORTS, {name: found[name] for name in outside}
    assert "simulator" not in {
        name for name, paths in found.items() if any(p.startswith("collectors/") for p in paths)
    }
    base = {canonicalize_name(Requirement(text).name) for text in PROJECT["dependencies"]}
    assert base == {"httpx", "nvidia-ml-py", "prometheus-client", "rich", "typer"}


def test_the_lock_pins_everything_the_server_and_test_extras_bring() -> None:
    pins = locked()
    pulled = closure(
        PROJECT["optional-dependencies"]["server"] + PROJECT["optional-dependencies"]["test"]
    )

    assert pulled - set(pins) == set()
    assert "gpucost" not in pins


@pytest.mark.slow
def test_a_node_install_has_the_collector_and_none_of_the_service(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for name in ("app", "collectors", "migrations", "simulator"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "node"
    # This tree's own code must not shadow the install.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    installed = subprocess.run(
        [*pip, "install", str(source)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if installed.returncode != 0:
        skip_or_fail(f"pip could not install the collector here: {installed.stderr[-2000:]}")

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )

    probe = run(
        str(venv / "bin" / "python"),
        "-c",
        "import importlib.util as u; print(sorted(m for m in"
        " ('fastapi', 'sqlalchemy', 'psycopg', 'uvicorn', 'alembic', 'pyarrow', 'jinja2')"
        " if u.find_spec(m) is not None))",
    )
    assert probe.stdout == "[]\n", probe.stderr
    collector = run(str(venv / "bin" / "gpucost-collector"), "--help")
    assert collector.returncode == 0, collector.stderr
    assert "run" in collector.stdout
    service = run(str(venv / "bin" / "gpucost"), "--help")
    assert service.returncode == 1
    assert service.stdout == ""
    assert service.stderr.endswith("install it with: pip install 'gpucost[server]'\n")
    assert len(service.stderr.splitlines()) == 1, service.stderr
