"""Running the service and administering it: serve, migrations, tokens."""

import logging.config
import socket
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from app.cli.common import (
    CLI_ACTOR,
    KEEP_ALIVE_SECONDS,
    database,
    err,
    fail,
    in_transaction,
    load_settings,
)
from app.core import migrate
from app.core.clock import utc_now
from app.core.logging import log_config
from app.retention.service import prune_raw
from app.tokens import service as tokens

db_cli = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
token_cli = typer.Typer(help="API tokens.", no_args_is_help=True)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
) -> None:
    """Bring the schema to the migration head, then serve the API."""
    import uvicorn

    settings = load_settings()
    _can_listen(host, port)
    config = log_config(settings.log_format, settings.log_level)
    logging.config.dictConfig(config)
    with database(settings) as engine:
        migrate.upgrade(engine)
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
        fail(f"cannot listen on {shown}: {exc.strerror or exc}")


@db_cli.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (the newest by default)."""
    with database(load_settings()) as engine:
        migrate.upgrade(engine, revision)
        typer.echo(f"schema at {migrate.current_revision(engine)}")


@db_cli.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target, or 'base'.")]) -> None:
    """Revert migrations down to REVISION."""
    with database(load_settings()) as engine:
        migrate.downgrade(engine, revision)
        typer.echo(f"schema at {migrate.current_revision(engine) or 'base'}")


@db_cli.command("prune")
def db_prune(
    older_than_days: Annotated[
        int | None, typer.Option(min=1, help="Default: GPUCOST_RAW_RETENTION_DAYS (400).")
    ] = None,
) -> None:
    """Delete raw usage and reports older than the retention; totals do not change."""
    days = older_than_days or load_settings().raw_retention_days
    pruned = in_transaction(
        lambda s: prune_raw(s, now=utc_now(), retention_days=days, actor=CLI_ACTOR)
    )
    typer.echo(
        f"pruned raw usage before {pruned.cutoff.isoformat()}: "
        f"{len(pruned.partitions_dropped)} monthly partitions dropped, "
        f"{pruned.usage_rows_deleted} rows and {pruned.reports_deleted} reports deleted"
    )


@db_cli.command("current")
def db_current() -> None:
    """Print the schema's revision and the migration head."""
    with database(load_settings()) as engine:
        typer.echo(f"current: {migrate.current_revision(engine) or 'base'}")
        typer.echo(f"head:    {migrate.head_revision()}")


@token_cli.command("create")
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
        )
    )
    scope = f" for cluster {info.cluster}" if info.cluster else ""
    err.print(f"created {info.role} token '{info.name}'{scope}; store it now, it is shown once:")
    typer.echo(clear)


@token_cli.command("list")
def token_list() -> None:
    """List tokens (never their values)."""
    rows = in_transaction(tokens.list_tokens)
    table = Table("name", "role", "cluster", "created", "revoked")
    for t in rows:
        revoked = t.revoked_at.isoformat() if t.revoked_at else ""
        table.add_row(t.name, t.role, t.cluster or "", t.created_at.isoformat(), revoked)
    Console().print(table)


@token_cli.command("revoke")
def token_revoke(name: str) -> None:
    """Revoke a token; requests using it fail from the next one on."""
    info = in_transaction(
        lambda s: tokens.revoke_token(s, name=name, actor=CLI_ACTOR, now=utc_now())
    )
    typer.echo(f"revoked token '{info.name}'")
