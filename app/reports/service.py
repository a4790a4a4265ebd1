"""Accepting collector reports, many at once: idempotency, raw usage rows and the hourly
rollup, in a fixed number of statements per batch whatever its size."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import psycopg
from sqlalchemy import Table, insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.core.errors import AppError, Conflict, InvalidInput
from app.core.upsert import find_rows, insert_many
from app.models import PruneMark, Report, Usage
from app.reports import identities
from app.reports.entries import Entry, normalize, payload_digest
from app.reports.rollup import HourlyTotals
from app.reports.schemas import ReportIn

USAGE_COLUMNS = (
    "report_id",
    "gpu_id",
    "job_id",
    "period_start",
    "gpu_us",
    "busy_us",
    "util_pct",
    "energy_mj",
    "mem_peak_bytes",
)


REPORTS = cast(Table, Report.__table__)
PRUNE_MARK = select(PruneMark.__table__.c.pruned_before)


@dataclass(frozen=True)
class Stored:
    report_id: int
    duplicate: bool


Outcome = Stored | AppError


@dataclass
class _Pending:
    index: int
    report: ReportIn
    entries: list[Entry]
    digest: str
    cluster_pk: int = 0
    node_pk: int = 0


def ingest_reports(
    session: Session, *, reports: Sequence[ReportIn], received_at: datetime
) -> list[Outcome]:
    """Store each report once, all in the session's transaction, and say what became of each:
    stored, a duplicate of a stored report (a resend), or an error of its own (a report older
    than pruned raw usage; the same (node, seq) stored with other content)."""
    outcomes: list[Outcome | None] = [None] * len(reports)
    mark = session.connection().execute(PRUNE_MARK).scalar_one_or_none()
    pending: list[_Pending] = []
    for index, report in enumerate(reports):
        if mark is not None and report.start < mark:
            outcomes[index] = InvalidInput(
                "start",
                f"{report.start.isoformat()} is before {mark.isoformat()}, where raw usage was "
                "pruned: a report that old cannot be told from a resend",
            )
            continue
        entries = normalize(report)
        pending.append(_Pending(index, report, entries, payload_digest(report, entries)))
    if pending:
        _identify_nodes(session, pending, seen=received_at)
        new = _claim(session, pending, outcomes, received_at=received_at)
        if new:
            _store_usage(session, new, received_at=received_at)
    assert all(outcome is not None for outcome in outcomes)
    return outcomes  # type: ignore[return-value]


def _identify_nodes(session: Session, pending: list[_Pending], *, seen: datetime) -> None:
    clusters = identities.cluster_ids(session, names=(p.report.cluster for p in pending), seen=seen)
    # A new node starts from its earliest interval end in the batch: the reports stored
    # (not those refused as conflicts) move it on.
    earliest: dict[tuple[int, str], datetime] = {}
    for p in pending:
        p.cluster_pk = clusters[p.report.cluster]
        key = (p.cluster_pk, p.report.node)
        earliest[key] = min(earliest.get(key, p.report.end), p.report.end)
    nodes = identities.node_ids(session, nodes=earliest, seen=seen)
    for p in pending:
        p.node_pk = nodes[(p.cluster_pk, p.report.node)]


def _claim(
    session: Session,
    pending: list[_Pending],
    outcomes: list[Outcome | None],
    *,
    received_at: datetime,
) -> list[tuple[_Pending, int]]:
    """Insert the report rows; the unique (node, seq) key decides, inside the database, which
    request stores a report. The reports this batch stored, with their ids."""
    first: dict[tuple[int, int], _Pending] = {}
    for p in pending:
        first.setdefault((p.node_pk, p.report.seq), p)
    rows = [
        {
            "node_id": p.node_pk,
            "seq": p.report.seq,
            "period_start": p.report.start,
            "period_end": p.report.end,
            "received_at": received_at,
            "payload_sha256": p.digest,
            "entries": len(p.entries),
        }
        for _, p in sorted(first.items())
    ]
    claimed = insert_many(session, REPORTS, rows, _unless_claimed)
    created = {(row.node_id, row.seq): row.id for row in claimed}
    stored = {key: (pk, first[key].digest) for key, pk in created.items()}
    older = [key for key in first if key not in created]
    returned = ("id", "node_id", "seq", "payload_sha256")
    for row in find_rows(session, REPORTS, returned, ("node_id", "seq"), older):
        stored[(row.node_id, row.seq)] = (row.id, row.payload_sha256)

    new = []
    for p in pending:
        key = (p.node_pk, p.report.seq)
        pk, digest = stored[key]
        if digest != p.digest:
            outcomes[p.index] = Conflict(
                f"report {p.report.cluster}/{p.report.node} seq {p.report.seq} was already "
                "stored with different content"
            )
        elif key in created and first[key] is p:
            outcomes[p.index] = Stored(report_id=pk, duplicate=False)
            new.append((p, pk))
        else:
            outcomes[p.index] = Stored(report_id=pk, duplicate=True)
    return new


def _unless_claimed(stmt: Any) -> Any:
    # Rows the unique (node, seq) key refuses are another transaction's: not returned.
    return stmt.on_conflict_do_nothing(index_elements=["node_id", "seq"]).returning(
        REPORTS.c.id, REPORTS.c.node_id, REPORTS.c.seq
    )


def _store_usage(
    session: Session, new: list[tuple[_Pending, int]], *, received_at: datetime
) -> None:
    ends: dict[int, datetime] = {}
    placements: dict[str, identities.Placement] = {}
    spans: dict[tuple[int, str], tuple[datetime, datetime]] = {}
    for p, _ in new:
        report = p.report
        ends[p.node_pk] = max(ends.get(p.node_pk, report.end), report.end)
        # Reports are applied in order: a GPU's latest report says where it is.
        placements.update(identities.placements_of(p.entries, p.node_pk))
        for e in p.entries:
            if e.job_id is not None:
                key = (p.cluster_pk, e.job_id)
                first, last = spans.get(key, (report.start, report.end))
                spans[key] = (min(first, report.start), max(last, report.end))
    identities.mark_nodes_seen(session, ends=ends, seen=received_at)
    gpus = identities.gpu_ids(session, placements=placements, seen=received_at)
    jobs = identities.job_ids(session, spans=spans, now=received_at)

    rows: list[tuple[Any, ...]] = []
    totals = HourlyTotals()
    for p, report_pk in new:
        start = p.report.start
        attributed = [
            (e, jobs[(p.cluster_pk, e.job_id)] if e.job_id is not None else 0) for e in p.entries
        ]
        rows.extend(
            (
                report_pk,
                gpus[e.uuid],
                job_pk or None,
                start,
                e.gpu_us,
                e.busy_us,
                float(e.util_pct),
                e.energy_mj,
                e.mem_peak_bytes,
            )
            for e, job_pk in attributed
        )
        totals.add(cluster_pk=p.cluster_pk, start=start, end=p.report.end, entries=attributed)
    _insert_usage(session, rows)
    # Last, the rows other transactions update too (a job's span, its hourly sums): their
    # locks are held from here to the commit only.
    identities.widen_spans(session, {jobs[key]: span for key, span in spans.items()})
    totals.store(session)


def _insert_usage(session: Session, rows: list[tuple[Any, ...]]) -> None:
    """Raw usage rows: `COPY` on PostgreSQL, one multi-row insert elsewhere."""
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        statement = f"COPY usage ({', '.join(USAGE_COLUMNS)}) FROM STDIN"
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            with cursor.copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)
        except psycopg.Error as exc:
            # As SQLAlchemy's own statements fail: its exception classes (a deadlock is
            # retried, a refused value is the client's), a lost connection invalidated.
            dialect = connection.dialect
            lost = dialect.is_disconnect(exc, connection.connection, cursor)  # type: ignore[arg-type]
            if lost:
                connection.invalidate(exc)
            raise DBAPIError.instance(
                statement, None, exc, psycopg.Error, connection_invalidated=lost
            ) from exc
        return
    connection.execute(insert(Usage), [dict(zip(USAGE_COLUMNS, row, strict=True)) for row in rows])
