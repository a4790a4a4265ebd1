"""Which lines an export holds: booked lines for closed months, live ones for open months,
and the corrections billed in the first open month."""

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from app.core.calendar import month_of, month_start, next_month
from app.core.config import Settings
from app.core.errors import InvalidInput
from app.core.timestamps import check_whole_hour
from app.core.units import micro_from_usd
from app.exports import focus
from app.exports.booked import booked_lines
from app.exports.corrections import pending_corrections
from app.exports.csvout import cell, record, stream_csv, text
from app.exports.lines import KEY, Line, closed_months, live_lines, months_with_lines, plus
from app.exports.summary import SUMMARY_COLUMNS, cost_rows

# Corrections booked in a month may point at any earlier hour.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FAR = datetime(9999, 1, 1, tzinfo=UTC)


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


def export_lines(
    session: Session, *, start: datetime, end: datetime, granularity: str, default_micro_usd: int
) -> Iterator[tuple[str, Line]]:
    """(billing month, line) for charge periods in [start, end), month by month.

    A closed month gives what it booked, byte for byte as when it closed; the first open
    month also carries the corrections of closed months found since they closed.
    """
    closed = closed_months(session)
    first_open = next_month(closed[-1]) if closed else None
    billed_here = first_open if first_open and start <= month_start(first_open) < end else None
    span = months_with_lines(session, start=start, end=end, also=billed_here)
    if span is None:
        return
    month = max(month_of(start), span[0])
    while month <= span[1] and month_start(month) < end:
        lower, upper = max(start, month_start(month)), min(end, month_start(next_month(month)))
        bills_month = start <= month_start(month) < end
        if month in closed:
            for kind in ("usage", "correction"):
                if kind == "correction" and not bills_month:
                    continue
                bounds = (lower, upper) if kind == "usage" else (EPOCH, FAR)
                for line in booked_lines(
                    session,
                    month=month,
                    kind=kind,
                    start=bounds[0],
                    end=bounds[1],
                    granularity=granularity,
                ):
                    yield month, line
        else:
            for line in live_lines(
                session,
                start=lower,
                end=upper,
                granularity=granularity,
                default_micro_usd=default_micro_usd,
            ):
                yield month, line
            if month == first_open and bills_month:
                corrections = pending_corrections(session, default_micro_usd=default_micro_usd)
                for line in coarsen(corrections, granularity):
                    yield month, line
        month = next_month(month)


def coarsen(lines: list[Line], granularity: str) -> list[Line]:
    """Hourly lines summed into days or months, keeping every other key apart."""
    if granularity == "hour":
        return lines
    merged: dict[tuple[object, ...], Line] = {}
    for line in lines:
        start = line.charge_start.replace(hour=0)
        if granularity == "month":
            start = start.replace(day=1)
        key = (start, *(getattr(line, name) for name in KEY))
        seen = merged.get(key)
        if seen is None:
            merged[key] = replace(line, charge_start=start)
            continue
        merged[key] = plus(seen, line)
    return list(merged.values())


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
    from app.exports.parquet import stream_parquet  # pyarrow: loaded by the first Parquet export

    rows = _focus_rows(
        session,
        start=start,
        end=end,
        granularity=granularity,
        settings=settings,
        writing=focus.AS_VALUES,
    )
    return stream_parquet(focus.FIELD_TYPES, rows)
