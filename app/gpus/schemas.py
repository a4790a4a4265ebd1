"""A GPU as the API shows it: where it is, and everywhere it has been."""

from datetime import datetime

from pydantic import BaseModel


class PlacementRead(BaseModel):
    cluster: str
    node: str
    index: int
    since: datetime


class GpuRead(BaseModel):
    uuid: str
    model: str
    first_seen: datetime
    # Where its latest stored report puts it.
    cluster: str
    node: str
    index: int
    # Oldest first: where it was first seen, then each move (another slot, node or cluster).
    history: list[PlacementRead]
