"""Structured logs: JSON lines with the request's id; never a token, never a body."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support import free_port, gpu_uuid, report


def test_json_logs_carry_request_ids_and_no_secrets(
    db_url: str, tokens: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    env = {**os.environ, "GPUCOST_DATABASE_URL": db_url, "GPUCOST_LOG_FORMAT": "json"}
    log_path = tmp_path / "server.log"
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
    finally:
        server.terminate()
        server.wait(timeout=10)

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
