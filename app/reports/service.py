"""Accepting collector reports: limits, idempotency, raw usage rows and the hourly rollup."""

import hashlib
import json
from collections import defaultdict
from dataclasses import astuple, dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from sqlalchemy import case, or_, select, update
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import Conflict, InvalidInput
from app.core.upsert import dialect_insert, get_or_create_ids
from app.models import Cluster, Gpu, HourlyUsage, Job, Node, PruneMark, Report, Usage
from app.models.usage import IDLE_HOUR_WHERE, JOB_HOUR_WHERE
from app.reports.hours import hour_slices, split_amounts
from app.reports.schemas import ReportIn

MICRO = Decimal(1_000_000)
MILLI = Decimal(1_000)


@dataclass(frozen=True, order=True)
class Entry:
    """One GPU's usage for one job (or idle) in a report, in exact integer units."""

    uuid: str
    job_id: str | None
    index: int
    model: str
    gpu_us: int
    busy_us: int
    util_pct: str
    energy_mj: int
    mem_peak_bytes: int


@dataclass(frozen=True)
class Stored:
    report_id: int
    duplicate: bool


def _units(value: Decimal, scale: Decimal) -> int:
    return int((value * scale).to_integral_value(ROUND_HALF_EVEN))


def check_report(report: ReportIn, *, settings: Settings, now: datetime) -> None:
    """Reject a report that breaks a configured limit, naming the field at fault."""
    interval = report.end - report.start
    if interval > timedelta(seconds=settings.max_report_interval_seconds):
        raise InvalidInput(
            "end",
            f"interval of {interval.total_seconds():g} s exceeds the maximum of "
            f"{settings.max_report_interval_seconds} s",
        )
    latest = now + timedelta(seconds=settings.max_future_skew_seconds)
    if report.end > latest:
        raise InvalidInput(
            "end",
            f"{report.end.isoformat()} is more than {settings.max_future_skew_seconds} s "
            f"ahead of the server clock ({now.isoformat()})",
        )
    if len(report.gpus) > settings.max_gpus_per_report:
        raise InvalidInput(
            "gpus",
            f"{len(report.gpus)} entries exceed the maximum of {settings.max_gpus_per_report}",
        )
    _check_gpu_entries(report, settings=settings)


def _check_gpu_entries(report: ReportIn, *, settings: Settings) -> None:
    capacity = Decimal(str((report.end - report.start).total_seconds()))
    limit = capacity + settings.gpu_seconds_tolerance_seconds
    first_by_uuid: dict[str, int] = {}
    uuid_by_index: dict[int, str] = {}
    used: dict[str, Decimal] = defaultdict(Decimal)
    jobs_seen: set[tuple[str, str | None]] = set()
    for i, entry in enumerate(report.gpus):
        first = report.gpus[first_by_uuid.setdefault(entry.uuid, i)]
        if (first.index, first.model) != (entry.index, entry.model):
            raise InvalidInput(
                f"gpus[{i}]", f"GPU {entry.uuid} appears with another index or model"
            )
        if uuid_by_index.setdefault(entry.index, entry.uuid) != entry.uuid:
            raise InvalidInput(f"gpus[{i}].index", f"index {entry.index} is given to two GPUs")
        if (entry.uuid, entry.job_id) in jobs_seen:
            raise InvalidInput(
                f"gpus[{i}].job_id", f"job {entry.job_id} appears twice for GPU {entry.uuid}"
            )
        jobs_seen.add((entry.uuid, entry.job_id))
        used[entry.uuid] += entry.gpu_seconds
        if used[entry.uuid] > limit:
            raise InvalidInput(
                f"gpus[{i}].gpu_seconds",
                f"GPU {entry.uuid} totals {used[entry.uuid]} GPU-seconds "
                f"in a {capacity} s interval",
            )


