"""The clusters, nodes, GPUs and jobs that a batch of reports names: found or created together,
and told when they were last seen."""

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, or_, update
from sqlalchemy.orm import Session

from app.core.upsert import get_or_create, get_or_create_ids
from app.models import Cluster, Gpu, Job, Node
from app.reports.entries import Entry

# One placement per GPU: its node, its index there, its model.
Placement = tuple[int, int, str]


def cluster_ids(session: Session, *, names: Iterable[str], seen: datetime) -> dict[str, int]:
    rows = [{"name": name, "created_at": seen} for name in sorted(set(names))]
    return {key[0]: pk for key, pk in get_or_create_ids(session, Cluster, ["name"], rows).items()}


def node_ids(
    session: Session, *, nodes: Mapping[tuple[int, str], datetime], seen: datetime
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
    ids = get_or_create_ids(session, Node, ["cluster_id", "name"], rows)
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


def gpu_ids(
    session: Session, *, placements: Mapping[str, Placement], seen: datetime
) -> dict[str, int]:
    """Ids of GPUs by UUID, each recorded where its latest report puts it.

    A GPU moved to another node or slot keeps its identity.
    """
    rows = [
        {
            "uuid": uuid,
            "node_id": node_pk,
            "gpu_index": gpu_index,
            "model": model,
            "first_seen": seen,
        }
        for uuid, (node_pk, gpu_index, model) in sorted(placements.items())
    ]
    table = cast(Table, Gpu.__table__)
    found = get_or_create(session, table, ("uuid",), rows, ("id", "node_id", "gpu_index", "model"))
    moved = [
        {"gpu_pk": row.id, "node_id": p[0], "gpu_index": p[1], "model": p[2]}
        for (uuid,), row in sorted(found.items(), key=lambda item: item[1].id)
        if (row.node_id, row.gpu_index, row.model) != (p := placements[uuid])
    ]
    if moved:
        session.connection().execute(update(table).where(table.c.id == bindparam("gpu_pk")), moved)
    return {uuid: row.id for (uuid,), row in found.items()}


def job_ids(
    session: Session,
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
    found = get_or_create_ids(session, Job, ["cluster_id", "scheduler_job_id"], rows)
    return {(key[0], key[1]): pk for key, pk in found.items()}


def widen_spans(session: Session, spans: Mapping[int, tuple[datetime, datetime]]) -> None:
    """Widen each job's first and last seen instants (by job id) to take in the batch."""
    if not spans:
        return
    # Row locks are taken in id order, before any rollup row, so that two batches of one
    # job wait for each other instead of deadlocking. The rows are hot (every report of a
    # job moves its last instant): the caller takes these locks last, just before commit.
    session.connection().execute(
        _WIDEN_SPANS,
        [
            {"job_pk": pk, "first": first_at, "last": last_at}
            for pk, (first_at, last_at) in sorted(spans.items())
        ],
    )


def placements_of(entries: Iterable[Entry], node_pk: int) -> dict[str, Placement]:
    return {e.uuid: (node_pk, e.gpu_index, e.model) for e in entries}


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
