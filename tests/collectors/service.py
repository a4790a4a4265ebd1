"""A real gpucost server process on PostgreSQL, and a loopback proxy that fails some requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psycopg

from app.cli.common import wait_until_serving
from tests.support import free_port

BIN = Path(sys.executable).parent
PG_ADMIN = os.environ.get(
    "GPUCOST_TEST_POSTGRES_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


class Service:
    """`gpucost serve` on a fresh PostgreSQL database; stoppable and restartable."""

    def __init__(
        self, workdir: Path, admin: str = PG_ADMIN, env: dict[str, str] | None = None
    ) -> None:
        self.admin = admin
        self.dbname = f"gpucost_coll_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        server = admin.removeprefix("postgresql://").rsplit("/", 1)[0]
        self.env = {
            **os.environ,
            "GPUCOST_DATABASE_URL": f"postgresql+psycopg://{server}/{self.dbname}",
            **(env or {}),
        }
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = (workdir / "server.log").open("ab")
        self.start()
        self.viewer = self.token("viewer")

    def gpucost(self, *args: str) -> str:
        done = subprocess.run(
            [str(BIN / "gpucost"), *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return done.stdout

    def token(self, role: str, cluster: str | None = None) -> str:
        args = ["token", "create", "--role", role, "--name", f"{role}-{uuid.uuid4().hex[:8]}"]
        if cluster is not None:
            args += ["--cluster", cluster]
        return self.gpucost(*args).strip().splitlines()[-1]

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "gpucost"), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            cwd=self.workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        why_not = wait_until_serving(self.process, self.url)
        if why_not is not None:
            raise RuntimeError(f"gpucost serve {why_not}; see {self.log.name}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def close(self) -> None:
        self.stop()
        self.log.close()
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')

    def job_totals(self, cluster: str) -> dict[str, Decimal]:
        response = httpx.get(
            f"{self.url}/v1/jobs",
            params={"cluster": cluster, "limit": 1000},
            headers={"Authorization": f"Bearer {self.viewer}"},
        )
        response.raise_for_status()
        return {j["job_id"]: Decimal(j["gpu_seconds"]) for j in response.json()["jobs"]}

    def job(self, cluster: str, job_id: str) -> dict[str, object]:
        response = httpx.get(
            f"{self.url}/v1/jobs/{cluster}/{job_id}",
            headers={"Authorization": f"Bearer {self.viewer}"},
        )
        response.raise_for_status()
        return dict(response.json())


class FlakyProxy:
    """Forwards to `target`; `fail(n)` decides per request: None (forward), 'before' (answer
    500 without forwarding) or 'after' (forward, then answer 500: stored but unacknowledged)."""

    def __init__(self, target: str, fail: Callable[[int], str | None]) -> None:
        self.target, self.fail, self.count, self.failed = target, fail, 0, 0
        self.batches: list[list[int]] = []  # the seqs of each batch request, in order
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy.lock:
                    proxy.count += 1
                    if self.path == "/v1/reports:batch":
                        proxy.batches.append([r["seq"] for r in json.loads(body)["reports"]])
                    mode = proxy.fail(proxy.count)
                    proxy.failed += mode is not None
                status, content = 500, b'{"error": "InjectedFault"}'
                if mode != "before":
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    answer = httpx.request(
                        self.command, proxy.target + self.path, content=body, headers=headers
                    )
                    if mode is None:
                        status, content = answer.status_code, answer.content
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_POST = do_PUT = do_GET = _relay

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
