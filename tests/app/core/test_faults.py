"""Faults with real processes: a server killed mid-stream, a connection pool run dry."""

import os
import signal
import threading
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.main import create_app
from app.models import USAGE, Report
from tests.support import CLUSTER, SettableClock, entry, report, running_server

GPUS = 8
BATCH = 60
REPORTS = 20 * BATCH


def minute_report(seq: int) -> dict:
    hour, minute = divmod(seq, 60)
    start, end = (
        f"2025-01-06T{hour:02d}:{minute:02d}:00Z",
        f"2025-01-06T{hour + (minute + 1) // 60:02d}:{(minute + 1) % 60:02d}:00Z",
    )
    return report(seq, start=start, end=end, gpus=[entry(g, job_id="9") for g in range(GPUS)])


def test_server_killed_mid_stream_leaves_whole_batches_and_the_resend_completes(
    db_url: str, tokens: dict[str, str], db: Session, tmp_path: Path
) -> None:
    # A collector's backlog, sent batch after batch; each batch is one transaction.
    batches = [
        {"reports": [minute_report(seq) for seq in range(first, first + BATCH)]}
        for first in range(0, REPORTS, BATCH)
    ]
    headers = {"Authorization": f"Bearer {tokens['collector']}"}
    with running_server(db_url, tmp_path) as server:

        def send() -> None:
            try:
                for batch in batches:
                    httpx.post(
                        f"{server.url}/v1/reports:batch", json=batch, headers=headers, timeout=60
                    )
            except httpx.TransportError:
                pass  # the server died under it, as intended

        sender = threading.Thread(target=send)
        sender.start()
        # Kill it once two batches are in, long before the backlog is through.
        deadline = time.monotonic() + 30
        while db.execute(select(func.count()).select_from(Report)).scalar_one() < 2 * BATCH:
            assert time.monotonic() < deadline, server.log()
            db.rollback()
            time.sleep(0.02)
        os.kill(server.process.pid, signal.SIGKILL)
        sender.join()
        server.process.wait()
    db.rollback()

    stored = db.execute(select(func.count()).select_from(Report)).scalar_one()
    per_report = db.execute(
        select(USAGE.c.report_id, func.count()).group_by(USAGE.c.report_id)
    ).all()
    assert 2 * BATCH <= stored < REPORTS and stored % BATCH == 0
    assert {count for _, count in per_report} == {GPUS} and len(per_report) == stored

    with running_server(db_url, tmp_path) as again:
        answers = [
            httpx.post(
                f"{again.url}/v1/reports:batch", json=batch, headers=headers, timeout=120
            ).json()
            for batch in batches
        ]
        job = httpx.get(
            f"{again.url}/v1/jobs/{CLUSTER}/9",
            headers={"Authorization": f"Bearer {tokens['viewer']}"},
        ).json()

    totals = [sum(a[k] for a in answers) for k in ("accepted", "duplicates", "rejected")]
    assert totals == [REPORTS - stored, stored, 0]
    assert job["gpu_seconds"] == str(REPORTS * GPUS * 60)


def test_pool_run_dry_answers_503_then_recovers(
    settings: Settings, clock: SettableClock, auth: dict[str, dict[str, str]]
) -> None:
    tight = settings.model_copy(update={"db_pool_size": 1, "db_pool_timeout_seconds": 0.5})
    app = create_app(tight, clock=clock)
    with TestClient(app) as client:
        held = [app.state.engine.connect() for _ in range(2)]  # the pool and its overflow
        started = time.monotonic()
        starved = client.get("/v1/jobs", headers=auth["viewer"])
        waited = time.monotonic() - started
        for connection in held:
            connection.close()
        recovered = client.get("/v1/jobs", headers=auth["viewer"])

    assert starved.status_code == 503
    assert starved.json()["error"] == "DatabaseUnavailable"
    assert waited >= 0.5  # it waited for a connection before giving up
    assert recovered.status_code == 200
