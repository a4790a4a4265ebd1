"""The fleet as the API shows it: a GPU, where it is and everywhere it has been; nodes."""

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


class NodeRead(BaseModel):
    cluster: str
    node: str
    first_seen: datetime
    # When the service last received a report from the node, and how long ago that was.
    last_report_at: datetime
    silent_seconds: int
    gpus: int


class NodeList(BaseModel):
    nodes: list[NodeRead]
    # More nodes match than `limit` let through.
    truncated: bool
