"""Set-based get-or-create and upsert statements that work on PostgreSQL and SQLite alike."""

import functools
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Row,
    Table,
    and_,
    any_,
    bindparam,
    column,
    func,
    insert,
    literal_column,
    select,
    true,
    update,
    values,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from app.core.db import RaceLost, refers_to_nothing

T = TypeVar("T")
# Keys per look-up: far below both backends' limits on bound parameters in one statement.
CHUNK = 1000


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for first in range(0, len(items), size):
        yield items[first : first + size]


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
    stored, _ = _get_or_create(session, table, keys, rows, returned, absent=absent)
    return stored


def _get_or_create(
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


class KnownIds:
    """The ids of rows whose key never changes and that are never deleted (clusters, nodes,
    jobs), as this process found them: only rows already committed when looked up, so that
    no id of a transaction rolled back is ever remembered. Per table, at most `LIMIT` keys;
    past that, it starts over."""

    LIMIT = 200_000

    def __init__(self) -> None:
        self._ids: dict[str, dict[tuple[Any, ...], int]] = defaultdict(dict)
        self._served = threading.local()  # whether this thread's work used a remembered id

    @contextmanager
    def in_use(self) -> Iterator[None]:
        """Work in this thread that takes its ids from here. A key that names no row, in work
        that took a remembered id, is an id from a database since restored or emptied under
        the process: every id is forgotten and `RaceLost` raised, so that the work, run
        again (commit_with_retry), looks every id up. Other errors are what they are."""
        self._served.any = False
        try:
            yield
        except IntegrityError as exc:
            if refers_to_nothing(exc) and self._served.any:
                self._ids = defaultdict(dict)
                raise RaceLost("a remembered id names no row") from exc
            raise

    def get_or_create(
        self, session: Session, model: Any, keys: Sequence[str], rows: Sequence[dict[str, Any]]
    ) -> dict[tuple[Any, ...], int]:
        """Map each row's key to its id, inserting the rows that do not exist yet; keys
        known already cost no statement."""
        table: Table = model.__table__
        known = self._ids[table.name]
        ids: dict[tuple[Any, ...], int] = {}
        unknown = []
        for row in rows:
            key = tuple(row[k] for k in keys)
            pk = known.get(key)
            if pk is None:
                unknown.append(row)
            else:
                ids[key] = pk
                self._served.any = True
        if unknown:
            stored, committed = _get_or_create(session, table, keys, unknown, ("id",))
            if len(known) + len(committed) > self.LIMIT:
                known.clear()
            for key, found in stored.items():
                ids[key] = found.id
                if key in committed:
                    known[key] = found.id
        return ids


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
