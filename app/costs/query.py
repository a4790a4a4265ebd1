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
the sums of its hours priced each at theirs. The levels' rows are put together first (UNION
ALL, each row named by its period's start), then priced and summed once, so that a statement
writes each price once however many levels it reads; the prices are constants in its text,
not parameters, so that no count of rates meets a database's limit on those.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    String,
    Subquery,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    null,
    select,
    true,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from app.core.labels import IDLE, UNATTRIBUTED
from app.core.sums import exact_sum
from app.models import Cluster, EnergyRate, HourlyUsage, Job, Rate
from app.pricing.spans import in_force
from app.totals.levels import DAY, HOUR, MONTH, Level, Range, cover, on_level, over, within

if TYPE_CHECKING:  # the scenario builds its prices over these, so it imports this module
    from app.scenarios.prices import ScenarioPrices

_INSTANT = HourlyUsage.hour.type
_INTEGER = BigInteger()
_PRICE = attrgetter("price")  # of a rate card's row, as `atom_prices` reads them

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


class _Constant(ColumnElement[Any]):
    """A value written into the statement's text as the dialect writes a literal."""

    __visit_name__ = "price_constant"
    inherit_cache = True
    _traverse_internals = [
        ("value", InternalTraversal.dp_plain_obj),
        ("type", InternalTraversal.dp_type),
    ]

    def __init__(self, value: Any, type_: Any) -> None:
        self.value = value
        self.type = type_


@compiles(_Constant)
def _write_constant(element: _Constant, compiler: SQLCompiler, **_: Any) -> str:
    return compiler.render_literal_value(element.value, element.type)


def constant(value: Any, type_: Any = _INTEGER) -> ColumnElement[Any]:
    """A price's number or instant as a constant in the statement, not a parameter: a
    statement takes at most 65,535 parameters on PostgreSQL (32,766 on a stock SQLite), and
    rate cards of some thousands of rows would pass that. A null keeps its type, so that a
    CASE of nulls alone is still a number on PostgreSQL."""
    return cast(null(), type_) if value is None else _Constant(value, type_)


def price_cases(rows: Sequence[Any], match: Any) -> list[tuple[ColumnElement[bool], list[Any]]]:
    """Per key of effective-dated prices, per-cluster keys first (they win): the condition
    that one of the key's prices is in force on an atom, and the key's prices, earliest first.
    A key's prices follow one another from its first on (`in_force`), so one condition a key
    holds where any of them does, and `price_in_force` tells which."""
    cases = []
    spans = in_force(rows, key=_price_key, start=lambda r: r.effective_from)
    for _, keyed in groupby((row for row, _ in spans), key=_price_key):
        prices = list(keyed)
        first = prices[0]
        conditions = [match(first), HourlyUsage.hour >= constant(first.effective_from, _INSTANT)]
        if first.cluster_id is not None:
            conditions.append(HourlyUsage.cluster_id == constant(first.cluster_id))
        cases.append((and_(*conditions), prices))
    return cases


def _price_key(row: Any) -> tuple[bool, str, int]:
    return (row.cluster_id is None, row.key, row.cluster_id or 0)


def price_in_force(prices: list[Any], value: Callable[[Any], int | None]) -> ColumnElement[Any]:
    """`value` of the one of a key's prices (`price_cases`, earliest first) in force at an
    atom's hour, where one is: the latest that started by then."""
    first, *later = prices
    if not later:
        return constant(value(first))
    return case(
        *(
            (HourlyUsage.hour >= constant(row.effective_from, _INSTANT), constant(value(row)))
            for row in reversed(later)
        ),
        else_=constant(value(first)),
    )


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
    card = price_cases(rates, lambda r: HourlyUsage.gpu_model == r.key)
    kwh = price_cases(energy, lambda r: true())
    default = constant(default_micro_usd)
    rate = (
        case(*((c, price_in_force(p, _PRICE)) for c, p in card), else_=default) if card else default
    )
    source = (
        case(*((c, constant(CARD)) for c, _ in card), else_=constant(DEFAULT))
        if card
        else constant(DEFAULT)
    )
    energy_rate = case(*((c, price_in_force(p, _PRICE)) for c, p in kwh)) if kwh else constant(None)
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
) -> Select[Any]:
    """Stage one: the atoms from `start` to `end` matching `where` (both written over the
    hourly level), summed exactly per job, cluster, GPU model and price, and per period
    for each `by` name ("day" or "month"), at the books' prices or a `scenario`'s; callers
    make it a subquery, or a lateral one. A range without a whole hour has no rows."""
    prices = atom_prices(session, default_micro_usd=default_micro_usd, scenario=scenario)
    periods = by or {}
    coarsest = DAY if "day" in periods.values() else MONTH
    read = cover(start, end, changes=prices.changes, coarsest=coarsest)
    # Nothing to read: the hourly level's rows within no range, for the columns' sake.
    parts = [_level_rows(level, ranges, where) for level, ranges in read.items()] or [
        _level_rows(HOUR, [], where)
    ]
    atoms = (parts[0] if len(parts) == 1 else union_all(*parts)).subquery("atoms")
    # Priced in a subquery of its own, so that the sums group by its columns, not by the
    # price expressions again (a constant such as the default rate would read as a position).
    priced = select(
        atoms.c.job_id,
        atoms.c.cluster_id,
        atoms.c.gpu_model,
        *(period(session, unit, atoms.c.hour).label(name) for name, unit in periods.items()),
        *(over(column, atoms) for column in prices.labelled()),
        *(atoms.c[name] for name in FIGURES),
    ).subquery("priced_atoms")
    keys = [column for column in priced.c if column.name not in FIGURES]
    return select(*keys, *(exact_sum(priced.c[name]).label(name) for name in FIGURES)).group_by(
        *keys
    )


def _level_rows(
    level: Level, ranges: list[Range], where: Sequence[ColumnElement[bool]]
) -> Select[Any]:
    """The level's rows within `ranges` matching `where`, their period's start as `hour`."""
    table = level.table
    # `where` may name a table of a query around stage one (a lateral subquery's job), two
    # subqueries out: SQLAlchemy correlates that far only when told to.
    return (
        select(
            table.c.job_id,
            table.c.cluster_id,
            table.c.gpu_model,
            level.start.label(HOUR.unit),
            *(table.c[name] for name in FIGURES),
        )
        .where(within(level, ranges), *(on_level(condition, level) for condition in where))
        .correlate_except(table)
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
