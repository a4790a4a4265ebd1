"""Writing the audit log: who changed what, when, from which value to which."""

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
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


def read_audit(
    session: Session,
    *,
    action: str | None,
    actor: str | None,
    since: datetime | None,
    before: int | None,
    limit: int,
) -> tuple[list[AuditEntry], int | None]:
    """Newest entries first, matching the filters; and the cursor of the next page."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit + 1)
    if action is not None:
        # `rate` matches `rate.create` and `rate.restate`; `rate.create` only itself. `%` and
        # `_` in the filter are matched as themselves, not as LIKE's wildcards.
        query = query.where(
            or_(
                AuditEntry.action == action,
                AuditEntry.action.startswith(action + ".", autoescape=True),
            )
        )
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    entries = list(session.execute(query).scalars())
    more = len(entries) > limit
    entries = entries[:limit]
    return entries, (entries[-1].id if more else None)
