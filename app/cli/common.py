"""What every `gpucost` command shares: settings, the database, and one-line errors."""

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn, TypeVar

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy import Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import create_db_engine, create_session_factory
from app.core.errors import AppError

T = TypeVar("T")
# The actor the audit log records for changes made from the command line.
CLI_ACTOR = "cli"
err = Console(stderr=True, soft_wrap=True)


def fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(1)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        reason = str(first["msg"]).removeprefix("Value error, ")
        fail(f"invalid setting GPUCOST_{str(first['loc'][0]).upper()}: {reason}")


@contextmanager
def database(settings: Settings) -> Iterator[Engine]:
    """An engine for the configured database, turning connection trouble into one line."""
    shown = settings.database_url.split("@")[-1]
    try:
        engine = create_db_engine(settings)
    except (ArgumentError, NoSuchModuleError, ValueError, ImportError) as exc:
        fail(f"GPUCOST_DATABASE_URL is not a usable database URL ({exc})")
    try:
        yield engine
    except (OperationalError, ProgrammingError) as exc:
        if _no_schema(exc):
            fail(f"the database at {shown} has no gpucost tables yet: run `gpucost db upgrade`")
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        fail(f"cannot use the database at {shown}: {reason}")
    finally:
        engine.dispose()


def _no_schema(exc: OperationalError | ProgrammingError) -> bool:
    """A table the statement needs does not exist (PostgreSQL's undefined_table; SQLite's)."""
    if getattr(exc.orig, "sqlstate", None) == "42P01":
        return True
    return str(exc.orig).startswith("no such table")


def in_transaction(work: Callable[[Session], T]) -> T:
    with database(load_settings()) as engine, create_session_factory(engine).begin() as session:
        try:
            return work(session)
        except AppError as exc:
            fail(exc.message)


# Longer than clients keep an idle connection (httpx: 5 s), so that a client never sends a
# request on a connection the server is closing at that very moment.
KEEP_ALIVE_SECONDS = 75


def wait_until_serving(
    process: subprocess.Popen[bytes], url: str, *, path: str = "/readyz", seconds: float = 30
) -> str | None:
    """Poll `url` + `path` until it answers 200. None once it does; else why not."""
    deadline = time.monotonic() + seconds
    while process.poll() is None:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + path, timeout=1).status_code == 200:
                return None
        if time.monotonic() > deadline:
            return f"did not become ready within {seconds:g} s"
        time.sleep(0.1)
    return f"exited (status {process.returncode}) before it was ready"


def uvicorn_command(port: int) -> list[str]:
    """The command line of a child process serving gpucost on a loopback port."""
    return [
        sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        "--timeout-keep-alive", str(KEEP_ALIVE_SECONDS),
    ]  # fmt: skip
