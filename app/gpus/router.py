"""`/v1/gpus`: a GPU by UUID, and where it has been."""

from typing import Annotated

from fastapi import APIRouter, Path

from app.core.auth import ViewerAuth
from app.core.db import SessionDep
from app.core.numbers import DecimalJsonRoute
from app.gpus.schemas import GpuRead
from app.gpus.service import read_gpu
from app.reports.schemas import GPU_UUID_PATTERN

router = APIRouter(prefix="/v1/gpus", tags=["gpus"], route_class=DecimalJsonRoute)


@router.get("/{uuid}")
def get_gpu(
    uuid: Annotated[str, Path(pattern=GPU_UUID_PATTERN)], _: ViewerAuth, session: SessionDep
) -> GpuRead:
    """A GPU (or MIG device) by UUID: where its latest report puts it, and its history of
    placements, a row when it was first seen and one for each move."""
    return read_gpu(session, uuid=uuid[:4] + uuid[4:].lower())
