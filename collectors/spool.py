"""The durable spool: SQLite in WAL mode with synchronous=FULL (fsync on every commit).

A report is written here with its sequence number before it is sent and deleted only when
the service acknowledges it. The open interval is saved with each sample in the same file,
so a crash at any point loses no measured time. `attempted` marks reports that may have
reached the service: those are never coalesced, since the service may already hold them.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

# The path of a spool made by `Spool.in_memory()`.
IN_MEMORY = Path(":memory:")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reports (
    seq INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    spooled_wall_ns INTEGER NOT NULL,
    attempted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    http_status INTEGER,
    error TEXT NOT NULL,
    dead_wall_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending'
);
"""


@dataclass(frozen=True)
class SpooledReport:
    seq: int
    # The report as spooled, JSON: sent as it is, read only when needed.
    text: str
    spooled_wall_ns: int
    attempted: bool

    @functools.cached_property
    def body(self) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(self.text))


def _report_text(body: dict[str, Any], seq: int) -> str:
    # Compact: this text is what the sender puts on the wire.
    return json.dumps({**body, "seq": seq}, separators=(",", ":"))


class Spool:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    @classmethod
    def in_memory(cls) -> Spool:
        """A spool in memory, lost with its process, whose steps may run on any thread (one at
        a time): for simulated nodes, which never crash."""
        spool = cls.__new__(cls)
        spool.path = IN_MEMORY
        spool._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        spool._db.executescript(_SCHEMA)
        return spool

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- the open interval -----------------------------------------------------------------
    def load_state(self) -> dict[str, Any] | None:
        raw = self._meta("open_interval")
        return None if raw is None else json.loads(raw)

    def save_state(self, state: dict[str, Any]) -> None:
        with self._transaction() as db:
            self._set_meta(db, "open_interval", json.dumps(state))

    def clear_state(self) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM meta WHERE key = 'open_interval'")

    # -- reports ---------------------------------------------------------------------------
    def add_report(
        self, body: dict[str, Any], *, wall_ns: int, state: dict[str, Any] | None
    ) -> int:
        """Give the report the next sequence number and store it, with the new open interval."""
        with self._transaction() as db:
            seq = int(self._meta("next_seq") or 1)
            db.execute(
                "INSERT INTO reports (seq, body, spooled_wall_ns) VALUES (?, ?, ?)",
                (seq, _report_text(body, seq), wall_ns),
            )
            self._set_meta(db, "next_seq", str(seq + 1))
            if state is not None:
                self._set_meta(db, "open_interval", json.dumps(state))
        return seq

    def pending(self, limit: int, *, unattempted_only: bool = False) -> list[SpooledReport]:
        """Unsent reports, oldest first."""
        where = "WHERE attempted = 0" if unattempted_only else ""
        rows = self._db.execute(
            f"SELECT seq, body, spooled_wall_ns, attempted FROM reports {where} "
            "ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [SpooledReport(s, b, w, bool(a)) for s, b, w, a in rows]

    def mark_attempted(self, seqs: list[int], attempted: bool = True) -> None:
        with self._transaction() as db:
            db.executemany(
                "UPDATE reports SET attempted = ? WHERE seq = ?",
                [(int(attempted), s) for s in seqs],
            )

    def acknowledge(self, seqs: list[int]) -> None:
        with self._transaction() as db:
            db.executemany("DELETE FROM reports WHERE seq = ?", [(s,) for s in seqs])

    def dead_letter(self, seq: int, *, http_status: int | None, error: str, wall_ns: int) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO dead_letters (seq, body, http_status, error, dead_wall_ns) "
                "SELECT seq, body, ?, ?, ? FROM reports WHERE seq = ?",
                (http_status, error, wall_ns, seq),
            )
            db.execute("DELETE FROM reports WHERE seq = ?", (seq,))

    def replace_reports(self, seqs: list[int], body: dict[str, Any], *, wall_ns: int) -> None:
        """Swap never-sent reports for one that takes the smallest of their sequence numbers."""
        seq = min(seqs)
        with self._transaction() as db:
            db.executemany("DELETE FROM reports WHERE seq = ?", [(s,) for s in seqs])
            db.execute(
                "INSERT INTO reports (seq, body, spooled_wall_ns) VALUES (?, ?, ?)",
                (seq, _report_text(body, seq), wall_ns),
            )

    def dead_letters(self) -> list[tuple[int, int | None, str]]:
        return self._db.execute(
            "SELECT seq, http_status, error FROM dead_letters ORDER BY seq"
        ).fetchall()

    def depth(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM reports").fetchone()[0])

    def size_bytes(self) -> int:
        return int(
            self._db.execute("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM reports").fetchone()[0]
        )

    def oldest_spooled_wall_ns(self) -> int | None:
        row = self._db.execute("SELECT MIN(spooled_wall_ns) FROM reports").fetchone()
        return None if row[0] is None else int(row[0])

    # -- job metadata to register with the service -----------------------------------------
    def add_job(self, job_id: str, body: dict[str, str]) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO jobs (job_id, body) VALUES (?, ?)",
                (job_id, json.dumps(body)),
            )

    def pending_jobs(self) -> list[tuple[str, dict[str, str]]]:
        rows = self._db.execute(
            "SELECT job_id, body FROM jobs WHERE state = 'pending' ORDER BY rowid"
        ).fetchall()
        return [(j, json.loads(b)) for j, b in rows]

    def set_job_state(self, job_id: str, state: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET state = ? WHERE job_id = ?", (state, job_id))
