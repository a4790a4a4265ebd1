"""Closing billing months: the month's lines are booked and never change afterwards.

The books start at the first month closed, which may not be later than the first month
with usage (so that no usage is left behind unbilled when they start). From then on months
close one after another, each the month after the last closed one; usage dated before the
books' start is outside the books. Closes take turns (a lock on PostgreSQL), so each checks
the order against every close committed before it; and the month's row is inserted unless
present, so its primary key decides too.
"""

from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from app.audit.service import record
from app.billing.lines import Line, closed_months
from app.billing.service import current_lines, first_open_month, lines_to_book
from app.core.calendar import month_bounds, month_of, next_month
from app.core.errors import Conflict
from app.core.sums import exact_sum
from app.core.unique import insert_unless_present, take_turns
from app.core.units import from_nano
from app.models import HourlyUsage, Period, PeriodLine
from app.periods.schemas import PeriodPage, PeriodRead, Totals


def books_start(session: Session) -> str | None:
    """The first closed month; before any, the first month with usage (None: neither)."""
    months = closed_months(session)
    return months[0] if months else _first_month_with_usage(session)


def _check_order(session: Session, month: str) -> None:
    closed = closed_months(session)
    if month in closed:
        raise Conflict(f"{month} is already closed")
    if not closed:
        first = _first_month_with_usage(session)
        if first is not None and first < month:
            raise Conflict(
                f"months close in order: close {first} before {month} "
                "(the books start at the first month with usage, or earlier)"
            )
        return
    expected = next_month(closed[-1])
    if month < expected:
        raise Conflict(
            f"months close in order: {month} is before the last closed month, {closed[-1]}; "
            f"the next month to close is {expected}"
        )
    if month > expected:
        raise Conflict(f"months close in order: close {expected} before {month}")


def close_month(
    session: Session, *, month: str, actor: str, now: datetime, default_micro_usd: int
) -> PeriodRead:
    """Book a finished month's lines, and the corrections found in earlier closed months."""
    if month_bounds(month)[1] > now:
        raise Conflict(f"{month} is not over yet; it can be closed from {next_month(month)}-01")
    # Closes take turns, so that each checks the order against every close before it.
    take_turns(session, "periods.close")
    _check_order(session, month)
    lines, corrections = lines_to_book(session, month=month, default_micro_usd=default_micro_usd)
    rows = [_row(month, line) for line in [*lines, *corrections]]
    if rows:
        session.execute(insert(PeriodLine), rows)
    # Last, so that the lines above are computed with the month still open. A concurrent
    # close of the same month makes this wait for it; if it committed, ours rolls back.
    period = {"month": month, "closed_at": now, "closed_by": actor}
    if not insert_unless_present(session, Period, period):
        raise Conflict(f"{month} is already closed")
    record(
        session,
        at=now,
        actor=actor,
        action="period.close",
        target=f"period:{month}",
        details={
            "lines": len(lines),
            "corrections": len(corrections),
            "cost_usd": str(from_nano(sum(line.cost_nano for line in lines))),
        },
    )
    session.flush()
    return read_period(session, month=month, default_micro_usd=default_micro_usd)


def _first_month_with_usage(session: Session) -> str | None:
    first = session.execute(select(func.min(HourlyUsage.hour))).scalar_one_or_none()
    return None if first is None else month_of(first)


def _row(month: str, line: Line) -> dict[str, object]:
    return {
        "billing_month": month,
        "kind": line.kind,
        "charge_hour": line.charge_start,
        "cluster": line.cluster,
        "job_id": line.job_id,
        "job_name": line.job_name,
        "model": line.model,
        "phase": line.phase,
        "team": line.team,
        "user_name": line.user,
        "labels": line.labels,
        "gpu_model": line.gpu_model,
        "micro_usd_per_gpu_hour": line.rate,
        "default_rate": line.default_rate,
        "gpu_nano_hours": line.gpu_nano_hours,
        "busy_nano_hours": line.busy_nano_hours,
        "energy_nano_kwh": line.energy_nano_kwh,
        "cost_nano": line.cost_nano,
        "energy_cost_nano": line.energy_cost_nano,
    }


def _totals(hours_nano: int | None, cost_nano: int | None) -> Totals:
    return Totals(
        gpu_hours=from_nano(int(hours_nano or 0)), cost_usd=from_nano(int(cost_nano or 0))
    )


def read_period(session: Session, *, month: str, default_micro_usd: int) -> PeriodRead:
    """A month's state, booked figures (if closed) and current figures."""
    start, end = month_bounds(month)
    current = [0, 0]
    for line in current_lines(session, month=month, default_micro_usd=default_micro_usd):
        current[0] += line.gpu_nano_hours
        current[1] += line.cost_nano
    closed = session.get(Period, month)
    sums = (exact_sum(PeriodLine.gpu_nano_hours), exact_sum(PeriodLine.cost_nano))
    booked = None
    if closed is not None:
        booked = _totals(
            *session.execute(
                select(*sums).where(PeriodLine.billing_month == month, PeriodLine.kind == "usage")
            ).one()
        )
    # Later months' corrections of this month's hours: of a closed month, or of one before
    # the books' start, whose late usage is billed as corrections alone.
    corrected = session.execute(
        select(*sums).where(
            PeriodLine.kind == "correction",
            PeriodLine.charge_hour >= start,
            PeriodLine.charge_hour < end,
        )
    ).one()
    corrections = _totals(*corrected) if closed is not None or corrected[0] is not None else None
    return PeriodRead(
        month=month,
        state="closed" if closed else "open",
        closed_at=closed.closed_at if closed else None,
        closed_by=closed.closed_by if closed else None,
        booked=booked,
        corrections_booked=corrections,
        current=_totals(*current),
    )


def list_periods(
    session: Session, *, start: str | None, limit: int, default_micro_usd: int
) -> PeriodPage:
    """Up to `limit` months from `start` (default: the books' start), oldest first, within
    the books: from their start to the first open month or the last with usage."""
    first = books_start(session)
    # To the first open month, where the next corrections are billed, or the last with usage.
    last = max(
        filter(None, [_last_month_with_usage(session), first_open_month(session)]), default=None
    )
    if first is None or last is None:
        return PeriodPage(periods=[], first=None, last=None, next_from=None)
    month = max(start or first, first)
    periods: list[PeriodRead] = []
    while month <= last and len(periods) < limit:
        periods.append(read_period(session, month=month, default_micro_usd=default_micro_usd))
        month = next_month(month)
    return PeriodPage(
        periods=periods, first=first, last=last, next_from=month if month <= last else None
    )


def _last_month_with_usage(session: Session) -> str | None:
    last = session.execute(select(func.max(HourlyUsage.hour))).scalar_one_or_none()
    return None if last is None else month_of(last)
