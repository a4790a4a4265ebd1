"""The `gpucost` command: serve the API, migrate the database, manage tokens and prices."""

import sys
from typing import Annotated

import typer

from app import __version__
from app.cli.admin import db_cli, serve, token_cli
from app.cli.demo import demo, simulate
from app.cli.exports import export
from app.cli.pricing import models, rate_cli, report
from app.cli.reconcile import reconcile_cli

cli = typer.Typer(help="gpucost: GPU-hour cost accounting.", no_args_is_help=True)


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"gpucost {__version__}")
        raise typer.Exit()


@cli.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """gpucost: GPU-hour cost accounting."""


cli.command()(serve)
cli.command()(report)
cli.command()(models)
cli.command()(export)
cli.command()(demo)
cli.command()(simulate)
cli.add_typer(db_cli, name="db")
cli.add_typer(token_cli, name="token")
cli.add_typer(rate_cli, name="rate")
cli.add_typer(reconcile_cli, name="reconcile")


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)
