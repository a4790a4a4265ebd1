"""Audit entries as the API returns them."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class AuditRead(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]


class AuditPage(BaseModel):
    entries: list[AuditRead]
    # Pass as `before` to read the next (older) page; null on the last page.
    next_before: int | None
