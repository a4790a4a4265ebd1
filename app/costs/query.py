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
into one CASE expression per price kind rather than joined to every atom
(`app.pricing.atom_prices`; a price scenario's over those, `app.scenarios.prices`). Stage
one reads each part of the range from the coarsest level of the rollup that holds it at one
price (app.totals): an atom's sums over a whole day or month, priced at that period's price,
are the sums of its hours priced each at theirs. The levels' rows are put together first (UNION
ALL, each row named by its period's start), then priced and summed once, so that a statement
writes each price once however many levels it reads; the prices are constants in its text,
not parameters, so that no count of rates meets a database's limit on those.
"""

import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    Subquery,
    case,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from app.core.labels import IDLE, UNATTRIBUTED
from app.core.sql import utc_period
from app.core.sums import exact_sum
from app.models import Cluster, HourlyUsage, Job
from app.pricing.atom_prices import PRICES, AtomPrices, atom_prices
from app.scenarios.prices import ScenarioPrices
from app.totals.levels import (
    DAY,
    FIGURES,
    HOUR,
    MONTH,
    Level,
    Range,
    cover,
    on_level,
    over,
    within,
)

P = ParamSpec("P")
T = TypeVar("T")
LABELS = {"model": Job.model, "phase": Job.phase, "team": Job.team, "user": Job.user_name}


# The statements of cost roll-ups are built once for the prices (the same object while the
# rate cards and a scenario's prices stay the same, app.pricing.atom_prices) and the question
# asked: building one is a third to a half of a roll-up's own work, and dashboards ask the
# same questions again and again. A statement, once built, is immutable and shared safely
# between requests and threads.
_BUILT: list[Any] = []


def built_once(build: Callable[P, T]) -> Callable[P, T]:
    """`build` (a statement builder whose arguments are all hashable, its prices among them)
    remembering its 32 latest statements."""
    cached = functools.lru_cache(maxsize=32)(build)
    _BUILT.append(cached)
    return cached  # type: ignore[return-value]


def forget_built() -> None:
    """Build every statement again from here on (a test that changes how they are built)."""
    for cached in _BUILT:
        cached.cache_clear()


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


def in_period(start: datetime | None, end: datetime | None) -> list[ColumnElement[bool]]:
    conditions = []
    if start is not None:
        conditions.append(HourlyUsage.hour >= start)
    if end is not None:
        conditions.append(HourlyUsage.hour < end)
    return conditions


def prices_for(
    session: Session, *, default_micro_usd: int, scenario: ScenarioPrices | None = None
) -> AtomPrices:
    """Each atom's prices: the books' as the rate cards stand, or a `scenario`'s over them."""
    books = atom_prices(session, default_micro_usd=default_micro_usd)
    return books if scenario is None else scenario.over(books)


def priced_usage(
    prices: AtomPrices,
    *,
    start: datetime | None,
    end: datetime | None,
    where: Sequence[ColumnElement[bool]],
    by: dict[str, str] | None = None,
) -> Select[Any]:
    """Stage one: the atoms from `start` to `end` matching `where` (both written over the
    hourly level), summed exactly per job, cluster, GPU model and price, and per period
    for each `by` name ("day" or "month"), at `prices` (`prices_for`); callers make it a
    subquery, or a lateral one. A range without a whole hour has no rows."""
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
        *(utc_period(unit, atoms.c.hour).label(name) for name, unit in periods.items()),
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
