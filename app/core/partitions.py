"""Monthly partitions of raw usage on PostgreSQL, so that pruning drops whole months.

Raw usage is range-partitioned by `period_start`, one partition a UTC month
(`usage_p2025_01`), with a default partition for anything outside them. `ensure_partitions`
creates the current month and the next three, and a month for any rows that landed in the
default partition (moving them in); `gpucost db upgrade`, `gpucost serve` and
`gpucost db prune` run it; a prune drops the months it emptied. SQLite keeps one plain
table.
"""

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from app.core.calendar import floor_month, next_month_start
from app.core.timestamps import as_utc

MONTHS_AHEAD = 3
# How long a prune waits for raw usage to be free of other transactions before it drops
# the months it emptied.
LOCK_WAIT = "5s"
LOCK_NOT_AVAILABLE = "55P03"


def is_partition(table_name: str) -> bool:
    """A partition of raw usage (monthly or default): kept by this module, not by Alembic."""
    return (
        table_name == "usage_default" or re.fullmatch(r"usage_p\d{4}_\d{2}", table_name) is not None
    )


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic's filter: partitions and their indexes are not part of the model."""
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
    return not (table and is_partition(table))


def partition_name(month: datetime) -> str:
    return f"usage_p{month.year:04d}_{month.month:02d}"


def is_partitioned(connection: Connection) -> bool:
    if connection.dialect.name != "postgresql":
        return False
    query = text("SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass('usage')")
    return connection.execute(query).first() is not None


def existing_partitions(connection: Connection) -> dict[datetime, str]:
    """Monthly partitions by their first instant (the default partition is not one)."""
    rows = connection.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass('usage') AND c.relname ~ '^usage_p[0-9]{4}_[0-9]{2}$'"
        )
    ).scalars()
    return {datetime(int(n[7:11]), int(n[12:14]), 1, tzinfo=UTC): n for n in rows}


def create_partition(connection: Connection, month: datetime) -> str:
    """Create a month's partition, moving into it any of its rows the default partition holds."""
    name, lower, upper = partition_name(month), month, next_month_start(month)
    bounds = {"lower": lower, "upper": upper}
    connection.execute(text(f"CREATE TABLE {name} (LIKE usage INCLUDING DEFAULTS)"))
    connection.execute(
        text(
            f"WITH moved AS (DELETE FROM usage_default WHERE period_start >= :lower"
            f" AND period_start < :upper RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        ),
        bounds,
    )
    connection.execute(
        text(
            f"ALTER TABLE usage ATTACH PARTITION {name} FOR VALUES FROM"
            f" ('{lower.isoformat()}') TO ('{upper.isoformat()}')"
        )
    )
    return name


def ensure_partitions(connection: Connection, now: datetime) -> list[str]:
    """Partitions for this month, the next ones, and any month found in the default partition."""
    if not is_partitioned(connection):
        return []
    have = existing_partitions(connection)
    wanted = {floor_month(as_utc(now))}
    for _ in range(MONTHS_AHEAD):
        wanted.add(next_month_start(max(wanted)))
    stray = connection.execute(
        text("SELECT DISTINCT date_trunc('month', period_start, 'UTC') FROM usage_default")
    ).scalars()
    wanted.update(floor_month(moment.astimezone(UTC)) for moment in stray)
    return [create_partition(connection, month) for month in sorted(wanted - set(have))]


def drop_partitions_before(connection: Connection, cutoff: datetime) -> list[str]:
    """Drop every monthly partition that ends at or before `cutoff` and holds no row: an
    emptied month's space back at once. Raw usage itself is locked first, as a drop locks
    it, and as every reader and writer of raw usage locks it before a partition, so none can
    deadlock with the drop; waiting at most `LOCK_WAIT` for it: busy, the months are left
    for the next prune. Locked, an empty partition stays empty."""
    partitions = sorted(existing_partitions(connection).items())
    old = [name for month, name in partitions if next_month_start(month) <= cutoff]
    if not old:
        return []
    try:
        with connection.begin_nested():
            connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
            connection.execute(text("LOCK TABLE usage IN ACCESS EXCLUSIVE MODE"))
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
            return []
        raise
    dropped = []
    for name in old:
        if connection.execute(text(f"SELECT EXISTS (SELECT FROM {name})")).scalar_one():
            continue
        connection.execute(text(f"DROP TABLE {name}"))
        dropped.append(name)
    return dropped
