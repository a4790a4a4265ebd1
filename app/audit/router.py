"""`GET /v1/audit`: every administrative change, newest first."""

from typing import Annotated

from fastapi import APIRouter, Query

from app.audit.schemas import AuditPage, AuditRead
from app.audit.service import read_audit
from app.core.auth import AdminAuth
from app.core.db import ReadSession
from app.core.errors import PRINTABLE
from app.core.numbers import Count, DecimalJsonRoute
from app.core.timestamps import UtcQueryInstant

router = APIRouter(prefix="/v1/audit", tags=["audit"], route_class=DecimalJsonRoute)


@router.get("")
def get_audit(
    _: AdminAuth,
    session: ReadSession,
    action: Annotated[
        str | None, Query(max_length=64, pattern=PRINTABLE, examples=["rate"])
    ] = None,
    actor: Annotated[str | None, Query(max_length=128, pattern=PRINTABLE)] = None,
    since: UtcQueryInstant | None = None,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1), Count] = None,
    limit: Annotated[int, Query(ge=1, le=1000), Count] = 100,
) -> AuditPage:
    """Who changed what and when: rates, jobs, tokens, closed months (admin only)."""
    entries, next_before = read_audit(
        session, action=action, actor=actor, since=since, before=before, limit=limit
    )
    return AuditPage(
        entries=[AuditRead.model_validate(e, from_attributes=True) for e in entries],
        next_before=next_before,
    )
