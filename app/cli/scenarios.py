"""`gpucost scenario`: price scenarios, rate cards that price usage as if, never the books;
and `gpucost report --scenario`, a model's cost table under each scenario asked for."""

import re
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from app.cli.common import CLI_ACTOR, examples, fail, in_transaction
from app.core.clock import utc_now
from app.core.units import plain
from app.costs.report_table import (
    comparison_rows,
    figure_rows,
    rate_note,
    render_csv,
    render_markdown,
)
from app.costs.schemas import ModelCost
from app.scenarios.reads import BOOKED, list_scenarios
from app.scenarios.schemas import SCENARIO_NAME, ScenarioPriceCreate, ScenarioWrite
from app.scenarios.service import add_price, delete_scenario, set_scenario

scenario_cli = typer.Typer(
    help="Price scenarios: rate cards that price usage as if, never the books.",
    epilog=examples(
        "gpucost scenario set rental-2usd --description 'H800 rented at $2, as the V3 paper'",
        "gpucost scenario price rental-2usd --gpu-model 'NVIDIA H800' --from 2024-01-01T00:00Z "
        "--usd-per-gpu-hour 2",
        "gpucost scenario list",
    ),
    no_args_is_help=True,
)
# The API's field names, as `gpucost scenario price` spells them.
PRICE_FLAGS = {
    "gpu_model": "--gpu-model",
    "effective_from": "--from",
    "usd_per_gpu_hour": "--usd-per-gpu-hour",
    "usd_per_kwh": "--usd-per-kwh",
    "purchase_usd": "--purchase-usd",
    "amortisation_months": "--months",
    "hosting_usd_per_month": "--hosting-usd-per-month",
    "electricity_usd_per_kwh": "--electricity-usd-per-kwh",
    "pue": "--pue",
}
Name = Annotated[str, typer.Argument(help="Letters, digits, '.', '_' and '-', up to 64.")]


def _validated(model: Any, given: dict[str, Any], **fields: Any) -> Any:
    """`model(**fields)`, or one line naming the flag at fault and the value given for it."""
    try:
        return model(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][-1]) if first["loc"] else ""
        reason = str(first["msg"]).removeprefix("Value error, ")
        fail(f"{PRICE_FLAGS.get(field, field)} {given.get(field)!r}: {reason}")


def _checked_name(name: str) -> str:
    if not re.fullmatch(SCENARIO_NAME, name):
        fail(f"scenario name {name!r}: letters, digits, '.', '_' and '-' (a letter or digit "
             "first), up to 64")  # fmt: skip
    return name


@scenario_cli.command(
    "set", epilog=examples("gpucost scenario set owned-tco --description 'our own H800s'")
)
def scenario_set(
    name: Name,
    description: Annotated[str, typer.Option(help="What the scenario assumes.")] = "",
) -> None:
    """Create a scenario, or change its description."""
    body = _validated(ScenarioWrite, {"description": description}, description=description)
    name = _checked_name(name)
    scenario, created = in_transaction(
        lambda session: set_scenario(
            session, name=name, description=body.description, actor=CLI_ACTOR, now=utc_now()
        ),
        writes=True,
    )
    typer.echo(f"{'created' if created else 'set'}: scenario {scenario.name}")


