"""Liveness and readiness probes."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from app.core.migrate import current_revision
from app.core.numbers import DecimalJsonRoute

router = APIRouter(tags=["health"], route_class=DecimalJsonRoute)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get(
    "/readyz", responses={503: {"description": "Database unreachable or schema not at head"}}
)
def readyz(request: Request) -> Any:
    """The database answers and its schema is at the migration head (asked on a connection
    of the probe's own: never behind requests)."""
    head = request.app.state.schema_head
    try:
        current = current_revision(request.app.state.side_engine)
    except SQLAlchemyError as exc:
        detail = f"database unreachable: {type(exc).__name__}"
        return JSONResponse({"status": "unavailable", "detail": detail}, status_code=503)
    if current != head:
        detail = f"schema at {current}, migration head is {head}; run `gpucost db upgrade`"
        return JSONResponse({"status": "unavailable", "detail": detail}, status_code=503)
    return {"status": "ready", "revision": current}
