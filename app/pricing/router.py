"""`/v1/rates` and `/v1/energy-rates`: effective-dated prices."""

from typing import Any

from fastapi import APIRouter, Response

from app.core.auth import AdminAuth, ViewerAuth
from app.core.clock import ClockDep
from app.core.db import ReadSession, WriteSession
from app.core.numbers import DecimalJsonRoute
from app.pricing.schemas import EnergyRateCreate, EnergyRateRead, RateCreate, RateRead
from app.pricing.service import list_energy_rates, list_rates, set_energy_rate, set_rate

router = APIRouter(prefix="/v1", tags=["pricing"], route_class=DecimalJsonRoute)
_SET: dict[int | str, dict[str, Any]] = {
    201: {"description": "A new price"},
    200: {"description": "A restatement, or no change"},
}


@router.get("/rates")
def get_rates(_: ViewerAuth, session: ReadSession) -> list[RateRead]:
    """Every GPU-hour price with the span it is in force."""
    return list_rates(session)


@router.post("/rates", status_code=201, responses=_SET)
def post_rate(
    body: RateCreate,
    principal: AdminAuth,
    session: WriteSession,
    clock: ClockDep,
    response: Response,
) -> RateRead:
    """Price a GPU model (on one cluster, or all) from an hour on; the past is re-priced."""
    rate, created = set_rate(session, body=body, actor=principal.name, now=clock())
    response.status_code = 201 if created else 200
    return rate


@router.get("/energy-rates")
def get_energy_rates(_: ViewerAuth, session: ReadSession) -> list[EnergyRateRead]:
    """Every kWh price with the span it is in force."""
    return list_energy_rates(session)


@router.post("/energy-rates", status_code=201, responses=_SET)
def post_energy_rate(
    body: EnergyRateCreate,
    principal: AdminAuth,
    session: WriteSession,
    clock: ClockDep,
    response: Response,
) -> EnergyRateRead:
    """Price measured energy per kWh from an hour on, shown apart from GPU-hour cost."""
    rate, created = set_energy_rate(session, body=body, actor=principal.name, now=clock())
    response.status_code = 201 if created else 200
    return rate
