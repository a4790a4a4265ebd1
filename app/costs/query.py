"""The priced hourly atoms every cost figure is summed from, as one SQL statement.

An atom is one rollup row: a job (or a cluster's idle capacity), a GPU model and a UTC hour.
Its cost is its GPU-time at the rate in force in that hour, rounded half up to a
nano-dollar in integer arithmetic. Every grouping sums the same atoms, so every total
agrees with every other to the last digit and equals the sum of its rows.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    String,
    and_,
    case,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.orm import Session

from app.models import Cluster, EnergyRate, HourlyUsage, Job, Rate
from app.models.base import UTCDateTime

IDLE = "(idle)"
UNATTRIBUTED = "(unattributed)"
LABELS = {"model": Job.model, "phase": Job.phase, "team": Job.team, "user": Job.user_name}
# Microseconds (or millijoules) in an hour (or kWh) over nano-dollars in a micro-dollar.
_DIVISOR = 3_600_000


def label(name: str) -> ColumnElement[str]:
    """A job label as costs show it: idle capacity and unlabelled jobs get names of their own."""
    # Constants inline, not bound: PostgreSQL matches a GROUP BY expression to the
    # SELECT list by its text, and bound parameters would make the two differ.
    return case(
        (HourlyUsage.job_id.is_(None), literal_column(f"'{IDLE}'", String)),
        (LABELS[name].is_(None), literal_column(f"'{UNATTRIBUTED}'", String)),
        else_=LABELS[name],
    )


def period(session: Session, unit: str) -> ColumnElement[str]:
    """The atom's UTC day (`2025-01-06`) or month (`2025-01`)."""
    if session.get_bind().dialect.name == "postgresql":
        pattern = "YYYY-MM-DD" if unit == "day" else "YYYY-MM"
        return func.to_char(func.timezone("UTC", HourlyUsage.hour), pattern, type_=String)
    # SQLite keeps UTC timestamps as ISO text.
    return func.substr(HourlyUsage.hour, 1, 10 if unit == "day" else 7, type_=String)


def _segments(model: Any, price: Any, *keys: Any) -> Any:
    """Each price with the instant the next price for the same key takes over."""
    return select(
        *keys,
        model.cluster_id,
        price.label("price"),
        model.effective_from.label("valid_from"),
        func.lead(model.effective_from, type_=UTCDateTime())
        .over(partition_by=(*keys, model.cluster_id), order_by=model.effective_from)
        .label("valid_to"),
    ).subquery()


def _in_force(segment: Any) -> ColumnElement[bool]:
    return and_(
        segment.c.valid_from <= HourlyUsage.hour,
        or_(segment.c.valid_to.is_(None), HourlyUsage.hour < segment.c.valid_to),
    )


def _nano_cost(quantity: Any, micro_price: Any) -> Any:
    # quantity x price / 3.6e6, rounded half up, split so that no product leaves 64 bits.
    return (quantity // _DIVISOR) * micro_price + (
        (quantity % _DIVISOR) * micro_price + _DIVISOR // 2
    ) // _DIVISOR


def priced_atoms(default_micro_usd: int) -> tuple[Select[Any], dict[str, Any]]:
    """The joined atom query (to be grouped) and the per-atom figures to aggregate."""
    rates = _segments(Rate, Rate.micro_usd_per_gpu_hour, Rate.gpu_model)
    cluster_rate, general_rate = rates.alias("cluster_rate"), rates.alias("general_rate")
    energy = _segments(EnergyRate, EnergyRate.micro_usd_per_kwh)
    cluster_energy, general_energy = energy.alias("cluster_energy"), energy.alias("general_energy")

    rate = func.coalesce(
        cluster_rate.c.price,
        general_rate.c.price,
        literal(default_micro_usd, BigInteger),
        type_=BigInteger,
    )
    energy_price = func.coalesce(cluster_energy.c.price, general_energy.c.price, type_=BigInteger)
    defaulted = case(
        (and_(cluster_rate.c.price.is_(None), general_rate.c.price.is_(None)), 1), else_=0
    )

    query = (
        select()
        .select_from(HourlyUsage)
        .join(Cluster, Cluster.id == HourlyUsage.cluster_id)
        .outerjoin(Job, Job.id == HourlyUsage.job_id)
        .outerjoin(
            cluster_rate,
            and_(
                cluster_rate.c.cluster_id == HourlyUsage.cluster_id,
                cluster_rate.c.gpu_model == HourlyUsage.gpu_model,
                _in_force(cluster_rate),
            ),
        )
        .outerjoin(
            general_rate,
            and_(
                general_rate.c.cluster_id.is_(None),
                general_rate.c.gpu_model == HourlyUsage.gpu_model,
                _in_force(general_rate),
            ),
        )
        .outerjoin(
            cluster_energy,
            and_(cluster_energy.c.cluster_id == HourlyUsage.cluster_id, _in_force(cluster_energy)),
        )
        .outerjoin(
            general_energy,
            and_(general_energy.c.cluster_id.is_(None), _in_force(general_energy)),
        )
    )
    figures = {
        "gpu_us": func.sum(HourlyUsage.gpu_us),
        "busy_us": func.sum(HourlyUsage.busy_us),
        "energy_mj": func.sum(HourlyUsage.energy_mj),
        "cost_nano": func.sum(_nano_cost(HourlyUsage.gpu_us, rate)),
        "energy_cost_nano": func.sum(_nano_cost(HourlyUsage.energy_mj, energy_price)),
        "defaulted": func.sum(defaulted),
        "atoms": func.count(),
        "first_hour": func.min(HourlyUsage.hour),
        "last_hour": func.max(HourlyUsage.hour),
    }
    return query, {"rate": rate, "is_default": defaulted, **figures}


def in_period(start: datetime | None, end: datetime | None) -> list[ColumnElement[bool]]:
    conditions = []
    if start is not None:
        conditions.append(HourlyUsage.hour >= start)
    if end is not None:
        conditions.append(HourlyUsage.hour < end)
    return conditions
