"""`/v1/gpus` and `/v1/nodes`: the fleet, a GPU by UUID and where it has been, and the nodes
with when each last reported."""

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.core.auth import ViewerAuth
from app.core.clock import ClockDep
from app.core.db import ReadSession
from app.core.labels import GPU_UUID_PATTERN, NAME_PATTERN
from app.core.numbers import DecimalJsonRoute
from app.gpus.schemas import GpuRead, NodeList
from app.gpus.service import MAX_NODES, list_nodes, read_gpu

router = APIRouter(prefix="/v1", tags=["fleet"], route_class=DecimalJsonRoute)


@router.get("/nodes")
def get_nodes(
    _: ViewerAuth,
    session: ReadSession,
    clock: ClockDep,
    cluster: Annotated[str | None, Query(max_length=128, pattern=NAME_PATTERN)] = None,
    silent_for: Annotated[
        int | None,
        Query(
            ge=0,
            le=10**9,
            description="Only nodes whose last report is more than this many seconds old",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_NODES)] = MAX_NODES,
) -> NodeList:
    """The nodes that have reported, longest silent first, with their GPUs and when each
    last reported (what Prometheus shows per cluster only, `gpucost_nodes_silent`)."""
    return list_nodes(session, now=clock(), cluster=cluster, silent_for=silent_for, limit=limit)


@router.get("/gpus/{uuid}")
def get_gpu(
    uuid: Annotated[str, Path(pattern=GPU_UUID_PATTERN)], _: ViewerAuth, session: ReadSession
) -> GpuRead:
    """A GPU (or MIG device) by UUID: where its latest report puts it, and its history of
    placements, a row when it was first seen and one for each move."""
    return read_gpu(session, uuid=uuid[:4] + uuid[4:].lower())
