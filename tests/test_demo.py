"""`gpucost demo`, as a newcomer runs it: no configuration, the DeepSeek-V3 table printed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def test_demo_prints_the_v3_cost_table_and_the_urls(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCOST_")}
    done = subprocess.run(
        [str(BIN / "gpucost"), "demo", "--port", str(port)],
        cwd=tmp_path,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    table = lines[
        lines.index(
            "| Training Costs | Pre-Training | Context Extension | Post-Training | Total |"
        ) :
    ][:4]
    assert table == [
        "| Training Costs | Pre-Training | Context Extension | Post-Training | Total |",
        "| --- | --- | --- | --- | --- |",
        "| in H800 GPU Hours | 2664K | 119K | 5K | 2788K |",
        "| in USD | $5.328M | $0.238M | $0.01M | $5.576M |",
    ]
    assert "Priced at NVIDIA H800 at $2 per GPU hour (the default rate)." in lines
    assert f"API docs: http://127.0.0.1:{port}/docs" in lines
    assert f"Metrics:  http://127.0.0.1:{port}/metrics" in lines
    assert any(line.startswith("Simulated: 2,048 NVIDIA H800 GPUs") for line in lines)
    assert list(tmp_path.iterdir()) == []  # nothing left behind in the working directory
