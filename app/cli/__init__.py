"""The `gpucost` command: serve the API, migrate the database, manage tokens and prices."""

import sys
from typing import Annotated

try:  # The service's packages: a GPU node's install (`pip install gpucost`) has none of them.
    import alembic  # noqa: F401
    import fastapi  # noqa: F401
    import psycopg  # noqa: F401
    import sqlalchemy  # noqa: F401
except ModuleNotFoundError as missing:
    sys.exit(
        f"gpucost: the service is not installed here ({missing.name} is missing);"
        " install it with: pip install 'gpucost[server]'"
    )

import typer

from app import __version__
from app.cli.admin import SERVE_EXAMPLES, db_cli, serve, token_cli
from app.cli.budgets import budget_cli
from app.cli.common import TYPER_SETTINGS, examples, reflow_help
from app.cli.demo import DEMO_EXAMPLES, SIMULATE_EXAMPLES, demo, simulate
from app.cli.exports import EXPORT_EXAMPLES, export
from app.cli.rates import rate_cli
from app.cli.reconcile import reconcile_cli
from app.cli.report import MODELS_EXAMPLES, REPORT_EXAMPLES, models, report
from app.cli.scenarios import scenario_cli

cli = typer.Typer(
    help="gpucost: GPU-hour cost accounting.",
    epilog=examples(
        "gpucost demo",
        "gpucost db upgrade",
        "gpucost token create --role collector --cluster hf-h800 --name hf-h800-nodes",
        "gpucost serve",
        "gpucost report deepseek-v3 --rate-note",
    )
    + "\n\nThe database is GPUCOST_DATABASE_URL (default: sqlite:///./gpucost.db, in the "
    "current directory); every command that changes it names it on stderr.",
    no_args_is_help=True,
    **TYPER_SETTINGS,
)


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


cli.command(epilog=SERVE_EXAMPLES)(serve)
cli.command(epilog=REPORT_EXAMPLES)(report)
cli.command(epilog=MODELS_EXAMPLES)(models)
cli.command(epilog=EXPORT_EXAMPLES)(export)
cli.command(epilog=DEMO_EXAMPLES)(demo)
cli.command(epilog=SIMULATE_EXAMPLES)(simulate)
cli.add_typer(db_cli, name="db")
cli.add_typer(token_cli, name="token")
cli.add_typer(rate_cli, name="rate")
cli.add_typer(scenario_cli, name="scenario")
cli.add_typer(reconcile_cli, name="reconcile")
cli.add_typer(budget_cli, name="budget")
reflow_help(cli)


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)
