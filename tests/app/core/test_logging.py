"""Structured logs: JSON lines with the request's id; never a token, never a body."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.support import free_port, gpu_uuid, report


@contextmanager
def serving(db_url: str, log_path: Path, log_format: str) -> Iterator[str]:
    """`gpucost serve` logging in `log_format` to `log_path`, until the block ends."""
    port = free_port()
    env = {**os.environ, "GPUCOST_DATABASE_URL": db_url, "GPUCOST_LOG_FORMAT": log_format}
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=log,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)


FORGED = "2026-11-30 23:00:00,000 INFO gpucost.access [-] GET /v1/admin 200"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_client_cannot_forge_a_log_line(
    db_url: str, tokens: dict[str, str], tmp_path: Path, log_format: str
) -> None:
    log_path = tmp_path / "server.log"
    viewer = {"Authorization": f"Bearer {tokens['viewer']}"}
    forged = quote(f"\n{FORGED}\r\u2028\x1b[2K")
    with serving(db_url, log_path, log_format) as base:
        unauthenticated = httpx.get(f"{base}/x{forged}")
        model = httpx.get(f"{base}/v1/models/m{forged}/cost", headers=viewer)

    text = log_path.read_bytes().decode()
    lines = text.split("\n")
    assert unauthenticated.status_code == 404 and model.status_code in (404, 422)
    # Each request is one line, its path escaped within it; no line is the forged one.
    assert not any(line.startswith(FORGED[:23]) for line in lines), lines
    assert not any(character in text for character in "\r\x1b\x85\u2028")
    for path in ("/x", "/v1/models/m"):
        written = [line for line in lines if path + "\\n" + FORGED[:10] in line]
        assert len(written) == 1, lines


def test_json_logs_carry_request_ids_and_no_secrets(
    db_url: str, tokens: dict[str, str], tmp_path: Path
) -> None:
    log_path = tmp_path / "server.log"
    with serving(db_url, log_path, "json") as base:
        named = httpx.get(
            f"{base}/v1/jobs",
            headers={"Authorization": f"Bearer {tokens['viewer']}", "X-Request-ID": "trace-42"},
        )
        posted = httpx.post(
            f"{base}/v1/reports",
            json=report(),
            headers={"Authorization": f"Bearer {tokens['collector']}"},
        )
        refused = httpx.get(f"{base}/v1/jobs", headers={"Authorization": "Bearer gpc_wrong-token"})

    text = log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "gpucost.access"]
    assert named.headers["X-Request-ID"] == "trace-42"
    assert len(posted.headers["X-Request-ID"]) == 32  # made up when not given
    assert {(a["method"], a["path"], a["status"], a["request_id"]) for a in access} >= {
        ("GET", "/v1/jobs", 200, "trace-42"),
        ("POST", "/v1/reports", 201, posted.headers["X-Request-ID"]),
        ("GET", "/v1/jobs", 401, refused.headers["X-Request-ID"]),
    }
    assert all({"time", "level", "message", "request_id"} <= set(line) for line in lines)
    for secret in [*tokens.values(), "gpc_wrong-token", gpu_uuid(0)]:
        assert secret not in text
