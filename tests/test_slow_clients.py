"""Slow senders cannot shut the API out: a real server whose database slots are fewer than the
clients dripping a body a byte at a time, without a token, still answers ingest, reads and
`/readyz` at once, and answers each slow sender 408 when its body's time is up."""

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support import CLUSTER, entry, report, running_server, token_on

SLOTS = 2  # GPUCOST_DB_POOL_SIZE=1: one connection and one on overflow
SLOW = 3 * SLOTS
READ_SECONDS = 8


@contextmanager
def slow_senders(url: str, count: int) -> Iterator[list[bytes]]:
    """`count` connections that each declare a 100,000-byte report and send a byte every
    0.2 s, with no token; what each got back, once the block ends."""
    host, port = url.removeprefix("http://").split(":")
    answers: list[bytes] = [b""] * count
    stop = threading.Event()

    def drip(i: int) -> None:
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/reports HTTP/1.1\r\nHost: gpucost\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n{"
            )
            sock.settimeout(0.2)
            while not stop.is_set():
                try:
                    got = sock.recv(65536)
                    answers[i] += got
                    if answers[i] and not got:
                        return  # answered, and the server closed the connection
                    if got:
                        continue
                except TimeoutError:
                    pass
                except OSError:
                    return  # reset after the answer, as the server closes
                try:
                    sock.sendall(b" ")
                except OSError:
                    return

    threads = [threading.Thread(target=drip, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # every slow sender connected and started
    try:
        yield answers
    finally:
        deadline = time.monotonic() + READ_SECONDS + 10
        for thread in threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        stop.set()


def test_slow_unauthenticated_senders_hold_no_database_slot(db_url: str, log_dir: Path) -> None:
    collector = token_on(db_url, "collector", cluster=CLUSTER, name="slow-collector")
    viewer = token_on(db_url, "viewer", name="slow-viewer")
    env = {
        "GPUCOST_DB_POOL_SIZE": "1",
        "GPUCOST_DB_POOL_TIMEOUT_SECONDS": "2",
        "GPUCOST_BODY_READ_SECONDS": str(READ_SECONDS),
    }
    with (
        running_server(db_url, log_dir, env=env) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
        slow_senders(server.url, SLOW) as answers,
    ):
        body = report(1, gpus=[entry(0)])
        posted = client.post(
            "/v1/reports", json=body, headers={"Authorization": f"Bearer {collector}"}
        )
        read = client.get("/v1/costs", headers={"Authorization": f"Bearer {viewer}"})
        ready = client.get("/readyz")
        assert (posted.status_code, read.status_code, ready.status_code) == (201, 200, 200), (
            posted.text,
            read.text,
            ready.text,
        )
        # All three answered while every slow sender was still sending.
        assert not any(answers)
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"the request body did not arrive within 8 s" in answer
