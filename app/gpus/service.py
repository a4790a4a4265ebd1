"""Reading a GPU's record and its history of placements."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.gpus.schemas import GpuRead, PlacementRead
from app.models import Cluster, Gpu, GpuPlacement, Node

# A GPU moves seldom; a history longer than this shows its latest moves.
MAX_HISTORY = 1000


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
