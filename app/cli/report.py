"""`gpucost report` and `gpucost models`: a model's training cost by phase, in the layout of
the DeepSeek-V3 report's table, and the models there are to ask for."""

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from app.cli.common import examples, fail, in_transaction, load_settings
from app.cli.scenarios import print_scenarios
from app.core.errors import nearest
from app.core.labels import IDLE, UNATTRIBUTED
from app.core.units import micro_from_usd
from app.costs.model_cost import model_cost
from app.costs.report_table import figure_rows, rate_note, render_csv, render_markdown, table_rows
from app.costs.schemas import ModelCost
from app.jobs.service import models_with_usage
from app.scenarios.reads import scenario_prices

REPORT_EXAMPLES = examples(
    "gpucost report deepseek-v3 --rate-note",
    "gpucost report deepseek-v3 --format csv",
    "gpucost report deepseek-v3 --scenario booked --scenario rental-2usd --scenario owned-tco",
)
MODELS_EXAMPLES = examples("gpucost models")


def report(
    model: Annotated[
        str, typer.Argument(help="The model, as jobs are labelled with it (any letter case).")
    ],
    output: Annotated[
        str, typer.Option("--format", help="table, json, csv (exact figures) or markdown.")
    ] = "table",
    note: Annotated[bool, typer.Option("--rate-note", help="Say which prices were used.")] = False,
    scenarios: Annotated[
        list[str] | None,
        typer.Option(
            "--scenario",
            help="Price under this scenario (gpucost scenario list), never the books; "
            "repeat to compare them side by side (a USD row each); 'booked' is the books.",
        ),
    ] = None,
) -> None:
    """A model's training cost by phase, in the layout of the DeepSeek-V3 report's table."""
    if output not in ("table", "json", "csv", "markdown"):
        fail(f"--format must be table, json, csv or markdown, not '{output}'")
    settings = load_settings()

    asked: list[str | None] = [*scenarios] if scenarios else [None]  # None: the books

    def read(session: Session) -> list[ModelCost]:
        known = _known_model(models_with_usage(session), model)
        return [
            model_cost(
                session,
                model=known,
                start=None,
                end=None,
                cluster=None,
                default_micro_usd=micro_from_usd(settings.default_rate_usd),
                scenario=scenario_prices(session, name),
            )
            for name in asked
        ]

    costs = in_transaction(read)
    if scenarios:
        print_scenarios(costs, output=output, note=note)
        return
    [cost] = costs
    if output == "json":
        typer.echo(cost.model_dump_json(indent=2))
        return
    if output == "csv":
        typer.echo(render_csv(figure_rows(cost)), nl=False)
        return
    rows = table_rows(cost)
    if output == "markdown":
        typer.echo(render_markdown(rows))
    else:
        table = Table(*rows[0], title=f"{cost.model} training costs")
        for row in rows[1:]:
            table.add_row(*row)
        Console().print(table)
    if note:
        typer.echo(rate_note(cost))


def _known_model(known: list[str], asked: str) -> str:
    """The model as stored: `asked` itself, or the one model it names in another letter case;
    else one line that names the nearest."""
    if asked in known or asked in (IDLE, UNATTRIBUTED):
        return asked  # the pseudo-models are no job's label: model_cost knows them
    same = [model for model in known if model.casefold() == asked.casefold()]
    if len(same) == 1:
        return same[0]
    if same:
        fail(f"model '{asked}' is ambiguous: {', '.join(same)} differ only in letter case")
    hint = nearest(asked, known)
    if hint:
        fail(f"no usage recorded for model '{asked}'; did you mean {', '.join(hint)}?")
    fail(f"no usage recorded for model '{asked}' (gpucost models lists those with usage)")


def models() -> None:
    """The models that jobs with usage are labelled with, one a line."""
    for model in in_transaction(models_with_usage):
        typer.echo(model)
