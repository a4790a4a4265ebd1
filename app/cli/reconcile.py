"""`gpucost reconcile slurm`: measured GPU time beside Slurm's accounting, job by job."""

import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.cli.common import database, examples, fail, load_settings
from app.core.clock import utc_now
from app.core.errors import AppError
from app.core.timestamps import utc_instant
from app.core.units import plain
from app.exports.csvout import cell, record, text
from app.reconcile import service
from app.reconcile.sacct import SACCT_COMMAND, parse_sacct, run_sacct
from app.reconcile.schemas import ReconcileLine

reconcile_cli = typer.Typer(
    help="Compare measured GPU time with a scheduler's accounting.",
    epilog=examples("gpucost reconcile slurm --cluster hf-h800 --from 2025-01-01"),
    no_args_is_help=True,
)
# Exit status when some job's figures differ beyond the tolerance (errors exit 1).
DIFFERENCES_EXIT = 3
_COLUMNS = (
    "job", "name", "state", "gpus", "slurm_gpu_seconds", "gpucost_gpu_seconds",
    "busy_gpu_seconds", "difference", "verdict", "fails",
)  # fmt: skip


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _instant(value: str, flag: str) -> datetime:
    try:
        return utc_instant(datetime.fromisoformat(value))
    except ValueError as exc:
        fail(f"{flag} {value!r}: {exc if 'must be' in str(exc) else 'not a date or time'}")


def _figure(value: object) -> str:
    return "" if value is None else plain(value)  # type: ignore[arg-type]


def _cells(line: ReconcileLine) -> list[str]:
    return [
        line.job_id,
        line.name or "",
        line.state or "",
        "" if line.gpus is None else str(line.gpus),
        _figure(line.slurm_gpu_seconds),
        _figure(line.gpucost_gpu_seconds),
        _figure(line.busy_gpu_seconds),
        _figure(line.difference),
        line.verdict.value,
        "yes" if line.fails else "no",
    ]


def _print(lines: list[ReconcileLine], output: Format) -> None:
    if output is Format.json:
        typer.echo("[" + ",\n".join(line.model_dump_json() for line in lines) + "]")
    elif output is Format.csv:
        sys.stdout.write(record(cell(name) for name in _COLUMNS))
        for line in lines:
            cells = _cells(line)
            sys.stdout.write(record([cell(cells[0]), text(cells[1]), *map(cell, cells[2:])]))
    else:
        table = Table(
            "job", "name", "state", "GPUs", "Slurm", "gpucost", "busy", "difference", "verdict",
            "fails",
            title="GPU-seconds: Slurm's allocation, gpucost's measurement",
        )  # fmt: skip
        for line in lines:
            table.add_row(*_cells(line))
        console = Console()
        if not console.is_terminal:
            console.width = 160  # a file or a pipe gets every column in full
        console.print(table)


@reconcile_cli.command(
    "slurm",
    epilog=examples(
        "gpucost reconcile slurm --cluster hf-h800 --from 2025-01-01",
        "gpucost reconcile slurm --cluster hf-h800 --from 2025-01-01 --to 2025-02-01 --format csv",
        "gpucost reconcile slurm --cluster hf-h800 --from 2025-01-01 --sacct-file sacct.txt",
    )
    + f"\n\nA file for --sacct-file: {escape(SACCT_COMMAND)}",
)
def slurm(
    cluster: Annotated[str, typer.Option(help="The cluster, as its collectors report it.")],
    start: Annotated[
        str, typer.Option("--from", help="Jobs that ran from this UTC date or time on.")
    ],
    end: Annotated[
        str | None, typer.Option("--to", help="…and before this one (default: now).")
    ] = None,
    sacct_file: Annotated[
        Path | None,
        typer.Option(help="Read sacct's output from this file instead of running sacct."),
    ] = None,
    tolerance: Annotated[
        int,
        typer.Option(
            min=0, help="Seconds per GPU a job's figures may differ (about one sample interval)."
        ),
    ] = 15,
    settle: Annotated[
        int,
        typer.Option(min=0, help="Seconds after a job ends before its last report is due."),
    ] = 300,
    output: Annotated[Format, typer.Option("--format", help="table, csv or json.")] = Format.table,
) -> None:
    """Per job: Slurm's allocated GPU-seconds, the GPU-seconds measured, and why they differ.

    Exits 3 when a job's figures differ beyond the tolerance and nothing explains it (a job
    still running, a report not yet due, the period's edge); 1 on an error."""
    now = utc_now()
    rules = service.Rules(
        start=_instant(start, "--from"),
        end=_instant(end, "--to") if end else now,
        now=now,
        tolerance_s=tolerance,
        settle_s=settle,
    )
    if rules.end <= rules.start:
        fail("--to must be after --from")
    settings = load_settings()
    try:
        if sacct_file is None:
            raw = run_sacct(start=rules.start, end=rules.end)
        else:
            raw = sacct_file.read_text(encoding="utf-8", errors="replace")
        jobs = parse_sacct(text=raw)
        with (
            database(settings) as db,
            db.read() as session,
        ):
            lines = service.reconcile_slurm(session, cluster=cluster, slurm=jobs, rules=rules)
    except AppError as exc:
        fail(exc.message)
    except OSError as exc:
        fail(f"cannot read the sacct file {sacct_file}: {exc.strerror}")
    _print(lines, output)
    failing = sum(line.fails for line in lines)
    typer.echo(
        f"{len(lines)} jobs with GPU time, {failing} beyond tolerance ({tolerance} s per GPU)",
        err=True,
    )
    if failing:
        raise typer.Exit(DIFFERENCES_EXIT)
