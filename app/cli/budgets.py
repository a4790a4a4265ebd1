"""`gpucost budget`: set, list and delete budgets from the command line."""

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from app.budgets.schemas import BudgetRead, BudgetSet
from app.budgets.service import delete_budget, list_budgets, set_budget
from app.cli.common import CLI_ACTOR, examples, fail, in_transaction, load_settings
from app.core.clock import utc_now
from app.core.errors import InvalidInput
from app.core.units import micro_from_usd, plain

budget_cli = typer.Typer(
    help="Budgets: limits on what a team, model or cluster spends, per month or over a range.",
    epilog=examples(
        "gpucost budget set nlp-monthly --team nlp --usd 1000",
        "gpucost budget set v3-q1 --model deepseek-v3 --gpu-hours 500 "
        "--from 2025-01-01T00:00:00Z --to 2025-04-01T00:00:00Z",
        "gpucost budget list",
        "gpucost budget delete nlp-monthly",
    ),
    no_args_is_help=True,
)
# The API's field names, as `gpucost budget set` spells them.
FLAGS = {
    "value": "--team/--model/--cluster",
    "amount": "--usd/--gpu-hours",
    "starts_at": "--from",
    "ends_at": "--to",
}
UNIT_NAMES = {"usd": "USD", "gpu_hours": "GPU-hours"}


def _one(flags: dict[str, str | None], what: str) -> tuple[str, str]:
    given = [(name, value) for name, value in flags.items() if value is not None]
    if len(given) != 1:
        fail(f"give exactly one of {', '.join(flags)} ({what})")
    return given[0]


@budget_cli.command(
    "set",
    epilog=examples(
        "gpucost budget set nlp-monthly --team nlp --usd 1000",
        "gpucost budget set h800-q1 --cluster hf-h800 --gpu-hours 500000 "
        "--from 2025-01-01T00:00:00Z --to 2025-04-01T00:00:00Z",
    ),
)
def budget_set(
    name: Annotated[str, typer.Argument(help="The budget's name, e.g. nlp-monthly.")],
    team: Annotated[str | None, typer.Option(help="Limit this team's jobs.")] = None,
    model: Annotated[str | None, typer.Option(help="Limit this model's jobs.")] = None,
    cluster: Annotated[str | None, typer.Option(help="Limit the jobs on this cluster.")] = None,
    usd: Annotated[
        str | None, typer.Option(help="A limit in USD (the GPU-hour cost, as billed).")
    ] = None,
    gpu_hours: Annotated[str | None, typer.Option(help="A limit in GPU-hours.")] = None,
    month: Annotated[bool, typer.Option(help="For each UTC month (the default).")] = False,
    starts_at: Annotated[
        str | None, typer.Option("--from", help="A range's first hour, e.g. 2025-01-01T00:00:00Z.")
    ] = None,
    ends_at: Annotated[
        str | None, typer.Option("--to", help="The hour a range ends (exclusive).")
    ] = None,
) -> None:
    """Create a budget, or replace the one of that name whole."""
    scope, value = _one({"--team": team, "--model": model, "--cluster": cluster}, "the scope")
    unit, amount = _one({"--usd": usd, "--gpu-hours": gpu_hours}, "the limit")
    ranged = starts_at is not None or ends_at is not None
    if month and ranged:
        fail("--month covers each UTC month: give it without --from and --to")
    given: dict[str, Any] = {
        "scope": scope.removeprefix("--"),
        "value": value,
        "period": "range" if ranged else "month",
        "starts_at": starts_at,
        "ends_at": ends_at,
        "unit": unit.removeprefix("--").replace("-", "_"),
        "amount": amount,
    }
    try:
        body = BudgetSet(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        reason = str(first["msg"]).removeprefix("Value error, ")
        fail(f"{FLAGS.get(field, field)} {given.get(field)!r}: {reason}")
    settings = load_settings()

    def store(session: Session) -> tuple[BudgetRead, bool]:
        default = micro_from_usd(settings.default_rate_usd)
        try:
            return set_budget(
                session,
                name=name,
                body=body,
                actor=CLI_ACTOR,
                now=utc_now(),
                default_micro_usd=default,
            )
        except InvalidInput as exc:  # the API's field names, as this command spells them
            reason = exc.reason
            for field, flag in FLAGS.items():
                reason = reason.replace(field, flag)
            raise InvalidInput(FLAGS.get(exc.field, exc.field), reason) from exc

    budget, created = in_transaction(store, writes=True)
    typer.echo(
        f"{'created' if created else 'replaced'}: {budget.name}, {budget.scope} {budget.value}, "
        f"{plain(budget.amount)} {UNIT_NAMES[budget.unit]} {_period(budget)}; "
        f"{plain(budget.spent)} spent ({plain(budget.percent_used)} %), {budget.state}"
    )


def _period(budget: BudgetRead) -> str:
    if budget.period == "month":
        return "per UTC month"
    return f"from {_hour(budget.window_start)} to {_hour(budget.window_end)}"


def _hour(instant: datetime) -> str:
    return f"{instant.astimezone(UTC):%Y-%m-%d %H:%M}"


@budget_cli.command("list", epilog=examples("gpucost budget list"))
def budget_list() -> None:
    """List budgets with what each spent in its current window, and its state.

    Burn is per day over the last 24 complete UTC hours; the forecast is when the limit is
    reached at that burn (UTC), shown only within the window.
    """
    settings = load_settings()

    def read(session: Session) -> list[BudgetRead]:
        default = micro_from_usd(settings.default_rate_usd)
        return list_budgets(session, now=utc_now(), default_micro_usd=default)

    table = Table(
        "name", "scope", "unit", "window", "limit", "spent", "used %", "burn/day", "forecast",
        "state",
    )  # fmt: skip
    for column in table.columns[3:]:
        column.no_wrap = True
    for budget in in_transaction(read):
        crossing = budget.forecast_crossing
        table.add_row(
            budget.name,
            f"{budget.scope} {budget.value}",
            UNIT_NAMES[budget.unit],
            f"{_hour(budget.window_start)} to {_hour(budget.window_end)}",
            plain(budget.amount),
            plain(budget.spent),
            plain(budget.percent_used),
            plain(budget.burn_per_day_24h),
            f"{crossing.astimezone(UTC):%Y-%m-%d %H:%M:%S}" if crossing else "-",
            budget.state,
        )
    console = Console()
    if not console.is_terminal:
        console.width = 200  # a file or a pipe gets every column in full
    console.print(table)


@budget_cli.command("delete", epilog=examples("gpucost budget delete nlp-monthly"))
def budget_delete(name: Annotated[str, typer.Argument(help="The budget's name.")]) -> None:
    """Delete a budget (the audit log keeps what it was)."""
    in_transaction(
        lambda session: delete_budget(session, name=name, actor=CLI_ACTOR, now=utc_now()),
        writes=True,
    )
    typer.echo(f"deleted: {name}")