@scenario_cli.command(
    "price",
    epilog=examples(
        "gpucost scenario price rental-2usd --gpu-model 'NVIDIA H800' --from 2024-01-01T00:00Z "
        "--usd-per-gpu-hour 2",
        "gpucost scenario price owned-tco --from 2024-01-01T00:00Z --purchase-usd 30000 "
        "--months 48 --hosting-usd-per-month 150 --electricity-usd-per-kwh 0.08 --pue 1.3",
    ),
)
def scenario_price(
    name: Name,
    effective_from: Annotated[
        str, typer.Option("--from", help="A whole UTC hour, e.g. 2024-01-01T00:00Z.")
    ],
    gpu_model: Annotated[
        str | None, typer.Option(help="As NVML names it; none: every GPU model without its own.")
    ] = None,
    usd_per_gpu_hour: Annotated[str | None, typer.Option(help="USD per GPU-hour.")] = None,
    usd_per_kwh: Annotated[
        str | None, typer.Option(help="USD per kWh measured; none: as the books price it.")
    ] = None,
    purchase_usd: Annotated[str | None, typer.Option(help="TCO: a GPU's price.")] = None,
    months: Annotated[str | None, typer.Option(help="TCO: months to amortise it over.")] = None,
    hosting_usd_per_month: Annotated[
        str | None, typer.Option(help="TCO: hosting a GPU, per month.")
    ] = None,
    electricity_usd_per_kwh: Annotated[
        str | None, typer.Option(help="TCO: the facility's electricity price.")
    ] = None,
    pue: Annotated[
        str | None, typer.Option(help="TCO: power usage effectiveness, e.g. 1.3.")
    ] = None,
) -> None:
    """Price a GPU model in a scenario from an hour on: a price per GPU-hour (and kWh), or
    the cost of owning the GPU (TCO), from which both are derived (see docs/api.md)."""
    given: dict[str, Any] = {
        "gpu_model": gpu_model,
        "effective_from": effective_from,
        "usd_per_gpu_hour": usd_per_gpu_hour,
        "usd_per_kwh": usd_per_kwh,
        "purchase_usd": purchase_usd,
        "amortisation_months": months,
        "hosting_usd_per_month": hosting_usd_per_month,
        "electricity_usd_per_kwh": electricity_usd_per_kwh,
        "pue": pue,
    }
    tco = {k: v for k, v in list(given.items())[4:] if v is not None}
    if tco and (usd_per_gpu_hour is not None or usd_per_kwh is not None):
        fail("give --usd-per-gpu-hour (and --usd-per-kwh) or the TCO flags, not both")
    if tco:
        missing = [PRICE_FLAGS[k] for k in list(given)[4:] if given[k] is None]
        if missing:
            fail(f"a TCO price needs {', '.join(missing)} too")
    elif usd_per_gpu_hour is None:
        fail("give --usd-per-gpu-hour, or the TCO flags (--purchase-usd, --months, ...)")
    name = _checked_name(name)
    fields = {k: v for k, v in list(given.items())[:4] if v is not None}
    body = _validated(ScenarioPriceCreate, given, **fields, tco=tco or None)
    price, created = in_transaction(
        lambda session: add_price(session, name=name, body=body, actor=CLI_ACTOR, now=utc_now()),
        writes=True,
    )
    energy = "" if price.usd_per_kwh is None else f" and ${plain(price.usd_per_kwh)} per kWh"
    typer.echo(
        f"{'set' if created else 'unchanged'}: {name}: {price.gpu_model or 'every GPU model'} "
        f"at ${plain(price.usd_per_gpu_hour)} per GPU-hour{energy} "
        f"from {price.effective_from.isoformat()}" + (" (from TCO)" if price.tco else "")
    )


@scenario_cli.command("list", epilog=examples("gpucost scenario list"))
def scenario_list() -> None:
    """List scenarios and their prices, with the span each is in force (UTC)."""
    table = Table("scenario", "gpu model", "basis", "USD per GPU-hour", "USD per kWh", "from",
                  "until")  # fmt: skip
    for scenario in in_transaction(list_scenarios):
        if not scenario.prices:
            table.add_row(scenario.name, "(no prices)", "", "", "", "", "")
        for price in scenario.prices:
            until = price.effective_to
            table.add_row(
                scenario.name,
                price.gpu_model or "(all others)",
                price.basis,
                plain(price.usd_per_gpu_hour),
                "(books)" if price.usd_per_kwh is None else plain(price.usd_per_kwh),
                f"{price.effective_from:%Y-%m-%d %H:%M}",
                f"{until:%Y-%m-%d %H:%M}" if until else "(open)",
            )
    console = Console()
    if not console.is_terminal:
        console.width = 160  # a file or a pipe gets every column in full
    console.print(table)


@scenario_cli.command("delete", epilog=examples("gpucost scenario delete rental-2usd"))
def scenario_delete(name: Name) -> None:
    """Remove a scenario and its prices (the books are never touched)."""
    prices = in_transaction(
        lambda session: delete_scenario(session, name=name, actor=CLI_ACTOR, now=utc_now()),
        writes=True,
    )
    typer.echo(f"deleted: scenario {name} and its {prices} price{'s' * (prices != 1)}")


def print_scenarios(costs: list[ModelCost], *, output: str, note: bool) -> None:
    """A model's cost table under each scenario side by side: a USD row per scenario
    (`booked`: the books); CSV with a scenario column, JSON as a list."""
    names = [cost.scenario or BOOKED for cost in costs]
    if output == "json":
        typer.echo("[" + ",\n".join(cost.model_dump_json(indent=2) for cost in costs) + "]")
        return
    if output == "csv":
        tables = [figure_rows(cost) for cost in costs]
        header = ["scenario", *tables[0][0]]
        body = [[name, *row] for name, rows in zip(names, tables, strict=True) for row in rows[1:]]
        typer.echo(render_csv([header, *body]), nl=False)
        return
    rows = comparison_rows(list(zip(names, costs, strict=True)))
    if output == "markdown":
        typer.echo(render_markdown(rows))
    else:
        table = Table(*rows[0], title=f"{costs[0].model} training costs by pricing")
        for row in rows[1:]:
            table.add_row(*row)
        Console().print(table)
    if note:
        for name, cost in zip(names, costs, strict=True):
            typer.echo(f"{name}: {rate_note(cost)}")
