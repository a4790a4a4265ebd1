"""`gpucost demo`, as a newcomer runs it: no configuration, the DeepSeek-V3 table printed."""

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from app.cli.demo import _measured_note
from app.costs.schemas import CostReport
from tests.app.costs.test_costs_v3 import V3_EFFICIENCY_MARKDOWN, V3_MARKDOWN
from tests.support import ROOT

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
# The scenario gives pre-training's 14.8T tokens only, as the report does.
TABLE = [*V3_MARKDOWN, *V3_EFFICIENCY_MARKDOWN]
README = ROOT / "README.md"


def test_demo_serves_its_urls_on_another_port_whatever_the_environment_says(
    tmp_path: Path,
) -> None:
    """One run of `demo --serve` (the replay takes minutes): a GPUCOST_DATABASE_URL the demo
    does not use is not even read, a port in use is replaced by another, said in a line, and
    the URLs printed answer until SIGTERM, which removes the temporary database."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCOST_")}
    env |= {"GPUCOST_DATABASE_URL": "nosuchdb://x", "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    with (
        socket.create_server(("127.0.0.1", 0)) as taken,
        (tmp_path / "stderr").open("w") as stderr,
    ):
        port = taken.getsockname()[1]
        child = subprocess.Popen(
            [str(BIN / "gpucost"), "demo", "--serve", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        watchdog = threading.Timer(600, child.kill)
        watchdog.start()
        try:
            lines = []
            assert child.stdout is not None
            for line in child.stdout:
                lines.append(line.rstrip("\n"))
                if line.startswith("Serving until Ctrl-C"):
                    break
            assert lines and lines[-1].startswith("Serving until"), (
                "\n".join(lines) + (tmp_path / "stderr").read_text()
            )
            urls = {
                name: line.split()[-1]
                for line in lines
                for name in ("Page", "API docs", "Metrics", "Viewer token")
                if line.startswith(f"{name}:")
            }
            assert set(urls) == {"Page", "API docs", "Metrics", "Viewer token"}, "\n".join(lines)
            page = httpx.get(urls["Page"], timeout=30)
            summary = httpx.get(
                urls["Page"] + "v1/ui/summary",
                headers={"Authorization": f"Bearer {urls.pop('Viewer token')}"},
                timeout=30,
            )
            docs = httpx.get(urls["API docs"], timeout=30)
            metrics = httpx.get(urls["Metrics"], timeout=30)
        finally:
            child.send_signal(signal.SIGTERM)
            code = child.wait(timeout=60)
            watchdog.cancel()

    assert code == 0, (tmp_path / "stderr").read_text()
    moved = [line for line in lines if line.startswith(f"Port {port} is in use")]
    assert len(moved) == 1
    new_port = int(moved[0].split()[-2])
    assert moved == [f"Port {port} is in use; the demo serves on port {new_port} instead."]
    assert urls == {
        "Page": f"http://127.0.0.1:{new_port}/",
        "API docs": f"http://127.0.0.1:{new_port}/docs",
        "Metrics": f"http://127.0.0.1:{new_port}/metrics",
    }
    assert docs.status_code == 200 and metrics.status_code == 200 and page.status_code == 200
    assert summary.status_code == 200 and "deepseek-v3" in summary.text
    assert "gpucost_" in metrics.text
    start = lines.index(TABLE[0])
    assert lines[start : start + len(TABLE)] == TABLE
    assert "Priced at NVIDIA H800 at $2 per GPU hour (the default rate)." in lines
    assert (
        "Measured: 2,790,976 GPU-hours, 2,788,000 in deepseek-v3's jobs (the table) and "
        "2,976 idle (GPUs with no job)."
    ) in lines
    assert (
        "Efficiency: 180K H800 GPU-hours per trillion pre-training tokens (14.8T tokens), "
        "as the report states (180K)."
    ) in lines
    assert any(line.startswith("Simulated: 2,048 NVIDIA H800 GPUs") for line in lines)
    [database] = [line.removeprefix("Database: ") for line in lines if line.startswith("Data")]
    assert database.startswith("sqlite:////") and database.endswith("/gpucost.db")
    assert not Path(database.removeprefix("sqlite:///")).parent.exists()  # removed on SIGTERM
    assert list(workdir.iterdir()) == []  # nothing left behind in the working directory
    assert "Traceback" not in (tmp_path / "stderr").read_text()
    # The README shows this output as the demo prints it.
    shown = README.read_text().split("\n## Try it\n", 1)[1].split("```text\n", 1)[1]
    shown_lines = shown.split("\n```", 1)[0].splitlines()
    start = lines.index(shown_lines[0])
    assert lines[start : start + len(shown_lines)] == shown_lines


def test_the_measured_line_splits_the_progress_figure_into_the_table_and_idle() -> None:
    costs = CostReport.model_validate(
        {
            "start": None,
            "end": None,
            "group_by": ["model"],
            "default_usd_per_gpu_hour": "2",
            "rows": [
                {**figures("2788000"), "model": "deepseek-v3"},
                {**figures("2976"), "model": "(idle)"},
                {**figures("12"), "model": "(unattributed)"},
            ],
            "total": figures("2790988"),
        }
    )

    assert _measured_note(costs, "deepseek-v3") == (
        "Measured: 2,790,988 GPU-hours, 2,788,000 in deepseek-v3's jobs (the table), "
        "2,976 idle (GPUs with no job) and 12 in jobs without a model."
    )


def figures(hours: str) -> dict[str, object]:
    return {
        "gpu_seconds": "0",
        "gpu_hours": hours,
        "busy_gpu_hours": "0",
        "energy_kwh": "0",
        "cost_usd": "0",
        "energy_cost_usd": None,
        "rate_sources": [],
    }
