"""The clusters, nodes, GPUs and jobs that a batch of reports names: found or created together,
and told when they were last seen."""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Table, bindparam, case, or_, select, update
from sqlalchemy.orm import Session

from app.core.known_ids import KnownIds
from app.core.rows import find_rows
from app.core.upsert import get_or_create, insert_many
from app.models import Cluster, Gpu, GpuPlacement, Job, Node
from app.reports.schemas import ReportIn
from app.totals.store import Labels, labels_of

# One placement per GPU: its node, its index there, its model.
Placement = tuple[int, int, str]
GPUS = cast(Table, Gpu.__table__)
PLACEMENTS = cast(Table, GpuPlacement.__table__)
GPU_COLUMNS = ("id", "node_id", "gpu_index", "model", "first_seen")


def cluster_ids(
    session: Session, known: KnownIds, *, names: Iterable[str], seen: datetime
) -> dict[str, int]:
    rows = [{"name": name, "created_at": seen} for name in sorted(set(names))]
    return {key[0]: pk for key, pk in known.get_or_create(session, Cluster, ["name"], rows).items()}


def node_ids(
    session: Session,
    known: KnownIds,
    *,
    nodes: Mapping[tuple[int, str], datetime],
    seen: datetime,
) -> dict[tuple[int, str], int]:
    """Ids of (cluster id, node name) pairs; `nodes` gives the interval end a new one starts
    from."""
    rows = [
        {
            "cluster_id": cluster_pk,
            "name": name,
            "first_seen": seen,
            "last_interval_end": end,
            "last_report_at": seen,
        }
        for (cluster_pk, name), end in sorted(nodes.items())
    ]
    ids = known.get_or_create(session, Node, ["cluster_id", "name"], rows)
    return {(key[0], key[1]): pk for key, pk in ids.items()}


def mark_nodes_seen(session: Session, *, ends: Mapping[int, datetime], seen: datetime) -> None:
    """Each node's last report time, and the end of the latest interval it has reported."""
    # In id order, so that two batches naming the same nodes lock them in the same order.
    session.connection().execute(
        _MARK_NODES_SEEN, [{"node_pk": pk, "end": ends[pk], "seen": seen} for pk in sorted(ends)]
    )


def _mark_nodes_seen() -> Any:
    table = cast(Table, Node.__table__)
    end = bindparam("end", type_=table.c.last_interval_end.type)
    return (
        update(table)
        .where(table.c.id == bindparam("node_pk"))
        .values(
            last_report_at=bindparam("seen", type_=table.c.last_report_at.type),
            last_interval_end=case(
                (table.c.last_interval_end < end, end), else_=table.c.last_interval_end
            ),
        )
    )


_MARK_NODES_SEEN = _mark_nodes_seen()


def stored_gpus(session: Session, uuids: Iterable[str]) -> dict[str, Row[Any]]:
    """The stored rows of GPUs (and MIG devices) by UUID: id, node, index, model, first seen."""
    keys = [(uuid,) for uuid in uuids]
    return {
        row.uuid: row for row in find_rows(session, GPUS, (*GPU_COLUMNS, "uuid"), ("uuid",), keys)
    }


def gpu_rows(
    session: Session,
    *,
    placements: Mapping[str, Placement],
    stored: Mapping[str, Row[Any]],
    seen: datetime,
) -> dict[str, Row[Any]]:
    """The rows of the GPUs in `placements` by UUID, those not `stored` yet recorded where
    `placements` puts them."""
    rows = [
        {
            "uuid": uuid,
            "node_id": node_pk,
            "gpu_index": gpu_index,
            "model": model,
            "first_seen": seen,
        }
        for uuid, (node_pk, gpu_index, model) in sorted(placements.items())
        if uuid not in stored
    ]
    # `stored` was read in this transaction: the others are not there, or only just now.
    found = get_or_create(session, GPUS, ("uuid",), rows, GPU_COLUMNS, absent=True) if rows else {}
    kept = {uuid: stored[uuid] for uuid in placements if uuid in stored}
    return {**kept, **{uuid: row for (uuid,), row in found.items()}}