def normalize(report: ReportIn) -> list[Entry]:
    """Entries in integer units (microseconds, millijoules), in a canonical order."""
    entries = []
    for gpu in report.gpus:
        gpu_us = _units(gpu.gpu_seconds, MICRO)
        entries.append(
            Entry(
                uuid=gpu.uuid,
                job_id=gpu.job_id,
                index=gpu.index,
                model=gpu.model,
                gpu_us=gpu_us,
                busy_us=_units(gpu_us * gpu.util_pct / 100, Decimal(1)),
                util_pct=str(gpu.util_pct.normalize()),
                energy_mj=_units(gpu.energy_j, MILLI),
                mem_peak_bytes=gpu.mem_peak_bytes,
            )
        )
    return sorted(entries, key=lambda e: (e.uuid, e.job_id or ""))


def payload_digest(report: ReportIn, entries: list[Entry]) -> str:
    """SHA-256 of the report's meaning, so a resend in another spelling still matches."""
    canonical = [
        report.cluster,
        report.node,
        report.seq,
        report.start.isoformat(),
        report.end.isoformat(),
        [astuple(e) for e in entries],
    ]
    return hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()


def ingest_report(session: Session, *, report: ReportIn, received_at: datetime) -> Stored:
    """Store a report once: a resend is a duplicate, the same seq with other content a conflict."""
    mark = session.execute(select(PruneMark.pruned_before)).scalar_one_or_none()
    if mark is not None and report.start < mark:
        raise InvalidInput(
            "start",
            f"{report.start.isoformat()} is before {mark.isoformat()}, where raw usage was "
            "pruned: a report that old cannot be told from a resend",
        )
    entries = normalize(report)
    digest = payload_digest(report, entries)
    cluster_id = get_or_create_ids(
        session, Cluster, ["name"], [{"name": report.cluster, "created_at": received_at}]
    )[(report.cluster,)]
    node_id = get_or_create_ids(
        session,
        Node,
        ["cluster_id", "name"],
        [
            {
                "cluster_id": cluster_id,
                "name": report.node,
                "first_seen": received_at,
                "last_interval_end": report.end,
                "last_report_at": received_at,
            }
        ],
    )[(cluster_id, report.node)]

    # The unique (node, seq) key decides, inside the database, which request stores a report.
    report_id = session.execute(
        dialect_insert(session, Report)
        .values(
            node_id=node_id,
            seq=report.seq,
            period_start=report.start,
            period_end=report.end,
            received_at=received_at,
            payload_sha256=digest,
            entries=len(entries),
        )
        .on_conflict_do_nothing(index_elements=["node_id", "seq"])
        .returning(Report.id)
    ).scalar_one_or_none()
    if report_id is None:
        existing = session.execute(
            select(Report.id, Report.payload_sha256).where(
                Report.node_id == node_id, Report.seq == report.seq
            )
        ).one()
        if existing.payload_sha256 != digest:
            raise Conflict(
                f"report {report.cluster}/{report.node} seq {report.seq} was already stored "
                "with different content"
            )
        return Stored(report_id=existing.id, duplicate=True)

    _mark_node_seen(session, node_id=node_id, report=report, received_at=received_at)
    gpu_ids = _gpu_ids(session, node_id=node_id, entries=entries, seen=received_at)
    job_ids = _job_ids(
        session, cluster_id=cluster_id, entries=entries, report=report, now=received_at
    )
    session.execute(
        dialect_insert(session, Usage),
        [
            {
                "report_id": report_id,
                "gpu_id": gpu_ids[(e.uuid,)],
                "job_id": job_ids.get((cluster_id, e.job_id)),
                "period_start": report.start,
                "gpu_us": e.gpu_us,
                "busy_us": e.busy_us,
                "util_pct": float(e.util_pct),
                "energy_mj": e.energy_mj,
                "mem_peak_bytes": e.mem_peak_bytes,
            }
            for e in entries
        ],
    )
    _add_to_hourly(session, cluster_id=cluster_id, report=report, entries=entries, job_ids=job_ids)
    return Stored(report_id=report_id, duplicate=False)


def _mark_node_seen(
    session: Session, *, node_id: int, report: ReportIn, received_at: datetime
) -> None:
    newer = Node.last_interval_end < report.end
    session.execute(
        update(Node)
        .where(Node.id == node_id)
        .values(
            last_report_at=received_at,
            last_interval_end=case((newer, report.end), else_=Node.last_interval_end),
        )
    )


