"""Reading the fleet: a GPU's record and its history of placements; the nodes."""

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.gpus.schemas import GpuRead, NodeList, NodeRead, PlacementRead
from app.models import Cluster, Gpu, GpuPlacement, Node

# A GPU moves seldom; a history longer than this shows its latest moves.
MAX_HISTORY = 1000
MAX_NODES = 10_000  # nodes listed at most in one answer


def read_gpu(session: Session, *, uuid: str) -> GpuRead:
    """The GPU with this UUID, where it is and where it has been."""
    found = session.execute(
        select(Gpu, Cluster.name, Node.name)
        .join(Node, Node.id == Gpu.node_id)
        .join(Cluster, Cluster.id == Node.cluster_id)
        .where(Gpu.uuid == uuid)
    ).first()
    if found is None:
        raise NotFound(f"no GPU {uuid} has been reported")
    gpu, cluster, node = found
    latest = (
        select(GpuPlacement.gpu_index, GpuPlacement.since, Cluster.name, Node.name)
        .join(Node, Node.id == GpuPlacement.node_id)
        .join(Cluster, Cluster.id == Node.cluster_id)
        .where(GpuPlacement.gpu_id == gpu.id)
        .order_by(GpuPlacement.since.desc(), GpuPlacement.id.desc())
        .limit(MAX_HISTORY)
    )
    history = [
        PlacementRead(cluster=c, node=n, index=index, since=since)
        for index, since, c, n in reversed(session.execute(latest).all())
    ]
    return GpuRead(
        uuid=gpu.uuid,
        model=gpu.model,
        first_seen=gpu.first_seen,
        cluster=cluster,
        node=node,
        index=gpu.gpu_index,
        history=history,
    )


def list_nodes(
    session: Session, *, now: datetime, cluster: str | None, silent_for: int | None, limit: int
) -> NodeList:
    """The nodes (of `cluster`, silent for more than `silent_for` s: as /metrics counts a
    node not reporting), longest silent first."""
    gpus = select(func.count(Gpu.id)).where(Gpu.node_id == Node.id).scalar_subquery()
    query = (
        select(Cluster.name, Node.name, Node.first_seen, Node.last_report_at, gpus)
        .join(Cluster, Cluster.id == Node.cluster_id)
        .order_by(Node.last_report_at, Cluster.name, Node.name)
        .limit(limit + 1)
    )
    if cluster is not None:
        query = query.where(Cluster.name == cluster)
    if silent_for is not None:
        query = query.where(Node.last_report_at < now - timedelta(seconds=silent_for))
    rows = session.execute(query).all()
    nodes = [
        NodeRead(
            cluster=cluster_name,
            node=node,
            first_seen=first_seen,
            last_report_at=last_report_at,
            silent_seconds=max(0, int((now - last_report_at).total_seconds())),
            gpus=count,
        )
        for cluster_name, node, first_seen, last_report_at, count in rows[:limit]
    ]
    return NodeList(nodes=nodes, truncated=len(rows) > limit)


def reported_gpu_models(session: Session) -> list[str]:
    """Every GPU model some GPU has reported, as NVML names it, in order."""
    return list(session.scalars(select(Gpu.model).distinct().order_by(Gpu.model)))
