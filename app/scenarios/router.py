"""`/v1/scenarios`: named price scenarios, for costs asked with `?scenario=` and never the books."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from app.core.auth import AdminAuth, ViewerAuth
from app.core.clock import ClockDep
from app.core.db import ReadSession, WriteSession
from app.core.numbers import DecimalJsonRoute
from app.scenarios.reads import get_scenario, list_scenarios
from app.scenarios.schemas import (
    SCENARIO_NAME,
    ScenarioPriceCreate,
    ScenarioPriceRead,
    ScenarioRead,
    ScenarioWrite,
)
from app.scenarios.service import add_price, delete_scenario, set_scenario

router = APIRouter(prefix="/v1/scenarios", tags=["scenarios"], route_class=DecimalJsonRoute)
Name = Annotated[
    str, Path(min_length=1, max_length=64, pattern=SCENARIO_NAME, examples=["rental-2usd"])
]
_SET: dict[int | str, dict[str, Any]] = {
    201: {"description": "A new scenario or price"},
    200: {"description": "No change, or a scenario's new description"},
}


@router.get("")
def get_scenarios(_: ViewerAuth, session: ReadSession) -> list[ScenarioRead]:
    """Every scenario with its prices and the span each is in force."""
    return list_scenarios(session)


@router.get("/{name}")
def get_one(name: Name, _: ViewerAuth, session: ReadSession) -> ScenarioRead:
    """A scenario with its prices, the span each is in force and the inputs of a TCO price."""
    return get_scenario(session, name=name)


@router.put("/{name}", status_code=201, responses=_SET)
def put_scenario(
    name: Name,
    body: ScenarioWrite,
    principal: AdminAuth,
    session: WriteSession,
    clock: ClockDep,
    response: Response,
) -> ScenarioRead:
    """Create a scenario, or change its description. It prices nothing in the books."""
    scenario, created = set_scenario(
        session, name=name, description=body.description, actor=principal.name, now=clock()
    )
    response.status_code = 201 if created else 200
    return scenario


@router.delete("/{name}", status_code=204)
def remove_scenario(
    name: Name, principal: AdminAuth, session: WriteSession, clock: ClockDep
) -> None:
    """Remove a scenario and its prices."""
    delete_scenario(session, name=name, actor=principal.name, now=clock())


@router.post("/{name}/prices", status_code=201, responses=_SET)
def post_price(
    name: Name,
    body: ScenarioPriceCreate,
    principal: AdminAuth,
    session: WriteSession,
    clock: ClockDep,
    response: Response,
) -> ScenarioPriceRead:
    """Price a GPU model (or, with none, every GPU model without its own price) in the
    scenario from an hour on: `usd_per_gpu_hour` (and `usd_per_kwh`), or `tco`, from which
    both are derived. The same price again is no change (200); another one at the same
    hour, a conflict (409)."""
    price, created = add_price(session, name=name, body=body, actor=principal.name, now=clock())
    response.status_code = 201 if created else 200
    return price
