"""Real server processes: concurrent duplicates, the body limit on the wire, `gpucost serve`."""

import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

from app.core.clock import utc_now
from app.tokens.known import RECHECK
from app.tokens.service import revoke_token
from tests.support import CLUSTER, entry, free_port, report, running_server

Tokens = dict[str, str]
pytestmark = pytest.mark.slow


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def minute(seq: int) -> dict:
    hour, mins = divmod(seq, 60)
    start = f"2025-01-06T{10 + hour:02d}:{mins:02d}:00Z"
    end_h, end_m = divmod(seq + 1, 60)
    end = f"2025-01-06T{10 + end_h:02d}:{end_m:02d}:00Z"
    return report(seq, start=start, end=end, gpus=[entry(g, job_id="42") for g in range(8)])


def test_two_servers_receiving_the_same_reports_count_them_once(
    db_url: str, tokens: Tokens, log_dir: Path
) -> None:
    reports = [minute(seq) for seq in range(12)]
    with running_server(db_url, log_dir) as one, running_server(db_url, log_dir) as two:
        outcomes: list[tuple[int, int]] = []
        lock = threading.Lock()

        def send(server_url: str, body: dict, gate: threading.Barrier) -> None:
            gate.wait()
            response = httpx.post(
                f"{server_url}/v1/reports",
                json=body,
                headers=bearer(tokens["collector"]),
                timeout=60,
            )
            with lock:
                outcomes.append((body["seq"], response.status_code))

        for body in reports:
            gate = threading.Barrier(4)
            threads = [
                threading.Thread(target=send, args=(url, body, gate))
                for url in (one.url, two.url) * 2
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        # Batches of all reports, in opposite orders, to both servers at once.
        gate = threading.Barrier(2)
        batch_outcomes: list[tuple[int, set[str]]] = []

        def send_batch(server_url: str, bodies: list) -> None:
            gate.wait()
            response = httpx.post(
                f"{server_url}/v1/reports:batch",
                json={"reports": bodies},
                headers=bearer(tokens["collector"]),
                timeout=60,
            )
            statuses = {r["status"] for r in response.json().get("results", [])}
            batch_outcomes.append((response.status_code, statuses))

        threads = [
            threading.Thread(target=send_batch, args=(one.url, reports)),
            threading.Thread(target=send_batch, args=(two.url, list(reversed(reports)))),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        job = httpx.get(f"{one.url}/v1/jobs/{CLUSTER}/42", headers=bearer(tokens["viewer"])).json()

    per_report = Counter((seq, status) for seq, status in outcomes)
    for body in reports:
        assert per_report[(body["seq"], 201)] == 1, per_report
        assert per_report[(body["seq"], 200)] == 3, per_report
    assert batch_outcomes == [(200, {"duplicate"}), (200, {"duplicate"})]
    assert job["gpu_seconds"] == str(12 * 8 * 60)


def test_a_revoked_token_is_refused_by_every_server_after_the_recheck_delay(
    db_url: str, tokens: Tokens, log_dir: Path, db: Session
) -> None:
    headers = bearer(tokens["collector"])
    with running_server(db_url, log_dir) as one, running_server(db_url, log_dir) as two:
        for server in (one, two):  # each remembers the token
            answer = httpx.post(f"{server.url}/v1/reports", json=minute(0), headers=headers)
            assert answer.status_code in (200, 201)
        with db.begin():
            revoke_token(db, name="collector", actor="test", now=utc_now())
        time.sleep(RECHECK.total_seconds())
        answers = [
            httpx.post(f"{server.url}/v1/reports", json=minute(0), headers=headers).status_code
            for server in (one, two)
        ]
    assert answers == [401, 401]


def test_server_refuses_an_oversized_body_without_reading_it(
    db_url: str, tokens: dict[str, str], log_dir: Path
) -> None:
    authorization = f"Authorization: Bearer {tokens['collector']}\r\n".encode()
    with running_server(db_url, log_dir, env={"GPUCOST_MAX_BODY_BYTES": "65536"}) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            # Claim 1 GiB, send only the headers: the answer must not wait for the body.
            sock.sendall(
                b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + authorization
                + b"Content-Length: 1073741824\r\n\r\n"
            )
            answer = b""
            while chunk := sock.recv(4096):  # the server closes the connection after answering
                answer += chunk

    answer_text = answer.decode()

    assert answer_text.startswith("HTTP/1.1 413")
    assert '"error":"PayloadTooLarge"' in answer_text


def test_gpucost_serve_migrates_then_serves(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "GPUCOST_DATABASE_URL": db_url}
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
