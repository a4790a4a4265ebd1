"""Liveness and readiness probes."""

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import State

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
async def readyz(request: Request) -> Any:
    """The database answers and its schema is at the migration head. Asked one probe at a
    time, on the side engine's connection kept for it: probes never wait behind requests,
    and many at once queue here, holding neither a thread nor a connection."""
    state = request.app.state
    try:
        async with asyncio.timeout(state.settings.db_pool_timeout_seconds):
            await state.readiness.acquire()
    except TimeoutError:
        detail = "database unreachable: earlier probes still waiting for it"
        return JSONResponse({"status": "unavailable", "detail": detail}, status_code=503)
    try:
        return await run_in_threadpool(_readiness, state)
    finally:
        state.readiness.release()


def _readiness(state: State) -> Any:
    head = state.schema_head
    try:
        current = current_revision(state.side_engine)
    except SQLAlchemyError as exc:
        detail = f"database unreachable: {type(exc).__name__}"
        return JSONResponse({"status": "unavailable", "detail": detail}, status_code=503)
    if current != head:
        detail = f"schema at {current}, migration head is {head}; run `gpucost db upgrade`"
        return JSONResponse({"status": "unavailable", "detail": detail}, status_code=503)
    return {"status": "ready", "revision": current}
