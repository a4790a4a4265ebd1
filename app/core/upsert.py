"""Set-based insert, get-or-create and upsert statements that work on PostgreSQL and SQLite
alike."""

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, CursorResult, Row, Table, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.core.rows import find_rows


def as_is(stmt: Any) -> Any:
    return stmt


def adding_on_conflict(
    table: Table, keys: Sequence[str], where: ColumnElement[bool], sums: Sequence[str]
) -> Callable[[Any], Any]:
    """A `finish` for `insert_many` that adds each row's `sums` to the stored row holding
    its `keys` (a unique index over the rows matching `where`). Build it once, at import:
    `insert_many` builds a statement once per `finish`."""

    def finish(stmt: Any) -> Any:
        return stmt.on_conflict_do_update(
            index_elements=list(keys),
            index_where=where,
            set_={name: table.c[name] + stmt.excluded[name] for name in sums},
        )

    return finish


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


def get_or_create(
    session: Session,
    table: Table,
    keys: Sequence[str],
    rows: Sequence[dict[str, Any]],
    returned: Sequence[str] = ("id",),
    *,
    absent: bool = False,
) -> dict[tuple[Any, ...], Row[Any]]:
    """Map each row's key to its stored row (columns `returned`), inserting the rows that do
    not exist yet (`absent`: the caller has just looked and found none of them).

    Safe against a concurrent insert of the same key: ours then does nothing, and a second
    look-up finds the other transaction's row.
    """
    stored, _ = get_or_create_committed(session, table, keys, rows, returned, absent=absent)
    return stored


def get_or_create_committed(
    session: Session,
    table: Table,
    keys: Sequence[str],
    rows: Sequence[dict[str, Any]],
    returned: Sequence[str],
    *,
    absent: bool = False,
) -> tuple[dict[tuple[Any, ...], Row[Any]], set[tuple[Any, ...]]]:
    """get_or_create, and the keys of the rows it found committed before it looked (those
    it did not insert or find inserted meanwhile)."""
    wanted = {tuple(row[k] for k in keys): row for row in rows}
    columns = (*returned, *keys)

    def by_key(found: Iterable[Row[Any]]) -> dict[tuple[Any, ...], Row[Any]]:
        return {tuple(row[len(returned) :]): row for row in found}

    stored = {} if absent else by_key(find_rows(session, table, columns, keys, wanted))
    committed = set(stored)
    missing = [row for key, row in sorted(wanted.items()) if key not in stored]
    if missing:
        # The rows inserted come back; those another transaction inserted first are found.
        inserted = insert_many(session, table, missing, _unless_present(columns, len(returned)))
        stored.update(by_key(inserted))
        others = [key for key in wanted if key not in stored]
        if others:
            stored.update(by_key(find_rows(session, table, columns, keys, others)))
    return stored, committed


def get_or_create_ids(
    session: Session, model: Any, keys: Sequence[str], rows: Sequence[dict[str, Any]]
) -> dict[tuple[Any, ...], int]:
    """Map each row's key to its id, inserting the rows that do not exist yet."""
    return {key: row.id for key, row in get_or_create(session, model.__table__, keys, rows).items()}


@functools.cache
def _unless_present(columns: tuple[str, ...], keys_from: int) -> Callable[[Any], Any]:
    # One function per columns (those returned, then the key's from `keys_from` on), so that
    # `insert_many` builds each statement once.
    def finish(stmt: Any) -> Any:
        returning = [stmt.table.c[name] for name in columns]
        keys = list(columns[keys_from:])
        return stmt.on_conflict_do_nothing(index_elements=keys).returning(*returning)

    return finish
