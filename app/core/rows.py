"""Finding and updating many rows by key in a fixed number of statements, on PostgreSQL and
SQLite alike."""

import functools
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import (
    Row,
    Table,
    and_,
    any_,
    bindparam,
    column,
    func,
    literal_column,
    select,
    true,
    update,
    values,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from app.core.batches import CHUNK, chunks


def find_rows(
    session: Session,
    table: Table,
    returned: Sequence[str],
    keys: Sequence[str],
    key_values: Iterable[tuple[Any, ...]],
) -> Iterator[Row[Any]]:
    """Rows of `table` (columns `returned`) whose `keys` are any of `key_values`.

    Keys are grouped by all but their last column (a batch's nodes share their cluster):
    one look-up per group, matching the last column against a list. On PostgreSQL the list
    travels as one array (`= ANY`), so that the statement, built once, and its parsing stay
    the same whatever the count; elsewhere in chunks below the limit on bound parameters."""
    groups: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
    for key in key_values:
        groups[key[:-1]].append(key[-1])
    connection = session.connection()
    dialect = connection.dialect.name
    stmt = _select_statement(dialect, table, tuple(returned), tuple(keys))
    for prefix, lasts in groups.items():
        same = {f"key_{name}": value for name, value in zip(keys, prefix, strict=False)}
        for part in [lasts] if dialect == "postgresql" else chunks(lasts):
            yield from connection.execute(stmt, {**same, "values": list(part)})


@functools.cache
def _select_statement(
    dialect: str, table: Table, returned: tuple[str, ...], keys: tuple[str, ...]
) -> Any:
    *first, last = (table.c[name] for name in keys)
    same = [column == bindparam(f"key_{column.name}") for column in first]
    if dialect == "postgresql":
        within = last == any_(bindparam("values", type_=postgresql.ARRAY(last.type)))
    else:
        within = last.in_(bindparam("values", expanding=True))
    return select(*(table.c[name] for name in returned)).where(*same, within)


def find_in_windows(
    session: Session,
    table: Table,
    returned: Sequence[str],
    spans: tuple[str, str, str],
    windows: Sequence[tuple[Any, Any, Any]],
) -> Iterator[Row[Any]]:
    """Rows of `table` (columns `returned`) that meet a window: `spans` names a key column
    and a row's start and end columns; a window (key, lo, hi) takes the rows of its key
    with end >= lo and start < hi. One statement on PostgreSQL (the windows as arrays,
    the statement built once), chunks of windows as VALUES elsewhere."""
    if not windows:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        keys, los, his = (list(column) for column in zip(*windows, strict=True))
        stmt = _window_statement(table, tuple(returned), spans)
        yield from connection.execute(stmt, {"keys": keys, "los": los, "his": his})
        return
    key, start, end = (table.c[name] for name in spans)
    for part in chunks(windows, CHUNK // 3):
        source = (
            values(column("key", key.type), column("lo", end.type), column("hi", start.type))
            .data(list(part))
            .cte("w")
        )
        yield from connection.execute(_windowed(table, returned, spans, source))


@functools.cache
def _window_statement(table: Table, returned: tuple[str, ...], spans: tuple[str, str, str]) -> Any:
    key, start, end = (table.c[name] for name in spans)
    arrays = [
        bindparam(name, type_=postgresql.ARRAY(type_))
        for name, type_ in (("keys", key.type), ("los", end.type), ("his", start.type))
    ]
    windows = func.unnest(*arrays).table_valued("key", "lo", "hi").render_derived(name="w")
    # Each window's rows by the key's index, as a lateral subquery that OFFSET 0 keeps from
    # being flattened: joined flat, the planner does not know how few windows come and
    # hashes the whole table instead.
    key, start, end = (table.c[name] for name in spans)
    inner = (
        select(*(table.c[name] for name in returned))
        .where(key == windows.c.key, end >= windows.c.lo, start < windows.c.hi)
        .offset(literal_column("0"))
        .lateral("found")
    )
    return select(*inner.c).select_from(windows).join(inner, true())


def _windowed(
    table: Table, returned: Sequence[str], spans: tuple[str, str, str], source: Any
) -> Any:
    """The rows that meet the windows of `source`, joined flat (SQLite: the VALUES are few
    and its planner looks each up by the index)."""
    key, start, end = (table.c[name] for name in spans)
    return (
        select(*(table.c[name] for name in returned))
        .select_from(source)
        .join(table, and_(key == source.c.key, end >= source.c.lo, start < source.c.hi))
    )


def update_rows(
    session: Session,
    table: Table,
    match: Sequence[str],
    changes: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
) -> int:
    """Update each row of `table` whose `match` columns equal a tuple's first values, setting
    its `changes` columns to the tuple's last; returns how many rows changed. On PostgreSQL
    in one statement: the tuples travel as arrays, unnested by the server and joined to the
    table (by its index, in their order, for a few; a deadlock that another join order
    brings is retried); elsewhere, executemany."""
    if not rows:
        return 0
    connection = session.connection()
    stmt, names = _update_statement(connection.dialect.name, table, tuple(match), tuple(changes))
    if connection.dialect.name == "postgresql":
        arrays = zip(names, map(list, zip(*rows, strict=True)), strict=True)
        return connection.execute(stmt, dict(arrays)).rowcount
    return connection.execute(stmt, [dict(zip(names, row, strict=True)) for row in rows]).rowcount


@functools.cache
def _update_statement(
    dialect: str, table: Table, match: tuple[str, ...], changes: tuple[str, ...]
) -> tuple[Any, list[str]]:
    """The statement, and the names its values are bound by, in the tuples' order."""
    array = dialect == "postgresql"
    columns = [*match, *changes]
    names = [f"match_{c}" for c in match] + [f"set_{c}" for c in changes]
    params: list[Any] = [
        bindparam(name, type_=postgresql.ARRAY(table.c[c].type) if array else table.c[c].type)
        for name, c in zip(names, columns, strict=True)
    ]
    if array:
        unnested = func.unnest(*params).table_valued(*names).render_derived(name="v")
        params = [unnested.c[name] for name in names]
    stmt = (
        update(table)
        .where(*(table.c[c] == param for c, param in zip(match, params, strict=False)))
        .values(dict(zip(changes, params[len(match) :], strict=True)))
    )
    return stmt, names
