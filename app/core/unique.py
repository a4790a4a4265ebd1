"""Inserts that the database's unique keys decide between concurrent requests.

Two requests creating the same thing at once (the same job, rate or closed month) must not
both believe they did: a look-up before the insert sees nothing in either transaction. The
insert itself decides. On PostgreSQL an insert meeting an uncommitted row of the same key
waits for that transaction and then does nothing if it committed; on SQLite writers take
turns (`BEGIN IMMEDIATE`), so the second sees the first's row.
"""

from typing import Any

from sqlalchemy.orm import Session

from app.core.upsert import insert_many


def insert_unless_present(session: Session, model: Any, row: dict[str, Any]) -> bool:
    """Insert `row` into `model`'s table unless a row with any of its unique keys exists;
    True if this call inserted it."""
    return insert_many(session, model.__table__, [row], _returning_new).first() is not None


def _returning_new(stmt: Any) -> Any:
    # RETURNING, not the row count: psycopg reports -1 for an INSERT ... SELECT.
    return stmt.on_conflict_do_nothing().returning(*stmt.table.primary_key.columns)
