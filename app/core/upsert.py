"""Set-based get-or-create and upsert statements that work on PostgreSQL and SQLite alike."""

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Table, any_, bindparam, select, tuple_
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
        if len(key_cols) == 1:
            wheres = matching(session, key_cols[0], [k[0] for k in key_values])
        else:
            wheres = (tuple_(*key_cols).in_(list(part)) for part in chunks(key_values))
        found: dict[tuple[Any, ...], int] = {}
        for where in wheres:
            for row in session.connection().execute(select(table.c.id, *key_cols).where(where)):
                found[tuple(row[1:])] = row[0]
        return found

    ids = lookup(list(wanted))
    missing = [row for key, row in sorted(wanted.items()) if key not in ids]
    if missing:
        stmt = dialect_insert(session, table).on_conflict_do_nothing(index_elements=key_cols)
        session.connection().execute(stmt, missing)
        ids.update(lookup([key for key in wanted if key not in ids]))
    return ids
