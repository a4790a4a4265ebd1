"""The three levels of the rollup, and which of them answers which part of a range."""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Boolean, Column, ColumnElement, FromClause, Table, and_, false, or_, true
from sqlalchemy.sql import visitors

from app.core.calendar import floor_day, floor_hour, floor_month, next_month_start
from app.core.timestamps import as_utc
from app.models import DailyUsage, HourlyUsage, ModelHourlyUsage, MonthlyUsage

T = TypeVar("T")
# What every level sums, per job, GPU model and period: the rollup's exact integers.
FIGURES = ("gpu_us", "busy_us", "energy_mj")
# A range of period starts, [from, to); None: unbounded on that side.
Range = tuple[datetime | None, datetime | None]


@dataclass(frozen=True)
class Level:
    """One level: its table, the column naming each period's start, and UTC periods."""

    unit: str
    table: Table
    start_of: Callable[[datetime], datetime]  # the start of the period holding an instant
    after: Callable[[datetime], datetime]  # the next period's start, from a period's start

    @property
    def start(self) -> Column[Any]:
        return self.table.c[self.unit]

    def ceil(self, moment: datetime) -> datetime:
        """The first period start at or after `moment`."""
        start = self.start_of(moment)
        return start if start == moment else self.after(start)


def _table(model: Any) -> Table:
    return model.__table__  # type: ignore[no-any-return]


HOUR = Level("hour", _table(HourlyUsage), floor_hour, lambda start: start + timedelta(hours=1))
DAY = Level("day", _table(DailyUsage), floor_day, lambda start: start + timedelta(days=1))
MONTH = Level("month", _table(MonthlyUsage), floor_month, next_month_start)
FINEST_FIRST = (HOUR, DAY, MONTH)
# A model's (and phase's) GPU-time per cluster and hour, apart from the levels above: keyed
# by labels, not jobs.
MODEL_HOURS = _table(ModelHourlyUsage)


def cover(
    start: datetime | None,
    end: datetime | None,
    *,
    changes: Iterable[datetime],
    coarsest: Level = MONTH,
) -> dict[Level, list[Range]]:
    """The ranges of each level that together hold every hour from `start` to `end` once:
    whole months read from the month level, whole days left over from the day level, the
    hours left from the hourly level. A period holding a change (an instant from which a
    price differs) is read one level finer, so that every row read lies within one price.
    """
    # Hours are whole UTC hours: an hour counts when it starts within the range, and a price
    # set within an hour applies from the next (as the hourly level reads them). Converted,
    # not checked: a price stored before today's range checks still reads.
    start = None if start is None else HOUR.ceil(as_utc(start))
    end = None if end is None else HOUR.ceil(as_utc(end))
    cuts = sorted(
        {cut for cut in (HOUR.ceil(as_utc(c)) for c in changes) if _inside(cut, start, end)}
    )
    levels = [level for level in reversed(FINEST_FIRST) if _not_coarser(level, coarsest)]
    ranges: dict[Level, list[Range]] = {}
    bounds = [start, *cuts, end]
    for low, high in zip(bounds, bounds[1:], strict=False):
        if low is not None and high is not None and low >= high:
            continue
        for level, lo, hi in _fill(low, high, levels):
            kept = ranges.setdefault(level, [])
            if kept and kept[-1][1] is not None and kept[-1][1] == lo:
                kept[-1] = (kept[-1][0], hi)  # adjoining: one range
            else:
                kept.append((lo, hi))
    return ranges


def _inside(moment: datetime, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or moment > start) and (end is None or moment < end)


def _not_coarser(level: Level, coarsest: Level) -> bool:
    return FINEST_FIRST.index(level) <= FINEST_FIRST.index(coarsest)


def _fill(
    low: datetime | None, high: datetime | None, levels: list[Level]
) -> Iterator[tuple[Level, datetime | None, datetime | None]]:
    """[low, high) in the coarsest whole periods that fit, the edges in finer ones."""
    level, finer = levels[0], levels[1:]
    if not finer:
        yield level, low, high
        return
    lo = None if low is None else level.ceil(low)
    hi = None if high is None else level.start_of(high)
    if lo is not None and hi is not None and lo >= hi:  # no whole period inside
        yield from _fill(low, high, finer)
        return
    if low is not None and lo is not None and low < lo:
        yield from _fill(low, lo, finer)
    yield level, lo, hi
    if high is not None and hi is not None and hi < high:
        yield from _fill(hi, high, finer)


def within(level: Level, ranges: list[Range]) -> ColumnElement[bool]:
    """The level's rows whose period starts within one of `ranges` (none: no rows)."""
    column = level.start
    terms: list[ColumnElement[bool]] = []
    for lo, hi in ranges:
        bounds = [*([] if lo is None else [column >= lo]), *([] if hi is None else [column < hi])]
        if not bounds:
            return true()  # all of the level
        terms.append(and_(*bounds))
    return _any(terms) if terms else false()


# SQLite parses `a OR b OR c ...` into a tree as deep as its terms are many, and refuses one
# deeper than 1,000 ("Expression tree is too large"): a level read in a thousand ranges, one
# per day where a price changes. SQLAlchemy flattens nested or_()s, groupings of them too, so
# past `_FLAT_OR` terms the two halves are joined by an OR operator of our own, each half in
# parentheses: a tree as deep as the log of the number of terms. Both databases' planners
# flatten nested ORs again, so the plan is that of the flat list.
_FLAT_OR = 64
# OR's own precedence in SQLAlchemy: each half, and the whole within an AND, parenthesized.
_OR_PRECEDENCE = 2


def _any(terms: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    if len(terms) <= _FLAT_OR:
        return or_(*terms)
    middle = len(terms) // 2
    either = _any(terms[:middle]).op("OR", precedence=_OR_PRECEDENCE, return_type=Boolean)
    return either(_any(terms[middle:]))


def on_level(expression: ColumnElement[T], level: Level) -> ColumnElement[T]:
    """`expression`, written over the hourly level's columns, over `level`'s: the same
    names, and the period's start for the hour."""
    return expression if level is HOUR else over(expression, level.table, level.unit)


def over(expression: ColumnElement[T], table: FromClause, start: str = "hour") -> ColumnElement[T]:
    """`expression`, written over the hourly level's columns, over `table`'s (a table or a
    subquery) of the same names, its column `start` for the hour."""
    hourly = HOUR.table

    def replace(element: Any, **_: Any) -> Any:
        if isinstance(element, Column) and element.table is hourly:
            return table.c[start if element.name == HOUR.unit else element.name]
        return None

    return visitors.replacement_traverse(expression, {}, replace)
