"""`/v1/exports`: finance files, streamed as they are written."""

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from app.core.auth import ViewerAuth
from app.core.db import Database, SettingsDep
from app.core.numbers import DecimalJsonRoute
from app.core.timestamps import UtcQueryInstant
from app.exports.service import check_bounds, csv_chunks, parquet_chunks

router = APIRouter(prefix="/v1/exports", tags=["exports"], route_class=DecimalJsonRoute)

Instant = Annotated[UtcQueryInstant, Query(description="A whole UTC hour; no zone means UTC.")]
CSV = "text/csv; charset=utf-8"
PARQUET = "application/vnd.apache.parquet"
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "CSV, streamed"}
}


PARQUET_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {PARQUET: {}}, "description": "Parquet, streamed"}
}


def _attachment(chunks: Iterator[Any], name: str, media_type: str) -> StreamingResponse:
    return StreamingResponse(
        chunks,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _streamed(
    database: Database, write: Callable[..., Iterator[Any]], **export: Any
) -> Iterator[Any]:
    """The export's chunks, read in a read session of its own as the client takes them."""
    with database.read() as session:
        yield from write(session, **export)


class FocusWindow:
    """The charge periods a FOCUS export covers, and its file's name."""

    def __init__(
        self,
        start: Annotated[Instant, Query(alias="from")],
        end: Annotated[Instant, Query(alias="to")],
        granularity: Literal["hour", "day", "month"] = "day",
    ) -> None:
        self.start, self.end, self.granularity = start, end, granularity

    def export(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "granularity": self.granularity}

    def file_name(self, extension: str) -> str:
        span = f"{self.start:%Y%m%d%H}-{self.end:%Y%m%d%H}"
        return f"gpucost-focus-{span}-{self.granularity}.{extension}"


def _export(
    request: Request,
    write: Callable[..., Iterator[Any]],
    *,
    name: str,
    media_type: str,
    start: datetime,
    end: datetime,
    granularity: str,
    **export: Any,
) -> StreamingResponse:
    """The export as an attachment, streamed as the client reads it."""
    check_bounds(start, end, granularity)
    database = request.app.state.database
    chunks = _streamed(database, write, start=start, end=end, granularity=granularity, **export)
    return _attachment(chunks, name, media_type)


@router.get("/focus.csv", response_class=StreamingResponse, responses=CSV_RESPONSE)
def get_focus(
    request: Request,
    _: ViewerAuth,
    settings: SettingsDep,
    window: Annotated[FocusWindow, Depends()],
) -> StreamingResponse:
    """FOCUS 1.2 rows per charge period, job (or idle capacity), GPU model and price.

    Closed months come as booked; corrections found since are billed in the first open
    month (`ChargeClass` = `Correction`). Text cells are neutralised against CSV injection.
    """
    return _export(
        request, csv_chunks, kind="focus", settings=settings, media_type=CSV,
        name=window.file_name("csv"), **window.export(),
    )  # fmt: skip


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
    return _export(
        request, csv_chunks, kind="costs", settings=settings, media_type=CSV,
        name=f"gpucost-costs-{start:%Y%m}-{end:%Y%m}.csv",
        start=start, end=end, granularity="month",
    )  # fmt: skip


@router.get("/focus.parquet", response_class=StreamingResponse, responses=PARQUET_RESPONSE)
def get_focus_parquet(
    request: Request,
    _: ViewerAuth,
    settings: SettingsDep,
    window: Annotated[FocusWindow, Depends()],
) -> StreamingResponse:
    """The FOCUS 1.2 export as Parquet: the CSV's rows, with exact decimal columns
    (`decimal128`), UTC timestamps, and text as it is (no guard against spreadsheet
    formulas, which Parquet does not have). Written a row group at a time."""
    return _export(
        request, parquet_chunks, settings=settings, media_type=PARQUET,
        name=window.file_name("parquet"), **window.export(),
    )  # fmt: skip
