"""Inserting many plain rows at once: `COPY` on PostgreSQL, one multi-row insert elsewhere,
failing as SQLAlchemy's own statements fail."""

from collections.abc import Sequence
from typing import Any

import psycopg
from sqlalchemy import Table, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session


def insert_rows(
    session: Session, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Insert plain rows (tuples in `columns` order), nothing returned: `COPY` on PostgreSQL,
    one multi-row insert elsewhere."""
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        connection.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])
        return
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as exc:
        # As SQLAlchemy's own statements fail: its exception classes (a deadlock is retried,
        # a refused value is the client's), a lost connection invalidated.
        dialect = connection.dialect
        lost = dialect.is_disconnect(exc, connection.connection, cursor)  # type: ignore[arg-type]
        if lost:
            connection.invalidate(exc)
        raise DBAPIError.instance(
            statement, None, exc, psycopg.Error, connection_invalidated=lost
        ) from exc
