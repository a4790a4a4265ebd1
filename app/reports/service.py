"""Accepting collector reports: the one way in, from both report routes and the group commit.

`Ingest.check` refuses what a report's sender or its own content rules out (another cluster's
report, a limit of app.reports._checks), before it waits for a transaction. `Ingest.store_reports`
stores reports in one transaction of its own, run again after a deadlock or a lost race
(app.core.db.commit_with_retry): idempotency, raw usage rows and the hourly rollup in a fixed
number of statements whatever the count, each report refused on its own when older than pruned
raw usage, in conflict with a stored one or counting GPU time already counted. The batch route
calls both (`store_batch`); a single report is checked, then waits in the group commit
(app.reports._group_commit), which calls `store_reports` for the reports that go together.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Row, Table, delete, select
from sqlalchemy.orm import Session

from app.audit.service import record
from app.core.auth import Principal
from app.core.bulk_insert import insert_rows
from app.core.config import Settings
from app.core.db import Database, RaceLost, commit_with_retry
from app.core.errors import AppError, Conflict, InvalidInput
from app.core.known_ids import KnownIds
from app.core.rows import find_rows
from app.core.upsert import insert_many
from app.models import USAGE, PruneMark, Report
from app.reports import _identities as identities
from app.reports import _occupancy as occupancy
from app.reports._checks import check_report
from app.reports._entries import payload_digest
from app.reports._group_commit import GroupCommit
from app.reports.schemas import ReportIn
from app.totals.store import Totals

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


class Ingest:
    """An app's way in for reports: its database, the ids it remembers, its settings and
    clock, and the group commit of its single reports."""

    def __init__(
        self,
        database: Database,
        known: KnownIds,
        *,
        settings: Settings,
        clock: Callable[[], datetime],
        max_reports: int,
    ) -> None:
        self.database = database
        self.known = known
        self.settings = settings
        self.clock = clock
        self.group_commit: GroupCommit[Outcome] = GroupCommit(
            self.store_reports, max_reports=max_reports, gather=settings.ingest_gather_seconds
        )

    def check(self, principal: Principal, report: ReportIn) -> None:
        """Refuse (raise) a report its sender may not send, or that breaks a limit."""
        principal.require_cluster(report.cluster)
        check_report(report, settings=self.settings, now=self.clock())

    async def store_report(self, principal: Principal, report: ReportIn) -> Outcome:
        """Check one report (raising its refusal) and store it in the group commit's next
        transaction; raises what storing that transaction raised."""
        self.check(principal, report)
        return await self.group_commit.submit(report)

    def store_batch(
        self, principal: Principal, reports: Sequence[ReportIn | None]
    ) -> list[Outcome | None]:
        """Check each report and store those that pass in one transaction; each one's
        outcome, its refusal, or None where the caller had none to give (not valid)."""
        outcomes: list[Outcome | None] = [None] * len(reports)
        passed: list[tuple[int, ReportIn]] = []
        for index, report in enumerate(reports):
            if report is None:
                continue
            try:
                self.check(principal, report)
            except AppError as exc:
                outcomes[index] = exc
            else:
                passed.append((index, report))
        # One transaction for the whole batch. Should the database refuse a value that
        # validation let through, the request is refused whole (422) and nothing of it
        # stays; a collector then halves its batch until the one bad report is alone.
        stored = self.store_reports([r for _, r in passed]) if passed else []
        for (index, _), outcome in zip(passed, stored, strict=True):
            outcomes[index] = outcome
        return outcomes

    def store_reports(self, reports: Sequence[ReportIn]) -> list[Outcome]:
        """Store checked reports in one transaction of their own, received when it runs."""
        tolerance = self.settings.occupancy_tolerance_seconds
        return commit_with_retry(
            self.database,
            lambda session: _store(
                session, self.known, reports, received_at=self.clock(), tolerance=tolerance
            ),
        )


@dataclass
class _Pending:
    index: int
    report: ReportIn
    digest: str
    cluster_pk: int = 0
    node_pk: int = 0
    # Where the report puts each device and GPU it names (identities.placements_of).
    placed: dict[str, identities.Placement] = field(default_factory=dict)


def _store(
    session: Session,
    known_ids: KnownIds,
    reports: Sequence[ReportIn],
    *,
    received_at: datetime,
    tolerance: Decimal,
) -> list[Outcome]:
    """Store each report once, all in the session's transaction, and say what became of each:
    stored, a duplicate of a stored report (a resend), or an error of its own (a report older
    than pruned raw usage; the same (node, seq) stored with other content; GPU time already
    counted, see app.reports._occupancy)."""
    # An id remembered from a database since restored or emptied: run again (KnownIds).
    with known_ids.in_use():
        outcomes: list[Outcome | None] = [None] * len(reports)
        mark = session.connection().execute(PRUNE_MARK).scalar_one_or_none()
        pending: list[_Pending] = []
        for index, report in enumerate(reports):
            too_old = _pruned(report, mark)
            if too_old is not None:
                outcomes[index] = too_old
                continue
            pending.append(_Pending(index, report, payload_digest(report)))
        if pending:
            _identify_nodes(session, known_ids, pending, seen=received_at)
            new = _claim(session, pending, outcomes, received_at=received_at)
            if new:
                known = identities.stored_gpus(session, sorted(_named(new)))
                new, ledger = _occupy(
                    session, new, known, outcomes, received_at=received_at, tolerance=tolerance
                )
            if new:
                _check_unpruned(session, new, mark)
                gpus = _identify_gpus(session, new, known, seen=received_at)
                occupancy.record(session, ledger, gpus)
                _store_usage(session, known_ids, new, gpus, received_at=received_at)
        assert all(outcome is not None for outcome in outcomes)
        return outcomes  # type: ignore[return-value]


def _pruned(report: ReportIn, mark: datetime | None) -> InvalidInput | None:
    """The refusal of a report older than pruned raw usage, if it is."""
    if mark is None or report.start >= mark:
        return None
    return InvalidInput(
        "start",
        f"{report.start.isoformat()} is before {mark.isoformat()}, where raw usage was "
        "pruned: a report that old cannot be told from a resend",
    )


def _check_unpruned(
    session: Session, new: list[tuple[_Pending, int]], mark: datetime | None
) -> None:
    """Run the transaction again (`RaceLost`) if a prune committed meanwhile has made one of
    the new reports too old: its deletes may have let the report's claim or its GPU time
    through (a resend of a report it removed). A prune commits its mark before it deletes
    anything, so a statement that saw a delete is followed by one that sees the mark; run
    again, the transaction refuses the report as too old."""
    now = session.connection().execute(PRUNE_MARK).scalar_one_or_none()
    if now != mark and any(_pruned(p.report, now) for p, _ in new):
        raise RaceLost()


def _identify_nodes(
    session: Session, known: KnownIds, pending: list[_Pending], *, seen: datetime
) -> None:
    names = (p.report.cluster for p in pending)
    clusters = identities.cluster_ids(session, known, names=names, seen=seen)
    # A new node starts from its earliest interval end in the batch: the reports stored
    # (not those refused as conflicts) move it on.
    earliest: dict[tuple[int, str], datetime] = {}
    for p in pending:
        p.cluster_pk = clusters[p.report.cluster]
        key = (p.cluster_pk, p.report.node)
        earliest[key] = min(earliest.get(key, p.report.end), p.report.end)
    nodes = identities.node_ids(session, known, nodes=earliest, seen=seen)
    for p in pending:
        p.node_pk = nodes[(p.cluster_pk, p.report.node)]
        p.placed = identities.placements_of(p.report, p.node_pk)


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
            "entries": len(p.report.entries),
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


def _occupy(
    session: Session,
    new: list[tuple[_Pending, int]],
    known: dict[str, Row[Any]],
    outcomes: list[Outcome | None],
    *,
    received_at: datetime,
    tolerance: Decimal,
) -> tuple[list[tuple[_Pending, int]], occupancy.Ledger]:
    """Refuse the new reports that count GPU time already counted, in the batch's order,
    leaving nothing of them (their resends in the batch refused too), each refusal in the
    audit log; the reports that stay, with their ids, and the ledger of their time."""
    refused, ledger = occupancy.judge(
        session,
        [(p.report, pk) for p, pk in new],
        {uuid: row.id for uuid, row in known.items()},
        tolerance=tolerance,
    )
    if not refused:
        return new, ledger
    for p, report_pk in new:
        if report_pk in refused:
            error = refused[report_pk]
            record(
                session,
                at=received_at,
                actor=f"{p.report.cluster}/{p.report.node}",
                action="report.overlap",
                target=f"gpu {error.gpu}",
                details={"seq": p.report.seq, "detail": error.message},
            )
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, Stored) and outcome.report_id in refused:
            outcomes[index] = refused[outcome.report_id]
    session.connection().execute(delete(REPORTS).where(REPORTS.c.id.in_(sorted(refused))))
    return [(p, pk) for p, pk in new if pk not in refused], ledger


def _named(new: list[tuple[_Pending, int]]) -> set[str]:
    """The GPUs and MIG devices the reports name."""
    named = {e.uuid for p, _ in new for e in p.report.entries}
    named.update(gpu for p, _ in new for gpu in p.report.parents.values())
    return named


def _identify_gpus(
    session: Session,
    new: list[tuple[_Pending, int]],
    known: dict[str, Row[Any]],
    *,
    seen: datetime,
) -> dict[str, Row[Any]]:
    """The rows of the stored reports' devices and GPUs by UUID (`known`: those stored)."""
    placements: dict[str, identities.Placement] = {}
    for p, _ in reversed(new):  # a GPU seen for the first time: where it is first named
        placements.update(p.placed)
    return identities.gpu_rows(session, placements=placements, stored=known, seen=seen)


