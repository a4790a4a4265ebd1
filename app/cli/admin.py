"""Running the service and administering it: serve, migrations, tokens."""

import errno
import logging.config
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from alembic.util import CommandError
from rich.console import Console
from rich.table import Table

from app.cli.common import (
    CLI_ACTOR,
    KEEP_ALIVE_SECONDS,
    database,
    err,
    examples,
    fail,
    in_transaction,
    load_settings,
    transactions,
)
from app.core import migrate
from app.core.clock import utc_now
from app.core.logging import log_config
from app.retention.service import prune_raw
from app.tokens import service as tokens
from app.totals.check import check_totals, rebuild_totals

db_cli = typer.Typer(
    help="Database schema migrations and pruning.",
    epilog=examples("gpucost db upgrade", "gpucost db current"),
    no_args_is_help=True,
)
token_cli = typer.Typer(
    help="API tokens.",
    epilog=examples("gpucost token create --role admin --name ops", "gpucost token list"),
    no_args_is_help=True,
)


SERVE_EXAMPLES = examples(
    "gpucost serve",
    "gpucost serve --host 0.0.0.0 --port 8080 --workers 4",
    "GPUCOST_DATABASE_URL=postgresql+psycopg://gpucost@db/gpucost gpucost serve",
)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
) -> None:
    """Bring the schema to the migration head, then serve the API.

    The database is GPUCOST_DATABASE_URL (default: ./gpucost.db in the current directory);
    run `gpucost token create` and `gpucost rate set` with the same setting.
    """
    import uvicorn

    settings = load_settings()
    _can_listen(host, port)
    config = log_config(settings.log_format, settings.log_level)
    logging.config.dictConfig(config)
    with database(settings, writes=True, creates=True) as db:
        migrate.upgrade(db.engine)
    err.print(f"gpucost serving on http://{host}:{port} (API docs at /docs)", highlight=False)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=config,
        access_log=False,  # the service logs its own access lines, with request ids
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )


def _can_listen(host: str, port: int) -> None:
    """One line and exit 1, before anything else is done, when the address is taken or
    cannot be had (uvicorn would say so only after the migrations, with a traceback)."""
    # The socket uvicorn binds: IPv6 for an address with a colon, IPv4 otherwise.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            probe.bind((host, port))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            fail(
                f"cannot listen on {shown}: {reason} (another gpucost serve?); "
                f"choose another port with --port, e.g. --port {port + 1 if port < 65535 else 8000}"
            )
        if exc.errno == errno.EACCES:
            fail(f"cannot listen on {shown}: {reason}; choose a port above 1023 with --port")
        fail(f"cannot listen on {shown}: {reason}; check --host")


