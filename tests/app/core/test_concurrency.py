"""Many more concurrent requests than database connections: each waits its turn and none
fails. (A request holds its connection between the thread that authenticates it and the
thread that serves it; with fewer threads than waiting requests, holders could never get
the thread they need, and every request would time out.) Single reports that arrive
together are stored together, each answered with its own outcome."""

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app.models import HourlyUsage, Report
from tests.support import entry, report, running_server

CONCURRENT = 120
POOL_OF_TWO = {"GPUCOST_DB_POOL_SIZE": "2", "GPUCOST_DB_POOL_TIMEOUT_SECONDS": "20"}


def all_at_once(request: Callable[[int], httpx.Response]) -> Counter[int | str]:
    """`request(i)` for i in range(CONCURRENT), all released at the same moment; the count
    of each status (or transport error)."""
    statuses: Counter[int | str] = Counter()
    lock = threading.Lock()
    gate = threading.Barrier(CONCURRENT)

    def ask(i: int) -> None:
        gate.wait()
        try:
            status: int | str = request(i).status_code
        except httpx.TransportError as exc:
            status = type(exc).__name__
        with lock:
            statuses[status] += 1

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_more_requests_than_connections_all_succeed(
    db_url: str, tokens: dict[str, str], log_dir: Path
) -> None:
    headers = {"Authorization": f"Bearer {tokens['viewer']}"}
    with running_server(db_url, log_dir, env=POOL_OF_TWO) as server:
        statuses = all_at_once(
            lambda _: httpx.get(f"{server.url}/v1/jobs", headers=headers, timeout=60)
        )

    assert statuses == {200: CONCURRENT}


def test_single_reports_arriving_together_are_stored_together(
    db_url: str, tokens: dict[str, str], log_dir: Path, db: Session
) -> None:
    headers = {"Authorization": f"Bearer {tokens['collector']}"}

    def body(i: int) -> dict:
        # A node each, except that every tenth request resends the report of the one before.
        node = i - 1 if i % 10 == 9 else i
        return report(1, node=f"node-{node:03d}", gpus=[{**entry(node), "index": 0}])

    with running_server(db_url, log_dir, env=POOL_OF_TWO) as server:
        statuses = all_at_once(
            lambda i: httpx.post(
                f"{server.url}/v1/reports", json=body(i), headers=headers, timeout=60
            )
        )

    resends = CONCURRENT // 10
    assert statuses == {201: CONCURRENT - resends, 200: resends}
    assert db.execute(select(func.count()).select_from(Report)).scalar_one() == CONCURRENT - resends
    assert db.execute(select(func.sum(HourlyUsage.gpu_us))).scalar_one() == (
        (CONCURRENT - resends) * 60_000_000
    )
    if db_url.startswith("postgresql"):
        # Rows written by one transaction share its id: fewer transactions than reports.
        transactions = db.execute(text("SELECT count(DISTINCT xmin::text) FROM reports")).scalar()
        assert transactions < CONCURRENT - resends
