"""A collector whose wall clock steps: small steps change no GPU-second; reports pushed
beyond the service's accepted skew are refused with a clear reason, dead-lettered (kept,
not lost), and counted in the service's metrics."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from collectors.spool import Spool
from tests.collectors.service import Service
from tests.collectors.test_collector_e2e import EXPECTED, Node, scenario


@pytest.mark.slow
def test_skewed_clock_loses_nothing_and_doubles_nothing(service: Service, tmp_path: Path) -> None:
    node = Node(tmp_path, service, speed=0)
    skewed = scenario(0, node.salt)
    # Half an hour ago, so the first reports are on time; at 1050 s the clock jumps 40
    # minutes ahead, beyond the service's 5-minute tolerance. A 2-minute step before that
    # stays within it.
    skewed["start_wall"] = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    skewed["wall_steps"] = [{"at": 350, "delta": 120}, {"at": 1050, "delta": 2400}]
    (tmp_path / "scenario.json").write_text(json.dumps(skewed))

    node.run_to_end()

    spool = Spool(tmp_path / "spool.db")
    letters = spool.dead_letters()
    assert letters, node.log_text()
    assert {status for _, status, _ in letters} == {422}
    assert all("ahead of the server clock" in error for _, _, error in letters)
    refused: dict[str, Decimal] = defaultdict(Decimal)
    with sqlite3.connect(tmp_path / "spool.db") as db:
        bodies = [row[0] for row in db.execute("SELECT body FROM dead_letters")]
    for body in bodies:
        for entry in json.loads(body)["gpus"]:
            if entry["job_id"] is not None:
                refused[entry["job_id"]] += Decimal(str(entry["gpu_seconds"]))
    accepted = service.job_totals(node.cluster)
    # Every GPU-second is either counted by the service or kept in the dead letters.
    assert {
        job: accepted.get(job, Decimal(0)) + refused.get(job, Decimal(0)) for job in EXPECTED
    } == EXPECTED
    assert sum(accepted.values()) > 0 and sum(refused.values()) > 0
    metrics = httpx.get(f"{service.url}/metrics").text
    rejected = [
        line for line in metrics.splitlines() if line.startswith("gpucost_reports_rejected_total")
    ]
    assert any('reason="invalid"' in line and not line.endswith(" 0.0") for line in rejected), (
        rejected
    )
