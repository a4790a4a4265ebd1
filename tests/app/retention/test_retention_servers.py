"""Real server processes: prunes whose cutoff follows the reports two servers are storing,
and every raw row folded exactly once: the GPU-hour records equal the rollup."""

import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from app.models import GPU_HOURS, USAGE, HourlyUsage
from app.retention.service import prune_raw
from tests.support import entry, report, running_server, transactions_on

pytestmark = pytest.mark.slow

MINUTES = 150
START = datetime(2025, 1, 6, 10, tzinfo=UTC)


def minute_of(node: str, seq: int) -> dict:
    begin = START + timedelta(minutes=seq)
    iso = [(begin + timedelta(minutes=k)).isoformat().replace("+00:00", "Z") for k in (0, 1)]
    first = 8 if node == "node-b" else 0
    return report(
        seq + 1,
        node=node,
        start=iso[0],
        end=iso[1],
        gpus=[entry(first + g, job_id=f"{node}-{g // 4}", energy_j=60 + g) for g in range(8)],
    )


def by_job_hour(rows: list) -> dict:
    return {(job, hour): tuple(map(int, sums)) for job, hour, *sums in rows}


def test_prunes_racing_ingest_fold_every_stored_row_once(
    db_url: str, tokens: dict[str, str], log_dir: Path
) -> None:
    collector = {"Authorization": f"Bearer {tokens['collector']}"}
    statuses: dict[int, list[int]] = defaultdict(list)
    progress = {"node-a": 0, "node-b": 0}
    folded_meanwhile: list[int] = []  # raw rows each prune folded while reports came
    engine = create_engine(db_url)
    with running_server(db_url, log_dir) as one, running_server(db_url, log_dir) as two:
        done = threading.Event()

        def send(node: str, url: str) -> None:
            with httpx.Client(base_url=url, headers=collector, timeout=60) as client:
                for seq in range(MINUTES):
                    status = client.post("/v1/reports", json=minute_of(node, seq)).status_code
                    statuses[status].append(seq)
                    progress[node] = seq

        def prune() -> None:
            # The cutoff follows the sender ahead: the other's reports, just before it, are
            # being stored while the fold deletes and sums their hours (or are refused once
            # a prune has committed).
            while not done.is_set():
                cutoff = START + timedelta(minutes=max(progress.values()) + 1)
                pruned = prune_raw(
                    transactions_on(engine), now=cutoff, retention_days=0, actor="test"
                )
                folded_meanwhile.append(pruned.usage_rows_deleted)

        senders = [
            threading.Thread(target=send, args=("node-a", one.url)),
            threading.Thread(target=send, args=("node-b", two.url)),
        ]
        pruner = threading.Thread(target=prune)
        pruner.start()
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join()
        done.set()
        pruner.join()

    final = START + timedelta(days=1)
    prune_raw(transactions_on(engine), now=final, retention_days=0, actor="test")
    with Session(engine) as session:
        raw_left = session.execute(select(func.count()).select_from(USAGE)).scalar_one()
        figures = (GPU_HOURS.c.gpu_us, GPU_HOURS.c.busy_us, GPU_HOURS.c.energy_mj)
        folded = session.execute(
            select(GPU_HOURS.c.job_id, GPU_HOURS.c.hour, *map(func.sum, figures)).group_by(
                GPU_HOURS.c.job_id, GPU_HOURS.c.hour
            )
        ).all()
        rollup = session.execute(
            select(
                HourlyUsage.job_id,
                HourlyUsage.hour,
                HourlyUsage.gpu_us,
                HourlyUsage.busy_us,
                HourlyUsage.energy_mj,
            )
        ).all()
    engine.dispose()

    # Only 201s (stored) and 422s (refused: older than a prune's cutoff when they came).
    assert set(statuses) <= {201, 422}, dict(statuses)
    stored = len(statuses[201])
    assert stored > 0
    assert sum(folded_meanwhile) > 0
    assert raw_left == 0
    assert by_job_hour(folded) == by_job_hour(rollup)
    # Every stored report's 8 GPU-minutes, once.
    assert sum(row[2] for row in rollup) == stored * 8 * 60_000_000
