"""Finance files from the command line: the FOCUS export and the cost summary."""

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

from app.cli.common import database, examples, fail, load_settings
from app.core.calendar import month_bounds, parse_month
from app.core.errors import AppError
from app.exports.service import check_bounds, csv_chunks, parquet_chunks

EXPORT_EXAMPLES = examples(
    "gpucost export focus --month 2025-01 -o focus-2025-01.csv",
    "gpucost export focus --month 2025-01 --granularity hour --format parquet "
    "-o focus-2025-01.parquet",
    "gpucost export costs --month 2025-01 > costs-2025-01.csv",
)


def export(
    kind: Annotated[str, typer.Argument(help="focus or costs.")],
    month: Annotated[str, typer.Option(help="The billing month, e.g. 2025-01.")],
    granularity: Annotated[str, typer.Option(help="focus only: hour, day or month.")] = "day",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write.")] = None,
    file_format: Annotated[
        str, typer.Option("--format", help="csv, or parquet (focus only, with -o).")
    ] = "csv",
) -> None:
    """Write a month's FOCUS 1.2 export (CSV or Parquet) or cost summary (CSV); to stdout
    without -o."""
    if kind not in ("focus", "costs"):
        fail(f"export what? 'focus' or 'costs', not '{kind}'")
    if granularity not in ("hour", "day", "month"):
        fail(f"--granularity must be hour, day or month, not '{granularity}'")
    if file_format not in ("csv", "parquet"):
        fail(f"--format must be csv or parquet, not '{file_format}'")
    if file_format == "parquet" and (kind != "focus" or output is None):
        fail("--format parquet is for the focus export, written to a file (-o FILE)")
    settings = load_settings()
    try:
        first = parse_month(month)
    except AppError as exc:
        fail(exc.message)
    start, end = month_bounds(first)
    step = granularity if kind == "focus" else "month"
    check_bounds(start, end, step)
    with database(settings) as db, db.read() as session:
        if file_format == "parquet" and output is not None:  # (parquet without -o: refused)
            chunks: Iterator[str | bytes] = parquet_chunks(
                session, start=start, end=end, granularity=granularity, settings=settings
            )
            _write_with_progress(chunks, output)
            return
        text = csv_chunks(
            session, kind=kind, start=start, end=end, granularity=granularity, settings=settings
        )
        if output is None:
            for chunk in text:
                sys.stdout.write(chunk)
            return
        _write_with_progress(text, output)


def _write_with_progress(chunks: Iterator[str] | Iterator[str | bytes], output: Path) -> None:
    """Write `chunks` to `output`. A regular file (or none yet) is written beside itself and
    renamed into place once whole, keeping its mode, so that a failure (a database error,
    Ctrl-C) leaves no partial export and any earlier file as it was; a symbolic link is
    followed; anything else (a device, a pipe, /dev/stdout) is written to directly."""
    if output.is_dir():
        fail(f"-o {output} is a directory: give a file name")
    if output.exists() and not output.is_file():
        written = _guarded(lambda: _write_chunks(chunks, output, shown=output), output)
    else:
        target = output.resolve()
        if not target.parent.is_dir():
            fail(f"cannot write {output}: there is no directory {target.parent}")
        written = _guarded(lambda: _replace(chunks, target, shown=output), output)
    typer.echo(f"wrote {output} ({written:,} bytes)", err=True)


def _guarded(write: Callable[[], int], output: Path) -> int:
    """`write`'s result; a file system error is one line naming `output`."""
    try:
        return write()
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")


def _replace(chunks: Iterator[str] | Iterator[str | bytes], target: Path, *, shown: Path) -> int:
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    partial = Path(name)
    try:
        written = _write_chunks(chunks, partial, shown=shown)
        partial.chmod(target.stat().st_mode & 0o7777 if target.exists() else _new_file_mode())
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return written


def _new_file_mode() -> int:
    """The mode `open` gives a new file: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_chunks(chunks: Iterator[str] | Iterator[str | bytes], path: Path, *, shown: Path) -> int:
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[size]}"),
    )
    with path.open("wb") as file, Progress(*columns, transient=True) as progress:
        task = progress.add_task(f"writing {shown}", total=None, size="0 B")
        written = 0
        for chunk in chunks:
            data = chunk.encode("utf-8") if isinstance(chunk, str) else chunk
            file.write(data)
            written += len(data)
            progress.update(task, size=f"{written / 1e6:.1f} MB")
    return written
