"""Set-based get-or-create and upsert statements that work on PostgreSQL and SQLite alike."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def dialect_insert(session: Session, table: Any) -> Any:
    """`INSERT` with `on_conflict_do_*` for the session's backend."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database backend: {name}")


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
            where = key_cols[0].in_([k[0] for k in key_values])
        else:
            where = tuple_(*key_cols).in_(list(key_values))
        found = session.execute(select(table.c.id, *key_cols).where(where)).all()
        return {tuple(r[1:]): r[0] for r in found}

    ids = lookup(list(wanted))
    missing = [row for key, row in sorted(wanted.items()) if key not in ids]
    if missing:
        stmt = dialect_insert(session, table).on_conflict_do_nothing(index_elements=key_cols)
        session.execute(stmt, missing)
        ids.update(lookup([key for key in wanted if key not in ids]))
    return ids
