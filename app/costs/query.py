"""The priced hourly atoms every cost figure is summed from.

An atom is one rollup row: a job (or a cluster's idle capacity), a GPU model and a UTC hour,
priced at the rates in force in that hour. SQL sums the atoms' integers (microseconds,
millijoules) per price, exactly (`exact_sum`); Python multiplies each sum by its price and
adds the products as unbounded integers (`app.costs.figures`). A price x time product
leaves 64 bits long before a sum does (a job-hour on 2,048 GPUs at 2 USD is 1.5e19
micro-USD-microseconds), so no database ever holds one. Every grouping sums the same
exact parts, so every total is the exact sum of its rows, and each is rounded once, shown.

Queries run in two stages: atoms are summed per job, cluster, GPU model and price (and day
or month where asked) straight from the rollup, then those few rows are joined to jobs and
grouped by labels, still per price. Rate cards are few, so they are read first and turned
into one CASE expression per price kind rather than joined to every atom. Stage one reads
each part of the range from the coarsest level of the rollup that holds it at one price
(app.totals): an atom's sums over a whole day or month, priced at that period's price, are
the sums of its hours priced each at theirs.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    String,
    Subquery,
    and_,
    case,
    func,
    literal,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from app.core.sums import exact_sum
from app.models import Cluster, EnergyRate, HourlyUsage, Job, Rate
from app.pricing.spans import in_force
from app.totals.levels import DAY, MONTH, Level, Range, cover, on_level, within

if TYPE_CHECKING:  # the scenario builds its prices over these, so it imports this module
    from app.scenarios.prices import ScenarioPrices

IDLE = "(idle)"
UNATTRIBUTED = "(unattributed)"
LABELS = {"model": Job.model, "phase": Job.phase, "team": Job.team, "user": Job.user_name}
# What SQL sums, per price: the rollup's exact integers.
FIGURES = ("gpu_us", "busy_us", "energy_mj")
# What each stage-one row is priced at: micro-USD per GPU-hour, what set that price
# (`SOURCES`), and micro-USD per kWh (null where no energy price is set).
PRICES = ("rate", "source", "energy_rate")
# Who set an atom's GPU-hour price: the rate card, the default rate (the books' two, 0 and
# 1 as they always were), or a price scenario (`app.scenarios`), which never reaches the books.
CARD, DEFAULT, SCENARIO = 0, 1, 2
SOURCES = {CARD: "card", DEFAULT: "default", SCENARIO: "scenario"}


def label(name: str, job_id: Any) -> ColumnElement[str]:
    """A job label as costs show it: idle capacity and unlabelled jobs get names of their own."""
    # Constants inline, not bound: PostgreSQL matches GROUP BY expressions to the SELECT
    # list by their text.
    return case(
        (job_id.is_(None), literal_column(f"'{IDLE}'", String)),
        (LABELS[name].is_(None), literal_column(f"'{UNATTRIBUTED}'", String)),
        else_=LABELS[name],
    )


def label_is(name: str, value: str) -> ColumnElement[bool]:
    """Atoms whose job label `name` reads `value`, answered from the jobs' index."""
    if value == IDLE:
        return HourlyUsage.job_id.is_(None)
    if value == UNATTRIBUTED:
        return HourlyUsage.job_id.in_(select(Job.id).where(LABELS[name].is_(None)))
    return HourlyUsage.job_id.in_(select(Job.id).where(LABELS[name] == value))


def period(session: Session, unit: str, hour: Any = HourlyUsage.hour) -> ColumnElement[str]:
    """The UTC day (`2025-01-06`) or month (`2025-01`) of an hour column."""
    if session.get_bind().dialect.name == "postgresql":
        pattern = "YYYY-MM-DD" if unit == "day" else "YYYY-MM"
        return func.to_char(func.timezone("UTC", hour), pattern, type_=String)
    # SQLite keeps UTC timestamps as ISO text.
    return func.substr(hour, 1, 10 if unit == "day" else 7, type_=String)


def in_period(start: datetime | None, end: datetime | None) -> list[ColumnElement[bool]]:
    conditions = []
    if start is not None:
        conditions.append(HourlyUsage.hour >= start)
    if end is not None:
        conditions.append(HourlyUsage.hour < end)
    return conditions


def price_cases(rows: Sequence[Any], match: Any) -> list[tuple[ColumnElement[bool], int]]:
    """(condition, price) per effective-dated price, per-cluster prices first: they win."""
    cases = []
    spans = in_force(
        rows,
        key=lambda r: (r.cluster_id is None, r.key, r.cluster_id or 0),
        start=lambda r: r.effective_from,
    )
    for row, end in spans:
        conditions = [match(row), HourlyUsage.hour >= row.effective_from]
        if row.cluster_id is not None:
            conditions.append(HourlyUsage.cluster_id == row.cluster_id)
        if end is not None:
            conditions.append(HourlyUsage.hour < end)
        cases.append((and_(*conditions), row.price))
    return cases


