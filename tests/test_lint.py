"""The floor the house style sets: ruff and mypy pass on the project's code."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
