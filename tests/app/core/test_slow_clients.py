"""Slow senders cannot shut the API out: a real server whose database slots are fewer than the
clients dripping a body a byte at a time still answers ingest, reads and `/readyz` at once,
answers each slow sender with a token 408 when its body's time is up, and each without one
401 before reading its body. Bodies held at once are bounded, and a client that leaves
mid-body is logged 499, not as a server error."""

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
def slow_senders(
    url: str, count: int, token: str | None = None, path: str = "/v1/reports"
) -> Iterator[list[bytes]]:
    """`count` connections that each declare a 100,000-byte report and send a byte every
    0.2 s, with `token` or none; what each got back, once the block ends."""
    host, port = url.removeprefix("http://").split(":")
    answers: list[bytes] = [b""] * count
    stop = threading.Event()
    connected = threading.Barrier(count + 1)

    authorization = f"Authorization: Bearer {token}\r\n".encode() if token else b""

    def drip(i: int) -> None:
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: gpucost\r\n".encode()
                + b"Content-Type: application/json\r\n"
                + authorization
                + b"Content-Length: 100000\r\n\r\n{"
            )
            connected.wait(timeout=10)
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
    connected.wait(timeout=10)  # every sender has sent its headers
    time.sleep(0.5)  # and the server has read their headers
    try:
        yield answers
    finally:
        deadline = time.monotonic() + READ_SECONDS + 10
        for thread in threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        stop.set()


def test_slow_senders_hold_no_database_slot(db_url: str, log_dir: Path) -> None:
    collector = token_on(db_url, "collector", cluster=CLUSTER, name="slow-collector")
    dripping = token_on(db_url, "collector", cluster=CLUSTER, name="dripping-collector")
    viewer = token_on(db_url, "viewer", name="slow-viewer")
    env = {
        "GPUCOST_DB_POOL_SIZE": "1",
        "GPUCOST_DB_POOL_TIMEOUT_SECONDS": "2",
        "GPUCOST_BODY_READ_SECONDS": str(READ_SECONDS),
    }
    with (
        running_server(db_url, log_dir, env=env) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
        slow_senders(server.url, SLOW, dripping) as answers,
        slow_senders(server.url, SLOW) as strangers,
        slow_senders(server.url, SLOW, path="/v2/anything") as lost,
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
        # All three answered while every slow sender with a token was still sending; those
        # without one were refused as soon as their headers arrived, their bodies unread.
        assert not any(answers)
        for answer in strangers:
            assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
            assert b"connection: close" in answer.lower()
        # Outside the API no body is read: a path that matches nothing is answered at once.
        for answer in lost:
            assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"the request body did not arrive within 8 s" in answer


def raw_request(url: str, head: bytes, body: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(head + body)
    return sock


def test_bodies_held_at_once_are_bounded_and_a_client_leaving_is_499(
    db_url: str, log_dir: Path
) -> None:
    collector = token_on(db_url, "collector", cluster=CLUSTER, name="holding-collector")
    env = {"GPUCOST_MAX_BODY_BYTES": "1024", "GPUCOST_BODY_BUFFER_BYTES": "1024",
           "GPUCOST_BODY_READ_SECONDS": "20"}  # fmt: skip
    head = (
        b"POST /v1/reports HTTP/1.1\r\nHost: gpucost\r\nContent-Length: 1000\r\n"
        + f"Authorization: Bearer {collector}\r\n\r\n".encode()
    )
    with running_server(db_url, log_dir, env=env) as server:
        holding = raw_request(server.url, head, b"{" + b" " * 599)  # 600 of its 1000 bytes
        time.sleep(0.5)
        second = raw_request(server.url, head, b"{" + b" " * 599)
        answer = second.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:300]
        assert b"Retry-After" in answer or b"retry-after" in answer
        second.close()
        holding.close()  # leaves mid-body
        metrics = ""
        for _ in range(50):
            metrics = httpx.get(f"{server.url}/metrics").text
            if 'status="499"' in metrics:
                break
            time.sleep(0.1)
        # Counted as the client's leaving, not as a server error.
        reports = [line for line in metrics.splitlines() if 'route="/v1/reports"' in line]
        assert any('status="499"' in line for line in reports), reports
        # (Each export route's 500s are exposed from 0: none counted.)
        errors = [line for line in metrics.splitlines() if 'status="500"' in line]
        assert all(line.endswith(" 0.0") for line in errors), errors