@db_cli.command("upgrade", epilog=examples("gpucost db upgrade", "gpucost db upgrade 0009"))
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply migrations up to REVISION (the newest by default)."""
    with database(load_settings(), writes=True, creates=True) as db, _known_revision():
        migrate.upgrade(db.engine, revision)
        typer.echo(f"schema at {migrate.current_revision(db.engine)}")


@contextmanager
def _known_revision() -> Iterator[None]:
    """A revision Alembic cannot resolve is one line, not its traceback."""
    try:
        yield
    except CommandError as exc:
        fail(f"{exc}: `gpucost db current` shows the schema's revision and the newest")


@db_cli.command("downgrade", epilog=examples("gpucost db downgrade 0009"))
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target, or 'base'.")]) -> None:
    """Revert migrations down to REVISION."""
    with database(load_settings(), writes=True) as db, _known_revision():
        migrate.downgrade(db.engine, revision)
        typer.echo(f"schema at {migrate.current_revision(db.engine) or 'base'}")


@db_cli.command(
    "prune", epilog=examples("gpucost db prune", "gpucost db prune --older-than-days 90")
)
def db_prune(
    older_than_days: Annotated[
        int | None, typer.Option(min=1, help="Default: GPUCOST_RAW_RETENTION_DAYS (62).")
    ] = None,
) -> None:
    """Fold raw usage older than the retention into per-GPU-hour records, then delete it
    and its reports; totals do not change."""
    days = older_than_days or load_settings().raw_retention_days
    with transactions(writes=True) as run:
        pruned = prune_raw(run, now=utc_now(), retention_days=days, actor=CLI_ACTOR)
    typer.echo(
        f"pruned raw usage before {pruned.cutoff.isoformat()}: "
        f"{pruned.usage_rows_deleted} rows folded into GPU-hour records "
        f"({pruned.gpu_hour_updates} updates), {len(pruned.partitions_dropped)} monthly "
        "partitions dropped, "
        f"{pruned.reports_deleted} reports deleted"
    )


@db_cli.command(
    "check-totals",
    epilog=examples("gpucost db check-totals", "gpucost db check-totals --repair"),
)
def db_check_totals(
    repair: Annotated[
        bool, typer.Option(help="Sum the day, month and model levels again from their hours.")
    ] = False,
) -> None:
    """Check that the rollup's day, month and model levels hold exactly the sums of their
    hours; exit 1, listing each difference, when they do not (and --repair was not given)."""
    # One snapshot, read-only: ingest goes on meanwhile, neither seen half-way by the
    # check's queries nor held off by them (SQLite's write lock).
    with (
        database(load_settings()) as db,
        db.read() as session,
    ):
        checked = check_totals(session)
    for d in checked.disagreements:
        typer.echo(
            f"{d.level} {d.key}: stored {d.stored or 'nothing'}, its hours {d.hours or 'nothing'}"
        )
    read = ", ".join(f"{count} {unit} rows" for unit, count in checked.rows.items())
    if not checked.disagreements:
        typer.echo(f"every total equals the sum of its hours ({read})")
        return
    if not repair:
        fail(f"{len(checked.disagreements)} totals differ from their hours ({read} read)")
    written = in_transaction(rebuild_totals, writes=True)
    rows = ", ".join(f"{count} {unit} rows" for unit, count in written.items())
    typer.echo(f"{len(checked.disagreements)} totals differed: rebuilt from the hours ({rows})")


@db_cli.command("current", epilog=examples("gpucost db current"))
def db_current() -> None:
    """Print the schema's revision and the migration head."""
    with database(load_settings()) as db:
        typer.echo(f"current: {migrate.current_revision(db.engine) or 'base'}")
        typer.echo(f"head:    {migrate.head_revision()}")


@token_cli.command(
    "create",
    epilog=examples(
        "gpucost token create --role admin --name ops",
        "gpucost token create --role collector --cluster hf-h800 --name hf-h800-nodes",
    ),
)
def token_create(
    role: Annotated[str, typer.Option(help="admin, viewer or collector.")],
    cluster: Annotated[
        str | None, typer.Option(help="The cluster a collector token reports for.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="A unique name (generated if left out).")] = None,
) -> None:
    """Create a token and print it once: it cannot be shown again."""
    info, clear = in_transaction(
        lambda s: tokens.create_token(
            s, role=role, cluster=cluster, name=name, actor=CLI_ACTOR, now=utc_now()
        ),
        writes=True,
    )
    scope = f" for cluster {info.cluster}" if info.cluster else ""
    err.print(f"created {info.role} token '{info.name}'{scope}; store it now, it is shown once:")
    typer.echo(clear)


@token_cli.command("list", epilog=examples("gpucost token list"))
def token_list() -> None:
    """List tokens (never their values)."""
    rows = in_transaction(tokens.list_tokens)
    table = Table("name", "role", "cluster", "created", "revoked")
    for t in rows:
        revoked = t.revoked_at.isoformat() if t.revoked_at else ""
        table.add_row(t.name, t.role, t.cluster or "", t.created_at.isoformat(), revoked)
    Console().print(table)


@token_cli.command("revoke", epilog=examples("gpucost token revoke ops"))
def token_revoke(name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Revoke a token; requests using it fail from the next one on."""
    info = in_transaction(
        lambda s: tokens.revoke_token(s, name=name, actor=CLI_ACTOR, now=utc_now()),
        writes=True,
    )
    typer.echo(f"revoked token '{info.name}'")
