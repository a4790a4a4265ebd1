"""`/v1/periods`: billing months, and closing them."""

from typing import Annotated

from fastapi import APIRouter, Query

from app.core.auth import AdminAuth, ViewerAuth
from app.core.calendar import parse_month
from app.core.clock import ClockDep
from app.core.db import ReadSession, SettingsDep, WriteSession
from app.core.errors import ErrorBody
from app.core.numbers import Count, DecimalJsonRoute
from app.core.units import micro_from_usd
from app.periods.schemas import PeriodPage, PeriodRead
from app.periods.service import close_month, list_periods, read_period

router = APIRouter(prefix="/v1/periods", tags=["periods"], route_class=DecimalJsonRoute)


MAX_PAGE = 120


@router.get("")
def get_periods(
    _: ViewerAuth,
    session: ReadSession,
    settings: SettingsDep,
    from_: Annotated[str | None, Query(alias="from", max_length=7, examples=["2025-01"])] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE), Count] = 12,
) -> PeriodPage:
    """The books' months, oldest first, a page at a time: open or closed, booked and current
    figures."""
    return list_periods(
        session,
        start=None if from_ is None else parse_month(from_, field="from"),
        limit=limit,
        default_micro_usd=micro_from_usd(settings.default_rate_usd),
    )


@router.get("/{month}")
def get_period(
    month: str, _: ViewerAuth, session: ReadSession, settings: SettingsDep
) -> PeriodRead:
    """One month: what was booked (if closed), corrections booked for it, and today's figures."""
    return read_period(
        session,
        month=parse_month(month),
        default_micro_usd=micro_from_usd(settings.default_rate_usd),
    )


@router.post(
    "/{month}/close",
    responses={409: {"model": ErrorBody, "description": "Not over, closed, or out of order"}},
)
def post_close(
    month: str, principal: AdminAuth, session: WriteSession, settings: SettingsDep, clock: ClockDep
) -> PeriodRead:
    """Close a finished month: its export stays byte for byte what it is now; later changes
    to it are billed as corrections in the first open month."""
    return close_month(
        session,
        month=parse_month(month),
        actor=principal.name,
        now=clock(),
        default_micro_usd=micro_from_usd(settings.default_rate_usd),
    )