def place_gpus(
    session: Session,
    *,
    stored: Mapping[str, Row[Any]],
    placements: Mapping[str, tuple[Placement, datetime]],
    seen: datetime,
) -> None:
    """Record where the batch's stored reports put each GPU (`placements`: where, and from
    when). A GPU keeps its identity when it moves to another slot, node or cluster: its row
    follows its newest report, and its history gains a row for each place it is shown at
    that differs from where its history had it at the time."""
    changed = {
        uuid: placed
        for uuid, placed in placements.items()
        if stored[uuid].first_seen == seen
        or (stored[uuid].node_id, stored[uuid].gpu_index, stored[uuid].model) != placed[0]
    }
    if not changed:  # as nearly always: every GPU where it was
        return
    history = _histories(session, [stored[uuid].id for uuid in changed])
    moved, arrived = [], []
    for uuid, ((node_pk, gpu_index, model), since) in sorted(changed.items()):
        row = stored[uuid]
        past = history.get(row.id, [])
        then = next((where for at, where in reversed(past) if at <= since), None)
        if then != (node_pk, gpu_index):
            arrived.append(
                {"gpu_id": row.id, "node_id": node_pk, "gpu_index": gpu_index, "since": since}
            )
        # Its row follows its newest report, unless it shows that already (a GPU new here).
        now_at = (row.node_id, row.gpu_index, row.model)
        if (not past or since >= past[-1][0]) and now_at != (node_pk, gpu_index, model):
            moved.append(
                {"gpu_pk": row.id, "node_id": node_pk, "gpu_index": gpu_index, "model": model}
            )
    if moved:
        session.connection().execute(update(GPUS).where(GPUS.c.id == bindparam("gpu_pk")), moved)
    if arrived:
        insert_many(session, PLACEMENTS, arrived)


def _histories(
    session: Session, gpu_pks: list[int]
) -> dict[int, list[tuple[datetime, tuple[int, int]]]]:
    """Each GPU's placements, oldest first."""
    rows = find_rows(
        session,
        PLACEMENTS,
        ("since", "id", "node_id", "gpu_index", "gpu_id"),
        ("gpu_id",),
        [(pk,) for pk in gpu_pks],
    )
    history: dict[int, list[tuple[datetime, tuple[int, int]]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: (r.since, r.id)):
        history[row.gpu_id].append((row.since, (row.node_id, row.gpu_index)))
    return history


def job_ids(
    session: Session,
    known: KnownIds,
    *,
    spans: Mapping[tuple[int, str], tuple[datetime, datetime]],
    now: datetime,
) -> dict[tuple[int, str], int]:
    """Ids of (cluster id, scheduler job id) pairs, registering jobs seen for the first time
    with `spans`, each one's earliest start and latest end in the batch."""
    if not spans:
        return {}
    rows = [
        {
            "cluster_id": cluster_pk,
            "scheduler_job_id": name,
            "labels": {},
            "first_seen": first,
            "last_seen": last,
            "created_at": now,
            "updated_at": now,
        }
        for (cluster_pk, name), (first, last) in sorted(spans.items())
    ]
    found = known.get_or_create(session, Job, ["cluster_id", "scheduler_job_id"], rows)
    return {(key[0], key[1]): pk for key, pk in found.items()}


def widen_spans(
    session: Session, spans: Mapping[int, tuple[datetime, datetime]]
) -> dict[int, Labels]:
    """Widen each job's first and last seen instants (by job id) to take in the batch; each
    job's labels on the model level (app.totals), read under its row lock."""
    if not spans:
        return {}
    # Row locks are taken in id order, before any rollup row, so that two batches of one
    # job wait for each other instead of deadlocking, all in one statement. The rows are hot
    # (every report of a job moves its last instant): the caller takes these locks last,
    # just before commit. A relabelling (app.jobs) holds the same lock while it moves the
    # job's hours, so the labels read here stay the job's until this batch commits.
    table = cast(Table, Job.__table__)
    locked = session.execute(
        select(table.c.id, table.c.model, table.c.phase)
        .where(table.c.id.in_(sorted(spans)))
        .order_by(table.c.id)
        .with_for_update(key_share=True)
    )
    labels = {pk: labels_of(model, phase) for pk, model, phase in locked}
    session.connection().execute(
        _WIDEN_SPANS,
        [
            {"job_pk": pk, "first": first_at, "last": last_at}
            for pk, (first_at, last_at) in sorted(spans.items())
        ],
    )
    return labels


def placements_of(report: ReportIn, node_pk: int) -> dict[str, Placement]:
    """Where a report puts each device it names, and each GPU whose MIG devices it names
    (at their index; with their model until the GPU itself is reported)."""
    placed = {e.uuid: (node_pk, e.gpu_index, e.model) for e in report.entries}
    for device, gpu in report.parents.items():
        placed.setdefault(gpu, placed[device])
    return placed


def _widen_spans() -> Any:
    table = cast(Table, Job.__table__)
    first_seen, last_seen = table.c.first_seen, table.c.last_seen
    first = bindparam("first", type_=first_seen.type)
    last = bindparam("last", type_=last_seen.type)
    earlier = or_(first_seen.is_(None), first_seen > first)
    later = or_(last_seen.is_(None), last_seen < last)
    return (
        update(table)
        .where(table.c.id == bindparam("job_pk"), or_(earlier, later))
        .values(
            first_seen=case((earlier, first), else_=first_seen),
            last_seen=case((later, last), else_=last_seen),
        )
    )


_WIDEN_SPANS = _widen_spans()
