"""Writing the audit log: who changed what, when, from which value to which."""

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.models import AuditEntry


def record(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one entry to the audit log in the caller's transaction."""
    session.add(AuditEntry(at=at, actor=actor, action=action, target=target, details=details or {}))
