"""`gpucost rate`: GPU-hour prices (rate cards), set and listed."""

from datetime import UTC, datetime
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from app.cli.common import CLI_ACTOR, examples, fail, in_transaction
from app.core.clock import utc_now
from app.core.units import plain
from app.gpus.service import reported_gpu_models
from app.pricing.schemas import RateCreate, RateRead
from app.pricing.service import list_rates, set_rate

rate_cli = typer.Typer(
    help="GPU-hour prices (rate cards).",
    epilog=examples(
        "gpucost rate set --gpu-model 'NVIDIA H800' --usd-per-gpu-hour 2.00 "
        "--from 2025-01-01T00:00:00Z",
        "gpucost rate list",
    ),
    no_args_is_help=True,
)


# GPU models named at most in the line refusing one that no GPU has reported.
MODELS_LISTED = 8
# The API's field names, as `gpucost rate set` spells them.
RATE_FLAGS = {
    "gpu_model": "--gpu-model",
    "usd_per_gpu_hour": "--usd-per-gpu-hour",
    "effective_from": "--from",
    "cluster": "--cluster",
}


@rate_cli.command(
    "set",
    epilog=examples(
        "gpucost rate set --gpu-model 'NVIDIA H800' --usd-per-gpu-hour 2.00 "
        "--from 2025-01-01T00:00:00Z",
        "gpucost rate set --gpu-model 'NVIDIA H800' --usd-per-gpu-hour 1.80 "
        "--from 2025-03-01T00:00:00Z --cluster hf-h800",
        "gpucost rate set --gpu-model 'NVIDIA B200' --usd-per-gpu-hour 4.50 "
        "--from 2026-01-01T00:00:00Z --new-gpu-model",
    ),
)
def rate_set(
    gpu_model: Annotated[
        str,
        typer.Option(
            help="As NVML names it, e.g. 'NVIDIA H800': a model some GPU has reported "
            "(see --new-gpu-model)."
        ),
    ],
    usd_per_gpu_hour: Annotated[str, typer.Option(help="USD per GPU-hour, e.g. 2.00.")],
    effective_from: Annotated[
        str, typer.Option("--from", help="A whole UTC hour, e.g. 2025-01-01T00:00:00Z.")
    ],
    cluster: Annotated[str | None, typer.Option(help="Only this cluster.")] = None,
    new_gpu_model: Annotated[
        bool,
        typer.Option(
            help="Price a GPU model no GPU has reported yet (hardware on its way); without "
            "it such a model is refused, as it is most likely a misspelling."
        ),
    ] = False,
) -> None:
    """Price a GPU model from an hour on (a past hour re-prices the past).

    The price holds until the next price set for the same GPU model (and cluster).
    """
    try:
        body = RateCreate(
            gpu_model=gpu_model,
            usd_per_gpu_hour=usd_per_gpu_hour,  # type: ignore[arg-type]
            effective_from=effective_from,  # type: ignore[arg-type]
            cluster=cluster,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        reason = str(first["msg"]).removeprefix("Value error, ")
        given = {
            "gpu_model": gpu_model,
            "usd_per_gpu_hour": usd_per_gpu_hour,
            "effective_from": effective_from,
            "cluster": cluster,
        }.get(field)
        fail(f"{RATE_FLAGS.get(field, field)} {given!r}: {reason}")

    def store(session: Session) -> tuple[RateRead, bool]:
        if not new_gpu_model:
            _check_reported(reported_gpu_models(session), body.gpu_model)
        return set_rate(session, body=body, actor=CLI_ACTOR, now=utc_now())

    rate, created = in_transaction(store, writes=True)
    verb = "set" if created else "restated"
    scope = f" on {rate.cluster}" if rate.cluster else ""
    typer.echo(
        f"{verb}: {rate.gpu_model}{scope} at ${plain(rate.usd_per_gpu_hour)} per GPU-hour "
        f"from {rate.effective_from.isoformat()}"
    )


def _check_reported(reported: list[str], asked: str) -> None:
    """Nothing if some GPU has reported `asked`; else one line, naming the model meant when
    `asked` is a reported one in another letter case or its end ('H800': 'NVIDIA H800')."""
    if asked in reported:
        return
    folded = asked.casefold()
    meant = [m for m in reported if m.casefold() == folded or m.casefold().endswith(folded)]
    if meant:
        fail(
            f"no GPU has reported the model '{asked}'; "
            f"did you mean {' or '.join(repr(m) for m in meant)}?"
        )
    if reported:
        listed = ", ".join(reported[:MODELS_LISTED]) + (
            ", …" if len(reported) > MODELS_LISTED else ""
        )
        known = f"GPUs have reported {listed}"
    else:
        known = "no collector has reported any GPU yet"
    fail(
        f"no GPU has reported the model '{asked}' ({known}); to price it before its GPUs "
        "report, add --new-gpu-model"
    )


@rate_cli.command("list", epilog=examples("gpucost rate list"))
def rate_list() -> None:
    """List GPU-hour prices with the span each is in force (UTC).

    A price is in force from its start until the next price's for the same GPU model and
    cluster; the newest is open-ended.
    """
    table = Table("gpu model", "cluster", "USD per GPU-hour", "from", "until")
    for column in table.columns[3:]:
        column.no_wrap = True  # a truncated date reads as another date
    for rate in in_transaction(list_rates):
        table.add_row(
            rate.gpu_model,
            rate.cluster or "(all)",
            plain(rate.usd_per_gpu_hour),
            _hour(rate.effective_from),
            _hour(rate.effective_to) if rate.effective_to else "(open)",
        )
    console = Console()
    if not console.is_terminal:
        console.width = 160  # a file or a pipe gets every column in full
    console.print(table)


def _hour(instant: datetime) -> str:
    return f"{instant.astimezone(UTC):%Y-%m-%d %H:%M}"
