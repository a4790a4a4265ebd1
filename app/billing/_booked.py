"""Lines booked in closed months, read back exactly as booked."""

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.billing.lines import BOOKED, Line, charge_of
from app.core.sql import utc_period
from app.core.sums import exact_sum
from app.core.units import PARTS_PER_NANO
from app.models import PeriodLine


def _parts(nano: Any) -> int | None:
    """A booked figure (billionths) in parts, exactly."""
    return None if nano is None else int(nano) * PARTS_PER_NANO


def booked_lines(
    session: Session, *, month: str, kind: str, start: datetime, end: datetime, granularity: str
) -> Iterator[Line]:
    """Lines booked in a closed month, charge hours in [start, end), summed per period."""
    line = PeriodLine
    charge = (
        line.charge_hour if granularity == "hour" else utc_period(granularity, line.charge_hour)
    )
    keys = [
        charge, line.cluster, line.job_id, line.job_name, line.model, line.phase, line.team,
        line.user_name, line.labels, line.gpu_model, line.micro_usd_per_gpu_hour,
        line.default_rate,
    ]  # fmt: skip
    query = (
        select(*keys, *(exact_sum(getattr(line, name)) for name in BOOKED))
        .where(
            line.billing_month == month,
            line.kind == kind,
            line.charge_hour >= start,
            line.charge_hour < end,
        )
        .group_by(*keys)
        .order_by(
            charge,
            line.cluster,
            line.job_id.nulls_first(),
            line.gpu_model,
            line.micro_usd_per_gpu_hour,
        )
        .execution_options(yield_per=2000)
    )
    row: Any
    for row in session.connection().execute(query):
        yield Line(
            charge_of(row[0]), kind, row[1], row[2], row[3], row[4], row[5], row[6], row[7],
            row[8], row[9], int(row[10]), bool(row[11]), int(row[12]) * PARTS_PER_NANO,
            int(row[13]) * PARTS_PER_NANO, int(row[14]) * PARTS_PER_NANO,
            int(row[15]) * PARTS_PER_NANO, _parts(row[16]),
        )  # fmt: skip
