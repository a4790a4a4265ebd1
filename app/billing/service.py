"""Which lines a range of charge periods holds: booked lines for closed months, live ones
for open months, and the corrections billed in the first open month; and what closing a
month books."""

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from app.billing._booked import booked_lines
from app.billing._corrections import pending_corrections
from app.billing.lines import KEY, Line, closed_months, live_lines, months_with_lines, plus
from app.core.calendar import (
    floor_day,
    floor_month,
    month_bounds,
    month_of,
    month_start,
    next_month,
)
from app.core.timestamps import EARLIEST_INSTANT

# Past any hour stored, even one stored before instants were range-checked.
FAR = datetime(9999, 1, 1, tzinfo=UTC)


def first_open_month(session: Session) -> str | None:
    """The month corrections are billed in: the one after the last closed month."""
    return _after_last(closed_months(session))


def _after_last(closed: list[str]) -> str | None:
    return next_month(closed[-1]) if closed else None


def export_lines(
    session: Session, *, start: datetime, end: datetime, granularity: str, default_micro_usd: int
) -> Iterator[tuple[str, Line]]:
    """(billing month, line) for charge periods in [start, end), month by month.

    A closed month gives what it booked, byte for byte as when it closed; the first open
    month also carries the corrections of closed months found since they closed.
    """
    closed = closed_months(session)
    first_open = _after_last(closed)
    billed_here = first_open if first_open and start <= month_start(first_open) < end else None
    span = months_with_lines(session, start=start, end=end, also=billed_here)
    if span is None:
        return
    month = max(month_of(start), span[0])
    while month <= span[1] and month_start(month) < end:
        month_from, month_to = month_bounds(month)
        lower, upper = max(start, month_from), min(end, month_to)
        bills_month = start <= month_from < end
        if month in closed:
            for kind in ("usage", "correction"):
                if kind == "correction" and not bills_month:
                    continue
                # Corrections booked in a month may point at any earlier hour.
                bounds = (lower, upper) if kind == "usage" else (EARLIEST_INSTANT, FAR)
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
        start = (floor_month if granularity == "month" else floor_day)(line.charge_start)
        key = (start, *(getattr(line, name) for name in KEY))
        seen = merged.get(key)
        if seen is None:
            merged[key] = replace(line, charge_start=start)
            continue
        merged[key] = plus(seen, line)
    return list(merged.values())


def lines_to_book(
    session: Session, *, month: str, default_micro_usd: int
) -> tuple[list[Line], list[Line]]:
    """What closing `month` books: its usage hour by hour, read live (current labels and
    prices), and the corrections of earlier closed months found since they closed."""
    start, end = month_bounds(month)
    lines = list(
        live_lines(
            session, start=start, end=end, granularity="hour", default_micro_usd=default_micro_usd
        )
    )
    return lines, pending_corrections(session, default_micro_usd=default_micro_usd)


def current_lines(session: Session, *, month: str, default_micro_usd: int) -> Iterator[Line]:
    """A month's usage as it reads now (current labels and prices), one line per month and
    key, whether or not the month is closed."""
    start, end = month_bounds(month)
    return live_lines(
        session, start=start, end=end, granularity="month", default_micro_usd=default_micro_usd
    )