@dataclass(frozen=True)
class AtomPrices:
    """Per-atom expressions: the rate in force, who set it (`SOURCES`), the energy price;
    and the instants from which any of them changes."""

    rate: ColumnElement[int]
    source: ColumnElement[int]
    energy_rate: ColumnElement[int]
    changes: frozenset[datetime] = field(default_factory=frozenset)

    def labelled(self) -> list[ColumnElement[Any]]:
        """The three as stage-one columns named as `PRICES`."""
        columns = (self.rate, self.source, self.energy_rate)
        return [column.label(name) for column, name in zip(columns, PRICES, strict=True)]


def atom_prices(
    session: Session, *, default_micro_usd: int, scenario: "ScenarioPrices | None" = None
) -> AtomPrices:
    """Read the rate cards and build each atom's prices as SQL expressions; under a
    `scenario`, its prices where it has them, the books' elsewhere."""
    rates = session.execute(
        select(
            Rate.gpu_model.label("key"),
            Rate.cluster_id,
            Rate.effective_from,
            Rate.micro_usd_per_gpu_hour.label("price"),
        )
    ).all()
    energy = session.execute(
        select(
            literal("").label("key"),
            EnergyRate.cluster_id,
            EnergyRate.effective_from,
            EnergyRate.micro_usd_per_kwh.label("price"),
        )
    ).all()
    rate_cases = price_cases(rates, lambda r: HourlyUsage.gpu_model == r.key)
    energy_cases = price_cases(energy, lambda r: literal(True))
    default = literal(default_micro_usd, BigInteger)
    rate: Any = case(*rate_cases, else_=default) if rate_cases else default
    source: Any = (
        case(*((c, CARD) for c, _ in rate_cases), else_=DEFAULT)
        if rate_cases
        else literal(DEFAULT, Integer)
    )
    energy_rate = case(*energy_cases) if energy_cases else literal(None, BigInteger)
    changes = frozenset(row.effective_from for row in (*rates, *energy))
    books = AtomPrices(rate=rate, source=source, energy_rate=energy_rate, changes=changes)
    return books if scenario is None else scenario.over(books)


def priced_usage(
    session: Session,
    *,
    default_micro_usd: int,
    start: datetime | None,
    end: datetime | None,
    where: Sequence[ColumnElement[bool]],
    by: dict[str, str] | None = None,
    scenario: "ScenarioPrices | None" = None,
) -> Any:
    """Stage one: the atoms from `start` to `end` matching `where` (both written over the
    hourly level), summed exactly per job, cluster, GPU model and price, and per period
    for each `by` name ("day" or "month"), at the books' prices or a `scenario`'s; callers
    make it a subquery, or a lateral one."""
    prices = atom_prices(session, default_micro_usd=default_micro_usd, scenario=scenario)
    periods = by or {}
    coarsest = DAY if "day" in periods.values() else MONTH
    parts = [
        _level_sums(session, level, ranges, prices=prices, where=where, periods=periods)
        for level, ranges in cover(start, end, changes=prices.changes, coarsest=coarsest).items()
    ]
    return parts[0] if len(parts) == 1 else union_all(*parts)


def _level_sums(
    session: Session,
    level: Level,
    ranges: list[Range],
    *,
    prices: AtomPrices,
    where: Sequence[ColumnElement[bool]],
    periods: dict[str, str],
) -> Select[Any]:
    """Stage one on one level, over its rows within `ranges`."""
    table = level.table
    keys: list[Any] = [
        table.c.job_id,
        table.c.cluster_id,
        table.c.gpu_model,
        *(period(session, unit, level.start).label(name) for name, unit in periods.items()),
        *(on_level(column, level) for column in prices.labelled()),
    ]
    return (
        select(*keys, *(exact_sum(table.c[name]).label(name) for name in FIGURES))
        .where(within(level, ranges), *(on_level(condition, level) for condition in where))
        .group_by(*(k.element if hasattr(k, "element") else k for k in keys))
    )


def resum(priced: Any) -> list[ColumnElement[Any]]:
    """Stage two: the figures of a group of stage-one rows, named as `FIGURES`."""
    return [exact_sum(priced.c[name]).label(name) for name in FIGURES]


def price_columns(priced: Any) -> list[ColumnElement[Any]]:
    """Stage one's prices, which stage two keeps apart (it groups by them too)."""
    return [priced.c[name] for name in PRICES]


def joined(priced: Subquery) -> Any:
    """Stage-one rows with their cluster and job, for grouping by names and labels."""
    return (
        select()
        .select_from(priced)
        .join(Cluster, Cluster.id == priced.c.cluster_id)
        .outerjoin(Job, Job.id == priced.c.job_id)
    )