def _store_usage(
    session: Session,
    known: KnownIds,
    new: list[tuple[_Pending, int]],
    gpus: dict[str, Row[Any]],
    *,
    received_at: datetime,
) -> None:
    ends: dict[int, datetime] = {}
    placements: dict[str, tuple[identities.Placement, datetime]] = {}
    spans: dict[tuple[int, str], tuple[datetime, datetime]] = {}
    for p, _ in new:
        report = p.report
        ends[p.node_pk] = max(ends.get(p.node_pk, report.end), report.end)
        # Reports are applied in order: a GPU's latest report says where it is.
        placements.update((uuid, (where, report.start)) for uuid, where in p.placed.items())
        for e in report.entries:
            if e.job_id is not None:
                key = (p.cluster_pk, e.job_id)
                first, last = spans.get(key, (report.start, report.end))
                spans[key] = (min(first, report.start), max(last, report.end))
    identities.mark_nodes_seen(session, ends=ends, seen=received_at)
    identities.place_gpus(session, stored=gpus, placements=placements, seen=received_at)
    jobs = identities.job_ids(session, known, spans=spans, now=received_at)

    rows: list[tuple[Any, ...]] = []
    totals = Totals()
    for p, report_pk in new:
        start = p.report.start
        attributed = [
            (e, jobs[(p.cluster_pk, e.job_id)] if e.job_id is not None else 0)
            for e in p.report.entries
        ]
        rows.extend(
            (
                report_pk,
                gpus[e.uuid].id,
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
    insert_rows(session, USAGE, USAGE_COLUMNS, rows)
    # Last, the rows other transactions update too (a job's span, its hourly sums): their
    # locks are held from here to the commit only.
    labels = identities.widen_spans(session, {jobs[key]: span for key, span in spans.items()})
    totals.store(session, labels)
