"""`/v1/exports`: finance files, streamed as they are written."""

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from app.core.auth import ViewerAuth
from app.core.config import Settings
from app.core.db import SettingsDep
from app.core.numbers import DecimalJsonRoute
from app.core.timestamps import UtcQueryInstant
from app.exports.service import check_bounds, csv_chunks

router = APIRouter(prefix="/v1/exports", tags=["exports"], route_class=DecimalJsonRoute)

Instant = Annotated[UtcQueryInstant, Query(description="A whole UTC hour; no zone means UTC.")]
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "CSV, streamed"}
}


def _attachment(rows: Iterator[str], name: str) -> StreamingResponse:
    return StreamingResponse(
        rows,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _streamed(factory: sessionmaker[Session], **export: Any) -> Iterator[str]:
    """The export's text, read in a session of its own as the client takes it."""
    with factory() as session:
        yield from csv_chunks(session, **export)


def _export(
    request: Request,
    settings: Settings,
    kind: str,
    start: datetime,
    end: datetime,
    granularity: str,
    name: str,
) -> StreamingResponse:
    """The export as a CSV attachment, streamed as the client reads it."""
    check_bounds(start, end, granularity)
    chunks = _streamed(
        request.app.state.read_session_factory,
        kind=kind,
        start=start,
        end=end,
        granularity=granularity,
        settings=settings,
    )
    return _attachment(chunks, name)


@router.get("/focus.csv", response_class=StreamingResponse, responses=CSV_RESPONSE)
def get_focus(
    request: Request,
    _: ViewerAuth,
    settings: SettingsDep,
    start: Annotated[Instant, Query(alias="from")],
    end: Annotated[Instant, Query(alias="to")],
    granularity: Literal["hour", "day", "month"] = "day",
) -> StreamingResponse:
    """FOCUS 1.2 rows per charge period, job (or idle capacity), GPU model and price.

    Closed months come as booked; corrections found since are billed in the first open
    month (`ChargeClass` = `Correction`). Text cells are neutralised against CSV injection.
    """
    name = f"gpucost-focus-{start:%Y%m%d%H}-{end:%Y%m%d%H}-{granularity}.csv"
    return _export(request, settings, "focus", start, end, granularity, name)


@router.get("/costs.csv", response_class=StreamingResponse, responses=CSV_RESPONSE)
def get_costs_csv(
    request: Request,
    _: ViewerAuth,
    settings: SettingsDep,
    start: Annotated[Instant, Query(alias="from")],
    end: Annotated[Instant, Query(alias="to")],
) -> StreamingResponse:
    """A finance summary per billing month, team, model, phase, cluster, GPU model and rate.

    Whole months only (`from` and `to` on the 1st at 00:00 UTC)."""
    name = f"gpucost-costs-{start:%Y%m}-{end:%Y%m}.csv"
    return _export(request, settings, "costs", start, end, "month", name)
