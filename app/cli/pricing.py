"""Prices and what they make of usage: rate cards and the per-model cost table."""

import difflib
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from app.cli.common import CLI_ACTOR, fail, in_transaction, load_settings
from app.core.clock import utc_now
from app.core.errors import validation_body
from app.core.units import micro_from_usd, plain
from app.costs.model import model_cost
from app.costs.query import IDLE, UNATTRIBUTED
from app.costs.schemas import ModelCost
from app.costs.table import figure_rows, rate_note, render_csv, render_markdown, table_rows
from app.jobs.service import models_with_usage
from app.pricing.schemas import RateCreate
from app.pricing.service import list_rates, set_rate

rate_cli = typer.Typer(help="GPU-hour prices (rate cards).", no_args_is_help=True)


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


def report(
    model: Annotated[
        str, typer.Argument(help="The model, as jobs are labelled with it (any letter case).")
    ],
    output: Annotated[
        str, typer.Option("--format", help="table, json, csv (exact figures) or markdown.")
    ] = "table",
    note: Annotated[bool, typer.Option("--rate-note", help="Say which prices were used.")] = False,
) -> None:
    """A model's training cost by phase, in the layout of the DeepSeek-V3 report's table.

    Example: gpucost report deepseek-v3 --rate-note
    """
    if output not in ("table", "json", "csv", "markdown"):
        fail(f"--format must be table, json, csv or markdown, not '{output}'")
    settings = load_settings()

    def read(session: Session) -> ModelCost:
        return model_cost(
            session,
            model=_known_model(models_with_usage(session), model),
            start=None,
            end=None,
            cluster=None,
            default_micro_usd=micro_from_usd(settings.default_rate_usd),
        )

    cost = in_transaction(read)
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
    near = difflib.get_close_matches(asked.casefold(), [m.casefold() for m in known], n=3)
    hint = [model for model in known if model.casefold() in near]
    if hint:
        fail(f"no usage recorded for model '{asked}'; did you mean {', '.join(hint)}?")
    fail(f"no usage recorded for model '{asked}' (gpucost models lists those with usage)")


def models() -> None:
    """The models that jobs with usage are labelled with, one a line.

    Example: gpucost models
    """
    for model in in_transaction(models_with_usage):
        typer.echo(model)
