"""`exact_sum`: the sum of stored integers, exact and overflow-free on both databases.

PostgreSQL sums bigints into numerics, so its own `sum()` is exact. SQLite's `sum()` of
integers raises "integer overflow" past 2^63 (and `total()` is a float), so on SQLite the
construct calls an aggregate of Python integers registered on every connection. A sum that
fits in 64 bits comes back as an integer; a larger one as its digits in text, zero-padded
when positive so that `max()` over such sums still orders them as numbers (SQLite orders
text after every integer). Either way the column reads back as a Python `int`.

A stored sum holds 64 bits (`INT64_MAX`); one that an addition would take past them is
refused: by PostgreSQL's BIGINT itself, by SQLite through `integers_only` constraints, whose
violation `past_64_bits` recognises.
"""

import sqlite3
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, TypeDecorator
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

_INT64 = 1 << 63
INT64_MAX = _INT64 - 1  # the largest sum a stored column holds
_WIDTH = 40  # digits of a padded positive sum: past any sum of 2^32 rows of 64-bit values


class ExactInteger(TypeDecorator[int]):
    """An integer column whose values may arrive as numerics (PostgreSQL) or text (SQLite)."""

    impl = BigInteger
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> int | None:
        return None if value is None else int(value)


class exact_sum(FunctionElement[int]):  # noqa: N801 - named as SQL functions are
    """`sum(column)` of integers, exact whatever its size."""

    type = ExactInteger()
    inherit_cache = True


@compiles(exact_sum)
def _sum(element: exact_sum, compiler: SQLCompiler, **kw: Any) -> str:
    return f"sum({compiler.process(element.clauses, **kw)})"


@compiles(exact_sum, "sqlite")
def _sqlite_sum(element: exact_sum, compiler: SQLCompiler, **kw: Any) -> str:
    return f"exact_sum({compiler.process(element.clauses, **kw)})"


class _ExactSum:
    """SQLite aggregate: Python integers, which do not overflow."""

    def __init__(self) -> None:
        self.total: int | None = None

    def step(self, value: Any) -> None:
        if value is not None:
            self.total = (self.total or 0) + int(value)

    def finalize(self) -> int | str | None:
        total = self.total
        if total is None or -_INT64 <= total < _INT64:
            return total
        return str(total) if total < 0 else str(total).zfill(_WIDTH)


def register_sqlite(dbapi_connection: Any) -> None:
    """Make `exact_sum` known to one SQLite connection."""
    dbapi_connection.create_aggregate("exact_sum", 1, _ExactSum)


# The name every `integers_only` constraint ends with, which `past_64_bits` looks for.
_INTEGER = "_integer"


def integers_only(*columns: str) -> list[CheckConstraint]:
    """CHECK constraints, on SQLite only, that each of `columns` holds an integer. Integer
    arithmetic past 64 bits gives SQLite a real, stored as one in an integer column: a sum
    no longer exact, which these refuse (`past_64_bits`). On PostgreSQL a BIGINT past 64
    bits raises a DataError itself."""
    return [
        CheckConstraint(f"typeof({name}) = 'integer'", name=f"{name}{_INTEGER}").ddl_if(
            dialect="sqlite"
        )
        for name in columns
    ]


def past_64_bits(exc: IntegrityError) -> bool:
    """A value refused by an `integers_only` constraint: a sum past what 64 bits hold."""
    if getattr(exc.orig, "sqlite_errorcode", None) != sqlite3.SQLITE_CONSTRAINT_CHECK:
        return False
    # SQLite names the constraint that failed: "CHECK constraint failed: ck_..._integer".
    return str(exc.orig).endswith(_INTEGER)
