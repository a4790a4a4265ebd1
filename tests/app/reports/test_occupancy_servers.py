"""Occupancy under concurrency: two server processes receiving overlapping reports for the
same GPUs at the same moment store exactly one report per GPU, on PostgreSQL and SQLite."""

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import GPU_OCCUPANCY, USAGE, Report
from tests.conftest import make_token
from tests.support import entry, report, running_server

GPUS = 24


def race(requests: list[tuple[str, dict[str, Any], dict[str, str]]]) -> list[int]:
    """Each (url, body, headers) posted at the same moment from a thread of its own; the
    status each report got (a batch of one: its report's)."""
    statuses = [0] * len(requests)
    gate = threading.Barrier(len(requests))

    def send(i: int) -> None:
        url, body, headers = requests[i]
        gate.wait()
        response = httpx.post(url, json=body, headers=headers, timeout=60)
        results = response.json().get("results") if response.status_code == 200 else None
        statuses[i] = results[0]["http_status"] if results else response.status_code

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


@pytest.mark.slow
def test_two_servers_store_one_of_two_overlapping_reports_per_gpu(
    db_url: str, tokens: dict[str, str], log_dir: Path, db: Session
) -> None:
    own = {"Authorization": f"Bearer {tokens['collector']}"}
    other = {"Authorization": f"Bearer {make_token(db_url, 'collector', 'cluster-b')}"}
    with running_server(db_url, log_dir) as one, running_server(db_url, log_dir) as two:
        requests = []
        for n in range(GPUS):
            # GPU n from node-a, and again half a minute later from a node of another
            # cluster (even n, as a GPU moved) or another node (odd n, a second collector).
            here = report(n + 1, node="node-a", gpus=[entry(n)])
            there = report(
                n + 1,
                cluster="cluster-b" if n % 2 == 0 else here["cluster"],
                node="node-b",
                start="2025-01-06T10:00:30Z",
                end="2025-01-06T10:01:30Z",
                gpus=[entry(n)],
            )
            requests.append((f"{one.url}/v1/reports", here, own))
            requests.append(
                (f"{two.url}/v1/reports:batch", {"reports": [there]}, other if n % 2 == 0 else own)
            )
        statuses = race(requests)

    # Each GPU's pair: exactly one stored, whichever server got there first.
    pairs = list(zip(statuses[0::2], statuses[1::2], strict=True))
    assert all(pair in {(201, 409), (409, 201)} for pair in pairs), pairs
    assert db.execute(select(func.count()).select_from(Report)).scalar_one() == GPUS
    assert db.execute(select(func.count()).select_from(GPU_OCCUPANCY)).scalar_one() == GPUS
    assert db.execute(select(func.sum(USAGE.c.gpu_us))).scalar_one() == GPUS * 60_000_000
