"""Corrections: what closed months' booked lines miss of the current truth, hour by hour.

A late report (one dated before the first closed month too), a re-labelled job or a restated
price changes a closed month's truth but not its booked lines; the difference is billed in
the first open month, each line pointing at the hour it corrects. A re-labelled job gives a
negative line for the old labels and a positive one for the new; a restated price the same
with the two prices.

The difference is taken as closed months book, in billionths per hourly line, so that an
unchanged hour gives no correction.
"""

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.billing._booked import booked_lines
from app.billing.lines import BOOKED, KEY, Line, closed_months, live_lines
from app.core.calendar import month_bounds
from app.core.timestamps import EARLIEST_INSTANT
from app.core.units import PARTS_PER_NANO
from app.models import PeriodLine


def pending_corrections(session: Session, *, default_micro_usd: int) -> list[Line]:
    """What closed months' lines miss of the current truth, hour by hour."""
    months = closed_months(session)
    if not months:
        return []
    # From the first instant usage can have: usage dated before the books' start (a report
    # arriving after they started) was never booked, and is billed as a correction too.
    start, end = EARLIEST_INSTANT, month_bounds(months[-1])[1]
    balance: dict[tuple[Any, ...], list[int | None]] = defaultdict(lambda: [0, 0, 0, 0, None])
    names: dict[tuple[Any, ...], str | None] = {}

    def add(line: Line, sign: int) -> None:
        key = (line.charge_start, *(getattr(line, k) for k in KEY))
        figures = balance[key]
        for i, name in enumerate(BOOKED):
            value = getattr(line, name)
            if value is not None:
                figures[i] = (figures[i] or 0) + sign * value
        names.setdefault(key, line.job_name)

    for line in live_lines(
        session, start=start, end=end, granularity="hour", default_micro_usd=default_micro_usd
    ):
        add(line, +1)
    for month in _months_with_booked_charges(session, start, end):
        for kind in ("usage", "correction"):
            for line in booked_lines(
                session, month=month, kind=kind, start=start, end=end, granularity="hour"
            ):
                add(line, -1)
    corrections = []
    for key, figures in sorted(balance.items(), key=lambda item: _sort_key(item[0])):
        if not any(figures):
            continue
        parts: Any = key
        charge, cluster, job_id, model, phase, team, user, labels, gpu_model, rate, default = parts
        gpu, busy, energy, cost = ((figure or 0) * PARTS_PER_NANO for figure in figures[:4])
        energy_cost = None if figures[4] is None else figures[4] * PARTS_PER_NANO
        corrections.append(
            Line(
                charge,
                "correction",
                cluster,
                job_id,
                names[key],
                model,
                phase,
                team,
                user,
                labels,
                gpu_model,
                rate,
                default,
                gpu,
                busy,
                energy,
                cost,
                energy_cost,
            )  # fmt: skip
        )
    return corrections


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple("" if part is None else part for part in key)


def _months_with_booked_charges(session: Session, start: datetime, end: datetime) -> list[str]:
    query = (
        select(PeriodLine.billing_month)
        .where(PeriodLine.charge_hour >= start, PeriodLine.charge_hour < end)
        .distinct()
    )
    return sorted(session.execute(query).scalars())
