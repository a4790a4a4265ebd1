"""Set-based get-or-create and upsert statements that work on PostgreSQL and SQLite alike."""

import functools
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import CursorResult, Row, Table, any_, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

T = TypeVar("T")
# Keys per look-up: far below both backends' limits on bound parameters in one statement.
CHUNK = 1000


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for first in range(0, len(items), size):
        yield items[first : first + size]


def dialect_insert(session: Session, table: Any) -> Any:
    """`INSERT` with `on_conflict_do_*` for the session's backend."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database backend: {name}")


def select_where_in(
    session: Session,
    table: Table,
    returned: tuple[str, ...],
    keys: tuple[str, ...],
    prefix: tuple[Any, ...],
    values: Sequence[Any],
) -> Iterator[Row[Any]]:
    """Rows of `table` (columns `returned`) whose `keys` are `prefix` followed by any of
    `values`. On PostgreSQL the values travel as one array (`= ANY`), so that the statement,
    built once, and its parsing stay the same whatever the count; elsewhere in chunks below
    the limit on bound parameters."""
    connection = session.connection()
    stmt = _select_statement(connection.dialect.name, table, returned, keys)
    same = {f"key_{name}": value for name, value in zip(keys, prefix, strict=False)}
    dialect_chunks = [values] if connection.dialect.name == "postgresql" else chunks(values)
    for part in dialect_chunks:
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


def as_is(stmt: Any) -> Any:
    return stmt


def insert_many(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    finish: Callable[[Any], Any] = as_is,
) -> CursorResult[Any]:
    """Insert `rows` (dicts with the same keys) in one statement, `finish` adding its
    `on_conflict` and `returning` clauses. On PostgreSQL each column travels as one array,
    unnested by the server, instead of a placeholder per value to be parsed.

    `finish` is a module-level function: the statement is built once per table, columns and
    `finish`, then only executed with new values."""
    connection = session.connection()
    names = tuple(rows[0])
    stmt = _insert_statement(connection.dialect.name, table, names, finish)
    if connection.dialect.name == "postgresql":
        return connection.execute(
            stmt, {f"all_{name}": [row[name] for row in rows] for name in names}
        )
    return connection.execute(stmt, list(rows))


@functools.cache
def _insert_statement(
    dialect: str, table: Table, names: tuple[str, ...], finish: Callable[[Any], Any]
) -> Any:
    if dialect == "postgresql":
        arrays = [
            bindparam(f"all_{name}", type_=postgresql.ARRAY(table.c[name].type)) for name in names
        ]
        source = func.unnest(*arrays).table_valued(*names).render_derived()
        return finish(postgresql.insert(table).from_select(list(names), select(*source.c)))
    if dialect == "sqlite":
        return finish(sqlite.insert(table))
    raise RuntimeError(f"unsupported database backend: {dialect}")


def get_or_create_ids(
    session: Session, model: Any, keys: Sequence[str], rows: Sequence[dict[str, Any]]
) -> dict[tuple[Any, ...], int]:
    """Map each row's key to its id, inserting the rows that do not exist yet.

    Safe against a concurrent insert of the same key: ours then does nothing and the
    second look-up finds the other transaction's row.
    """
    table: Table = model.__table__
    key_cols = [table.c[k] for k in keys]
    wanted = {tuple(row[k] for k in keys): row for row in rows}

    def lookup(key_values: Sequence[tuple[Any, ...]]) -> dict[tuple[Any, ...], int]:
        # Keys grouped by all but their last column (a batch's nodes share their cluster):
        # one look-up per group, matching the last column against a list.
        groups: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
        for key in key_values:
            groups[key[:-1]].append(key[-1])
        found: dict[tuple[Any, ...], int] = {}
        for prefix, lasts in groups.items():
            for row in select_where_in(session, table, ("id", *keys), tuple(keys), prefix, lasts):
                found[tuple(row[1:])] = row[0]
        return found

    ids = lookup(list(wanted))
    missing = [row for key, row in sorted(wanted.items()) if key not in ids]
    if missing:
        stmt = dialect_insert(session, table).on_conflict_do_nothing(index_elements=key_cols)
        session.connection().execute(stmt, missing)
        ids.update(lookup([key for key in wanted if key not in ids]))
    return ids
