"""The ids of rows that never change key, remembered by the process that found them."""

import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Table
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.db import RaceLost, refers_to_nothing
from app.core.upsert import get_or_create_committed


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
            stored, committed = get_or_create_committed(session, table, keys, unknown, ("id",))
            if len(known) + len(committed) > self.LIMIT:
                known.clear()
            for key, found in stored.items():
                ids[key] = found.id
                if key in committed:
                    known[key] = found.id
        return ids
