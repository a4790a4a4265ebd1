"""Shared test helpers: report builders, a settable clock, database reset, server processes."""

import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.cli.common import uvicorn_command, wait_until_serving
from app.core.clock import utc_now
from app.core.config import Settings
from app.core.db import Database, create_db_engine
from app.models import Base
from app.tokens.service import create_token

# The repository: where the README, the deployment files and the packages are.
ROOT = Path(__file__).resolve().parent.parent

CLUSTER = "hf-h800"
NODE = "node-017"
H800 = "NVIDIA H800"


def gpu_uuid(n: int) -> str:
    return f"GPU-{n:08x}-0000-4000-8000-{n:012x}"


def entry(
    n: int = 0,
    *,
    job_id: str | None = "91234",
    gpu_seconds: Any = 60,
    util_pct: Any = 97.5,
    energy_j: Any = 41200,
    mem_peak_bytes: int = 79_000_000_000,
    model: str = H800,
) -> dict[str, Any]:
    return {
        "uuid": gpu_uuid(n),
        "index": n,
        "model": model,
        "job_id": job_id,
        "gpu_seconds": gpu_seconds,
        "util_pct": util_pct,
        "energy_j": energy_j,
        "mem_peak_bytes": mem_peak_bytes,
    }


def report(
    seq: int = 1,
    *,
    start: str = "2025-01-06T10:00:00Z",
    end: str = "2025-01-06T10:01:00Z",
    gpus: list[dict[str, Any]] | None = None,
    cluster: str = CLUSTER,
    node: str = NODE,
) -> dict[str, Any]:
    return {
        "cluster": cluster,
        "node": node,
        "seq": seq,
        "start": start,
        "end": end,
        "gpus": [entry()] if gpus is None else gpus,
    }


class SettableClock:
    """The wall clock, held at a moment the test chooses."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


DEFAULT_NOW = datetime(2025, 1, 7, tzinfo=UTC)


def reset_database(engine: Engine) -> None:
    """Empty every gpucost table, keeping the migrated schema."""
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                conn.execute(text(f"DELETE FROM {name}"))


def libpq(url: str) -> str:
    """A SQLAlchemy URL as libpq and psycopg take it (`postgresql://...`)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def ensure_postgres_database(url: str) -> None:
    """Create the PostgreSQL database named in `url` if it does not exist yet."""
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database}
            ).first()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    finally:
        admin.dispose()


def drop_all_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def skip_or_fail(reason: str) -> None:
    """A skip with the reason where this machine cannot run the test; a failure under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_server(
    database_url: str, log_dir: Path, *, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """A real `uvicorn` process serving gpucost on a free loopback port."""
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    full_env = {**os.environ, "GPUCOST_DATABASE_URL": database_url, **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            uvicorn_command(port),
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", process, log_path)
    try:
        why_not = wait_until_serving(process, server.url, path="/healthz")
        if why_not is not None:
            raise RuntimeError(f"server {why_not}:\n{server.log()}")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def token_on(
    database_url: str, role: str, *, cluster: str | None = None, name: str = "bench"
) -> str:
    """A new API token of `role` (a collector's bound to `cluster`) on the database at the URL."""
    engine = create_db_engine(Settings(database_url=database_url))
    with Database(engine).write() as session:
        _, token = create_token(
            session, role=role, cluster=cluster, name=name, actor="bench", now=utc_now()
        )
    engine.dispose()
    return token


T = TypeVar("T")


def transactions_on(engine: Engine) -> Callable[[Callable[[Session], T]], T]:
    """Runs pieces of work each in a committed transaction of its own, as the CLI does."""

    def run(work: Callable[[Session], T]) -> T:
        with Session(engine) as session, session.begin():
            return work(session)

    return run