def _gpu_ids(
    session: Session, *, node_id: int, entries: list[Entry], seen: datetime
) -> dict[tuple[str], int]:
    rows = [
        {
            "uuid": e.uuid,
            "node_id": node_id,
            "gpu_index": e.index,
            "model": e.model,
            "first_seen": seen,
        }
        for e in entries
    ]
    ids = get_or_create_ids(session, Gpu, ["uuid"], rows)
    # A GPU moved to another node or slot keeps its identity; record where it is now.
    by_uuid = {e.uuid: e for e in entries}
    placed = session.execute(
        select(Gpu.uuid, Gpu.node_id, Gpu.gpu_index, Gpu.model).where(Gpu.id.in_(ids.values()))
    ).all()
    for row in placed:
        entry = by_uuid[row.uuid]
        if (row.node_id, row.gpu_index, row.model) != (node_id, entry.index, entry.model):
            session.execute(
                update(Gpu)
                .where(Gpu.uuid == row.uuid)
                .values(node_id=node_id, gpu_index=entry.index, model=entry.model)
            )
    return {(uuid,): gpu_id for (uuid,), gpu_id in ids.items()}


def _job_ids(
    session: Session, *, cluster_id: int, entries: list[Entry], report: ReportIn, now: datetime
) -> dict[tuple[int, str | None], int]:
    names = sorted({e.job_id for e in entries if e.job_id is not None})
    if not names:
        return {}
    rows = [
        {
            "cluster_id": cluster_id,
            "scheduler_job_id": name,
            "labels": {},
            "first_seen": report.start,
            "last_seen": report.end,
            "created_at": now,
            "updated_at": now,
        }
        for name in names
    ]
    ids = get_or_create_ids(session, Job, ["cluster_id", "scheduler_job_id"], rows)
    job_pks = sorted(ids.values())
    # Row locks are taken in id order here, before any rollup row, so that two reports of
    # one job wait for each other instead of deadlocking.
    session.execute(
        update(Job)
        .where(Job.id.in_(job_pks), or_(Job.last_seen.is_(None), Job.last_seen < report.end))
        .values(last_seen=report.end)
    )
    session.execute(
        update(Job)
        .where(Job.id.in_(job_pks), or_(Job.first_seen.is_(None), Job.first_seen > report.start))
        .values(first_seen=report.start)
    )
    return dict(ids)


def _add_to_hourly(
    session: Session,
    *,
    cluster_id: int,
    report: ReportIn,
    entries: list[Entry],
    job_ids: dict[tuple[int, str | None], int],
) -> None:
    slices = hour_slices(report.start, report.end)
    totals: dict[tuple[int, str, datetime], list[int]] = defaultdict(lambda: [0, 0, 0])
    for e in entries:
        job_pk = job_ids.get((cluster_id, e.job_id), 0)  # 0 stands for idle while sorting
        for hour, amounts in split_amounts(slices, (e.gpu_us, e.busy_us, e.energy_mj)):
            acc = totals[(job_pk, e.model, hour)]
            for k, amount in enumerate(amounts):
                acc[k] += amount
    rows = [
        {
            "cluster_id": cluster_id,
            "job_id": job_pk or None,
            "gpu_model": model,
            "hour": hour,
            "gpu_us": acc[0],
            "busy_us": acc[1],
            "energy_mj": acc[2],
        }
        for (job_pk, model, hour), acc in sorted(totals.items())
    ]
    table = HourlyUsage.__table__
    for keys, where, part in (
        (["job_id", "gpu_model", "hour"], JOB_HOUR_WHERE, [r for r in rows if r["job_id"]]),
        (
            ["cluster_id", "gpu_model", "hour"],
            IDLE_HOUR_WHERE,
            [r for r in rows if not r["job_id"]],
        ),
    ):
        if not part:
            continue
        stmt = dialect_insert(session, table)
        stmt = stmt.on_conflict_do_update(
            index_elements=keys,
            index_where=where,
            set_={
                "gpu_us": table.c.gpu_us + stmt.excluded.gpu_us,
                "busy_us": table.c.busy_us + stmt.excluded.busy_us,
                "energy_mj": table.c.energy_mj + stmt.excluded.energy_mj,
            },
        )
        session.execute(stmt, part)
