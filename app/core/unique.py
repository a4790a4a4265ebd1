"""Concurrent admin writes decided by the database, not by a look-up before the write.

Two requests creating the same thing at once (the same job, rate or closed month) must not
both believe they did: a look-up before the insert sees nothing in either transaction. The
insert itself decides. On PostgreSQL an insert meeting an uncommitted row of the same key
waits for that transaction and then does nothing if it committed; on SQLite writers take
turns (`BEGIN IMMEDIATE`), so the second sees the first's row.

Where a rule spans rows that no key covers (months close one after another), transactions
take turns: on PostgreSQL through a transaction-scoped advisory lock, on SQLite as they
already do.
"""

import hashlib
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.upsert import insert_many


def insert_unless_present(session: Session, model: Any, row: dict[str, Any]) -> bool:
    """Insert `row` into `model`'s table unless a row with any of its unique keys exists;
    True if this call inserted it."""
    return insert_many(session, model.__table__, [row], _returning_new).first() is not None


def _returning_new(stmt: Any) -> Any:
    # RETURNING, not the row count: psycopg reports -1 for an INSERT ... SELECT.
    return stmt.on_conflict_do_nothing().returning(*stmt.table.primary_key.columns)


def take_turns(session: Session, name: str) -> None:
    """Wait until no other transaction holds the turn `name`, then hold it until this
    transaction ends. Statements after it see what the previous holder committed."""
    if session.connection().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        session.execute(select(func.pg_advisory_xact_lock(key)))
