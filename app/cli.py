"""The `gpucost` command: serve the API, migrate the database, manage tokens."""

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session

from app.core import migrate
from app.core.clock import utc_now
from app.core.config import Settings
from app.core.db import create_db_engine, create_session_factory
from app.core.errors import AppError, validation_body
from app.core.units import micro_from_usd, plain
from app.costs.service import model_cost
from app.costs.table import rate_note, render_csv, render_markdown, table_rows
from app.pricing.schemas import RateCreate
from app.pricing.service import list_rates, set_rate
from app.tokens import service as tokens

T = TypeVar("T")
CLI_ACTOR = "cli"

cli = typer.Typer(help="gpucost: GPU-hour cost accounting.", no_args_is_help=True)
db_cli = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
token_cli = typer.Typer(help="API tokens.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
rate_cli = typer.Typer(help="GPU-hour prices (rate cards).", no_args_is_help=True)
cli.add_typer(token_cli, name="token")
cli.add_typer(rate_cli, name="rate")
err = Console(stderr=True, soft_wrap=True)


def fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(1)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"invalid setting GPUCOST_{str(first['loc'][0]).upper()}: {first['msg']}")


@contextmanager
def database(settings: Settings) -> Iterator[Engine]:
    """An engine for the configured database, turning connection trouble into one line."""
    shown = settings.database_url.split("@")[-1]
    try:
        engine = create_db_engine(settings)
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        fail(f"GPUCOST_DATABASE_URL is not a usable database URL ({exc})")
    try:
        yield engine
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        fail(f"cannot use the database at {shown}: {reason}")
    finally:
        engine.dispose()


def in_transaction(work: Callable[[Session], T]) -> T:
    with database(load_settings()) as engine, create_session_factory(engine).begin() as session:
        try:
            return work(session)
        except AppError as exc:
            fail(exc.message)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
) -> None:
    """Bring the schema to the migration head, then serve the API."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()
    with database(settings) as engine:
        migrate.upgrade(engine)
    err.print(f"gpucost serving on http://{host}:{port} (API docs at /docs)", highlight=False)
    uvicorn.run("app.main:create_app", factory=True, host=host, port=port, workers=workers)


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


@rate_cli.command("set")
def rate_set(
    gpu_model: Annotated[str, typer.Option(help="As NVML names it, e.g. 'NVIDIA H800'.")],
    usd_per_gpu_hour: Annotated[str, typer.Option(help="USD per GPU-hour, e.g. 2.00.")],
    effective_from: Annotated[
        str, typer.Option("--from", help="A whole UTC hour, e.g. 2025-01-01T00:00:00Z.")
    ],
    cluster: Annotated[str | None, typer.Option(help="Only this cluster.")] = None,
) -> None:
    """Price a GPU model from an hour on (a past hour re-prices the past)."""
    try:
        body = RateCreate(
            gpu_model=gpu_model,
            usd_per_gpu_hour=usd_per_gpu_hour,  # type: ignore[arg-type]
            effective_from=effective_from,  # type: ignore[arg-type]
            cluster=cluster,
        )
    except ValidationError as exc:
        fail(validation_body(exc.errors())["detail"])
    rate, created = in_transaction(lambda s: set_rate(s, body=body, actor=CLI_ACTOR, now=utc_now()))
    verb = "set" if created else "restated"
    scope = f" on {rate.cluster}" if rate.cluster else ""
    typer.echo(
        f"{verb}: {rate.gpu_model}{scope} at ${plain(rate.usd_per_gpu_hour)} per GPU-hour "
        f"from {rate.effective_from.isoformat()}"
    )


@rate_cli.command("list")
def rate_list() -> None:
    """List GPU-hour prices with the span each is in force."""
    table = Table("gpu model", "cluster", "USD per GPU-hour", "from", "until")
    for rate in in_transaction(list_rates):
        until = rate.effective_to.isoformat() if rate.effective_to else ""
        table.add_row(
            rate.gpu_model,
            rate.cluster or "(all)",
            plain(rate.usd_per_gpu_hour),
            rate.effective_from.isoformat(),
            until,
        )
    Console().print(table)


@cli.command()
def report(
    model: Annotated[str, typer.Argument(help="The model, as jobs are labelled with it.")],
    output: Annotated[
        str, typer.Option("--format", help="table, json, csv or markdown.")
    ] = "table",
    note: Annotated[bool, typer.Option("--rate-note", help="Say which prices were used.")] = False,
) -> None:
    """A model's training cost by phase, in the layout of the DeepSeek-V3 report's table."""
    if output not in ("table", "json", "csv", "markdown"):
        fail(f"--format must be table, json, csv or markdown, not '{output}'")
    settings = load_settings()
    cost = in_transaction(
        lambda s: model_cost(
            s,
            model=model,
            start=None,
            end=None,
            cluster=None,
            default_micro_usd=micro_from_usd(settings.default_rate_usd),
        )
    )
    if output == "json":
        typer.echo(cost.model_dump_json(indent=2))
        return
    rows = table_rows(cost)
    if output == "csv":
        typer.echo(render_csv(rows), nl=False)
    elif output == "markdown":
        typer.echo(render_markdown(rows))
    else:
        table = Table(*rows[0], title=f"{model} training costs")
        for row in rows[1:]:
            table.add_row(*row)
        Console().print(table)
    if note:
        typer.echo(rate_note(cost))


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
