"""Many more concurrent requests than database connections: each waits its turn and none
fails. (A request holds its connection between the thread that authenticates it and the
thread that serves it; with fewer threads than waiting requests, holders could never get
the thread they need, and every request would time out.)"""

import threading
from collections import Counter
from pathlib import Path

import httpx

from tests.support import running_server

CONCURRENT = 120


def test_more_requests_than_connections_all_succeed(
    db_url: str, tokens: dict[str, str], log_dir: Path
) -> None:
    env = {"GPUCOST_DB_POOL_SIZE": "2", "GPUCOST_DB_POOL_TIMEOUT_SECONDS": "20"}
    statuses: Counter[int | str] = Counter()
    lock = threading.Lock()
    with running_server(db_url, log_dir, env=env) as server:
        gate = threading.Barrier(CONCURRENT)

        def ask() -> None:
            gate.wait()
            try:
                status: int | str = httpx.get(
                    f"{server.url}/v1/jobs",
                    headers={"Authorization": f"Bearer {tokens['viewer']}"},
                    timeout=60,
                ).status_code
            except httpx.TransportError as exc:
                status = type(exc).__name__
            with lock:
                statuses[status] += 1

        threads = [threading.Thread(target=ask) for _ in range(CONCURRENT)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert statuses == {200: CONCURRENT}
