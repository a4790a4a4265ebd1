"""SQL constructs that domains write once and each database reads in its own words.

Domain code speaks SQLAlchemy only; where SQLite and PostgreSQL differ, the difference is
here: a constant written into a statement's text (`constant`), the UTC day or month of an
instant (`utc_period`), and a subquery per row of an outer query (`per_row`), which only
PostgreSQL can ask for in one statement (LATERAL).
"""

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Select, String, cast, func, null, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

_INTEGER = BigInteger()


class _Constant(ColumnElement[Any]):
    """A value written into the statement's text as the dialect writes a literal."""

    __visit_name__ = "sql_constant"
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
    """A value (a price's number or instant) as a constant in the statement, not a
    parameter: a statement takes at most 65,535 parameters on PostgreSQL (32,766 on a stock
    SQLite), and rate cards of some thousands of rows would pass that. A null keeps its
    type, so that a CASE of nulls alone is still a number on PostgreSQL."""
    return cast(null(), type_) if value is None else _Constant(value, type_)


class _UtcPeriod(ColumnElement[str]):
    """The UTC day or month of an instant column, as text. Both databases' expressions are
    built once, with the element: one used twice in a statement (selected and grouped by)
    reads the same, parameters included, which PostgreSQL needs to match the two."""

    __visit_name__ = "utc_period"
    inherit_cache = True
    _traverse_internals = [
        ("on_postgresql", InternalTraversal.dp_clauseelement),
        ("elsewhere", InternalTraversal.dp_clauseelement),
    ]
    type = String()

    def __init__(self, unit: str, instant: Any) -> None:
        pattern = "YYYY-MM-DD" if unit == "day" else "YYYY-MM"
        self.on_postgresql = func.to_char(func.timezone("UTC", instant), pattern, type_=String)
        # SQLite keeps UTC timestamps as ISO text.
        self.elsewhere = func.substr(instant, 1, 10 if unit == "day" else 7, type_=String)


@compiles(_UtcPeriod)
def _write_period(element: _UtcPeriod, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.elsewhere, **kw)


@compiles(_UtcPeriod, "postgresql")
def _write_postgresql_period(element: _UtcPeriod, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.on_postgresql, **kw)


def utc_period(unit: str, instant: Any) -> ColumnElement[str]:
    """The UTC day (`2025-01-06`, `unit` "day") or month (`2025-01`, "month") of an instant
    column, as text."""
    return _UtcPeriod(unit, instant)


def per_row(
    dialect: str,
    build: Callable[[Sequence[ColumnElement[bool]]], Select[Any]],
    *,
    name: str,
    each_row: Sequence[ColumnElement[bool]],
    all_rows: Sequence[ColumnElement[bool]],
    on: Callable[[Any], ColumnElement[bool]],
) -> tuple[Any, ColumnElement[bool]]:
    """A subquery `build(where)` to join to each row of an outer query, and the join's
    condition, for the `dialect` named. On PostgreSQL, a lateral one built under `each_row`
    (conditions that name the outer row), joined on true: one small query per outer row.
    Elsewhere (SQLite has no LATERAL), one built under `all_rows` for every outer row at
    once, joined `on` its key."""
    if dialect == "postgresql":
        return build(each_row).lateral(name), true()
    subquery = build(all_rows).subquery(name)
    return subquery, on(subquery)
