"""PostgreSQL stopped for 30 s under a running collector: the service answers 503 (never
500, never a hang), the collector spools, and once the database is back every GPU-second
is counted exactly once. The database is a private PostgreSQL instance of the test's own,
so stopping it disturbs nothing else."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.collectors.service import Service
from tests.collectors.test_collector_e2e import Node, check
from tests.support import free_port, skip_or_fail

OUTAGE_S = 30


class PrivatePostgres:
    """A PostgreSQL server in a temporary directory, on a free loopback port."""

    def __init__(self, binaries: Path) -> None:
        self.bin = binaries
        self.dir = Path(tempfile.mkdtemp(prefix="gpucost-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        self.admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres(
            "initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "--no-sync"
        )

    def _as_postgres(self, tool: str, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin / tool), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            "pg_ctl",
            "-D",
            str(self.dir / "data"),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.dir / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found or os.geteuid() != 0 or shutil.which("runuser") is None:
        skip_or_fail("needs PostgreSQL's server binaries and root (to run them as postgres)")
    server = PrivatePostgres(Path(found[-1]).parent)
    server.start()
    yield server
    server.remove()


@pytest.mark.slow
def test_exact_through_a_database_outage(private_postgres: PrivatePostgres, tmp_path: Path) -> None:
    service = Service(
        tmp_path, admin=private_postgres.admin, env={"GPUCOST_DB_POOL_TIMEOUT_SECONDS": "3"}
    )
    try:
        nodes = []
        for name in ("a", "b"):  # several collectors, each of its own cluster
            (tmp_path / name).mkdir()
            nodes.append(
                Node(tmp_path / name, service, speed=40)
            )  # the outage falls inside the run
        token = (tmp_path / "a" / "token").read_text().strip()
        collectors = [node.start() for node in nodes]
        for node in nodes:
            node.wait_for_clock(140)

        private_postgres.stop()
        stopped = time.monotonic()
        ready = httpx.get(f"{service.url}/readyz", timeout=60)
        asked = time.monotonic()
        # A route the collector's token may use that needs the database (the token itself
        # is remembered by the server, and a recheck falls due only after a second).
        labels = httpx.put(
            f"{service.url}/v1/jobs/{nodes[0].cluster}/outage-probe",
            json={"model": "m"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        answered_in = time.monotonic() - asked
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
        private_postgres.start()

        for node, collector in zip(nodes, collectors, strict=True):
            assert collector.wait(timeout=180) == 0, node.log_text()
        assert ready.status_code == 503
        assert labels.status_code == 503 and labels.json()["error"] == "DatabaseUnavailable"
        assert answered_in < 30  # bounded by the pool and connect timeouts, not a hang
        for node in nodes:
            check(service, node)
            assert "503" in node.log_text() or "cannot reach" in node.log_text()
    finally:
        service.close()
