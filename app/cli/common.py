"""What every `gpucost` command shares: settings, the database, and one-line errors."""

import contextlib
import inspect
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import Database, create_db_engine
from app.core.errors import AppError

T = TypeVar("T")
# The actor the audit log records for changes made from the command line.
CLI_ACTOR = "cli"
err = Console(stderr=True, soft_wrap=True)
# The same settings as collectors/cli.py's, so that both commands' help reads alike:
# -h as well as --help, rich markup, no shell-completion options, and a plain traceback
# (never rich's, with local variables) for what is not a user's mistake. Defaults are shown
# (Typer's own default); the collector writes its own, as its options default to None.
TYPER_SETTINGS: dict[str, Any] = {
    "context_settings": {"help_option_names": ["-h", "--help"]},
    "rich_markup_mode": "rich",
    "add_completion": False,
    "pretty_exceptions_enable": False,
}


def reflow_help(app: typer.Typer) -> None:
    """Join the lines of each paragraph of every command's help (its docstring), so that the
    terminal wraps them: Typer's rich mode keeps the docstring's own line breaks after the
    first paragraph, which at 80 columns leaves ragged half-lines."""
    for info in app.registered_commands:
        text = inspect.cleandoc(info.help or inspect.getdoc(info.callback) or "")
        info.help = "\n\n".join(" ".join(p.split("\n")) for p in text.split("\n\n"))
    for group in app.registered_groups:
        if group.typer_instance is not None:
            reflow_help(group.typer_instance)


def examples(*command_lines: str) -> str:
    """A command's help epilog: real command lines, one a line."""
    return "Examples:\n\n" + "\n".join(f"  {escape(line)}" for line in command_lines)


def fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(1)


def load_settings(**overrides: Any) -> Settings:
    """The settings from GPUCOST_* variables (and .env), `overrides` replacing any of them:
    an overridden variable is never validated, so a bad value of it cannot fail the command."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        reason = str(first["msg"]).removeprefix("Value error, ")
        fail(f"invalid setting GPUCOST_{str(first['loc'][0]).upper()}: {reason}")


def shown_database(url: str) -> str:
    """The database as a person should see it: a SQLite file as an absolute path (the
    default, ./gpucost.db, depends on the directory a command runs in), no password."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url.split("@")[-1]
    if parsed.get_backend_name() != "sqlite":
        return parsed.render_as_string(hide_password=True)
    path = _sqlite_file(parsed)
    return "sqlite:///" + os.path.abspath(path) if path else "an in-memory SQLite database"


def _sqlite_file(parsed: URL) -> str | None:
    """The file an SQLite URL names (a plain path, or a `file:` URI's); None in memory."""
    name = parsed.database or ""
    if name.startswith("file:"):
        if parsed.query.get("mode") == "memory":
            return None
        name = name.removeprefix("file:").split("?", 1)[0]
    return None if name in ("", ":memory:") else name


def say_database(settings: Settings) -> None:
    """One line on stderr naming the database a command changed, so that a token or a price
    put into another database than the server's is seen at once."""
    err.print(f"database: {shown_database(settings.database_url)}", markup=False, highlight=False)


@contextmanager
def database(
    settings: Settings, *, writes: bool = False, creates: bool = False
) -> Iterator[Database]:
    """The configured database (its two ways to a session: app.core.db), turning connection
    trouble into one line; `writes`: name the database on stderr once the block has
    succeeded; `creates`: the command may create a missing SQLite file (the others refuse
    it rather than leave an empty file in the wrong directory)."""
    shown = shown_database(settings.database_url)
    trouble = _sqlite_trouble(settings.database_url, creates=creates)
    if trouble:
        fail(trouble)
    try:
        engine = create_db_engine(settings)
    except (ArgumentError, NoSuchModuleError, ValueError, ImportError) as exc:
        fail(f"GPUCOST_DATABASE_URL is not a usable database URL ({exc})")
    try:
        yield Database(engine)
    except (OperationalError, ProgrammingError) as exc:
        if _no_schema(exc):
            fail(f"the database at {shown} has no gpucost tables yet: run `gpucost db upgrade`")
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        fail(f"cannot use the database at {shown}: {reason}")
    finally:
        engine.dispose()
    if writes:
        say_database(settings)


def _sqlite_trouble(url: str, *, creates: bool) -> str | None:
    """Why an SQLite URL cannot serve this command, if it cannot: a database in memory
    (empty for every command), or a file that does not exist (SQLite would create it empty),
    unless the command `creates` the database."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite":
        return None
    path = _sqlite_file(parsed)
    if path is None:
        return (
            "GPUCOST_DATABASE_URL names an in-memory SQLite database, a new empty one for "
            "every connection: use sqlite:///PATH"
        )
    if not creates and not os.path.exists(path):
        return (
            f"there is no database at {shown_database(url)}: run `gpucost db upgrade` to create "
            "it, or run this where `gpucost serve` runs (or with its GPUCOST_DATABASE_URL)"
        )
    return None


def _no_schema(exc: OperationalError | ProgrammingError) -> bool:
    """A table the statement needs does not exist (PostgreSQL's undefined_table; SQLite's)."""
    if getattr(exc.orig, "sqlstate", None) == "42P01":
        return True
    return str(exc.orig).startswith("no such table")


@contextlib.contextmanager
def transactions(*, writes: bool = False) -> Iterator[Callable[[Callable[[Session], T]], T]]:
    """Runs pieces of work, each in a transaction of its own, committed if it returns, on
    one engine; `writes`: see `database`."""
    with database(load_settings(), writes=writes) as db:

        def run(work: Callable[[Session], T]) -> T:
            with db.write() as session:
                try:
                    return work(session)
                except AppError as exc:
                    fail(exc.message)

        yield run


def in_transaction(work: Callable[[Session], T], *, writes: bool = False) -> T:
    """`work` in one transaction, committed if it returns; `writes`: see `database`."""
    with transactions(writes=writes) as run:
        return run(work)


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
