"""Export files from billing's lines (`app.billing.service.export_lines`, which says which
lines a range holds): the FOCUS rows as CSV or Parquet, and the cost summary as CSV."""

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from app.billing.lines import Line
from app.billing.service import export_lines
from app.core.config import Settings
from app.core.errors import InvalidInput
from app.core.timestamps import check_whole_hour
from app.core.units import micro_from_usd
from app.exports import _focus as focus
from app.exports._summary import SUMMARY_COLUMNS, cost_rows
from app.exports.csvout import cell, record, stream_csv, text

# How long an export's range may be at each granularity: a bound on the work one request can
# ask for (a year of hourly rows of a 2,048-GPU fleet is over a million rows).
MAX_RANGE_DAYS = {"hour": 400, "day": 4000, "month": None}


def check_bounds(start: datetime, end: datetime, granularity: str) -> None:
    """Whole charge periods only: `from` and `to` on hours, days or months as asked, at most
    `MAX_RANGE_DAYS` apart."""
    if end <= start:
        raise InvalidInput("to", "must be after from")
    days = MAX_RANGE_DAYS[granularity]
    if days is not None and end - start > timedelta(days=days):
        raise InvalidInput("to", f"at most {days} days after from at {granularity} granularity")
    for name, moment in (("from", start), ("to", end)):
        check_whole_hour(name, moment)
        if granularity in ("day", "month") and moment.hour != 0:
            raise InvalidInput(name, f"must start a UTC day for {granularity} granularity")
        if granularity == "month" and moment.day != 1:
            raise InvalidInput(name, "must start a UTC month for month granularity")


def _lines(
    session: Session, *, start: datetime, end: datetime, granularity: str, settings: Settings
) -> Iterator[tuple[str, Line]]:
    return export_lines(
        session,
        start=start,
        end=end,
        granularity=granularity,
        default_micro_usd=micro_from_usd(settings.default_rate_usd),
    )


# The CSV's fields: text neutralised against spreadsheet formulas and escaped, JSON escaped.
CSV_FIELDS = focus.Writing(text=text, json=cell, null="")


def _focus_rows(
    session: Session,
    *,
    start: datetime,
    end: datetime,
    granularity: str,
    settings: Settings,
    writing: focus.Writing,
) -> Iterator[list[Any]]:
    lines = _lines(session, start=start, end=end, granularity=granularity, settings=settings)
    return focus.focus_rows(lines, granularity=granularity, settings=settings, writing=writing)


def csv_chunks(
    session: Session,
    *,
    kind: str,
    start: datetime,
    end: datetime,
    granularity: str,
    settings: Settings,
) -> Iterator[str]:
    """The text of the FOCUS export (`focus`) or of the cost summary (`costs`, by month),
    in chunks, read from `session` as the caller takes them."""
    if kind == "focus":
        rows = _focus_rows(
            session,
            start=start,
            end=end,
            granularity=granularity,
            settings=settings,
            writing=CSV_FIELDS,
        )
        return stream_csv(focus.COLUMNS, (record(row) for row in rows))
    lines = _lines(session, start=start, end=end, granularity="month", settings=settings)
    return stream_csv(SUMMARY_COLUMNS, cost_rows(lines))


def parquet_chunks(
    session: Session, *, start: datetime, end: datetime, granularity: str, settings: Settings
) -> Iterator[bytes]:
    """The FOCUS export as a Parquet file, a row group at a time, read from `session` as the
    caller takes it."""
    from app.exports._parquet import stream_parquet  # pyarrow: loaded by the first Parquet export

    rows = _focus_rows(
        session,
        start=start,
        end=end,
        granularity=granularity,
        settings=settings,
        writing=focus.AS_VALUES,
    )
    return stream_parquet(focus.FIELD_TYPES, rows)
