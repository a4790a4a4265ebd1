"""The floor the house style sets: ruff and mypy pass on the project's code, and its imports keep
the contracts in pyproject.toml (ARCHITECTURE.md: no cycles, no private module reached from
outside its package, core and the collector depend on no domain)."""

import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_finds_nothing() -> None:
    result = run(
        "ruff", "check", "app", "collectors", "simulator", "benchmarks", "migrations", "tests"
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing() -> None:
    result = run("mypy", "app", "collectors", "simulator", "benchmarks")

    assert result.returncode == 0, result.stdout + result.stderr


def test_imports_keep_the_architecture_contracts() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout
