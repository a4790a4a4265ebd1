"""Set-based get-or-create and upsert statements that work on PostgreSQL and SQLite alike."""

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, CursorResult, Table, any_, bindparam, func, select
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


def matching(
    session: Session, column: ColumnElement[Any], values: Sequence[Any]
) -> Iterator[ColumnElement[bool]]:
    """Conditions `column IN values` that together cover every value: on PostgreSQL one array
    parameter (`= ANY`), so that the statement's text, and its parsing, stay the same
    whatever the count; elsewhere in chunks below the limit on bound parameters."""
    if session.get_bind().dialect.name == "postgresql":
        yield column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
        return
    for part in chunks(values):
        yield column.in_(part)


def insert_many(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    finish: Callable[[Any], Any] = lambda stmt: stmt,
) -> CursorResult[Any]:
    """Insert `rows` (dicts with the same keys) in one statement, `finish` adding its
    `on_conflict` and `returning` clauses. On PostgreSQL each column travels as one array,
    unnested by the server, instead of a placeholder per value to be parsed."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        names = list(rows[0])
        arrays = [
            bindparam(None, [row[name] for row in rows], type_=postgresql.ARRAY(table.c[name].type))
            for name in names
        ]
        source = func.unnest(*arrays).table_valued(*names).render_derived()
        stmt = postgresql.insert(table).from_select(names, select(*source.c))
        return connection.execute(finish(stmt))
    return connection.execute(finish(dialect_insert(session, table)), list(rows))


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
            same = [column == value for column, value in zip(key_cols, prefix, strict=False)]
            for where in matching(session, key_cols[-1], lasts):
                query = select(table.c.id, *key_cols).where(*same, where)
                for row in session.connection().execute(query):
                    found[tuple(row[1:])] = row[0]
        return found

    ids = lookup(list(wanted))
    missing = [row for key, row in sorted(wanted.items()) if key not in ids]
    if missing:
        stmt = dialect_insert(session, table).on_conflict_do_nothing(index_elements=key_cols)
        session.connection().execute(stmt, missing)
        ids.update(lookup([key for key in wanted if key not in ids]))
    return ids
