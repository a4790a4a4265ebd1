"""`/v1/budgets`: limits on what a team, model or cluster spends, and how fast it spends."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from app.budgets.schemas import NAME_MAX, BudgetRead, BudgetSet
from app.budgets.service import delete_budget, list_budgets, read_budget, set_budget
from app.core.auth import AdminAuth, ViewerAuth
from app.core.clock import ClockDep
from app.core.db import ReadSession, SettingsDep, WriteSession
from app.core.labels import NAME_PATTERN
from app.core.numbers import DecimalJsonRoute
from app.core.units import micro_from_usd

router = APIRouter(prefix="/v1/budgets", tags=["budgets"], route_class=DecimalJsonRoute)
BudgetName = Annotated[
    str, Path(max_length=NAME_MAX, pattern=NAME_PATTERN, examples=["nlp-monthly"])
]
_SET: dict[int | str, dict[str, Any]] = {
    201: {"description": "A new budget"},
    200: {"description": "The budget replaced, or unchanged"},
}


@router.get("")
def get_budgets(
    _: ViewerAuth, session: ReadSession, settings: SettingsDep, clock: ClockDep
) -> list[BudgetRead]:
    """Every budget with what it has spent, its burn rate and its forecast crossing, by name."""
    default = micro_from_usd(settings.default_rate_usd)
    return list_budgets(session, now=clock(), default_micro_usd=default)


@router.get("/{name}")
def get_budget(
    name: BudgetName, _: ViewerAuth, session: ReadSession, settings: SettingsDep, clock: ClockDep
) -> BudgetRead:
    """One budget with what it has spent, its burn rate and its forecast crossing."""
    default = micro_from_usd(settings.default_rate_usd)
    return read_budget(session, name=name, now=clock(), default_micro_usd=default)


@router.put("/{name}", status_code=201, responses=_SET)
def put_budget(
    name: BudgetName,
    body: BudgetSet,
    principal: AdminAuth,
    session: WriteSession,
    settings: SettingsDep,
    clock: ClockDep,
    response: Response,
) -> BudgetRead:
    """Create a budget, or replace it whole: per UTC month or over a range of whole hours,
    in USD (the GPU-hour cost, as billed) or GPU-hours."""
    budget, created = set_budget(
        session,
        name=name,
        body=body,
        actor=principal.name,
        now=clock(),
        default_micro_usd=micro_from_usd(settings.default_rate_usd),
    )
    response.status_code = 201 if created else 200
    return budget


@router.delete("/{name}", status_code=204, response_class=Response)
def remove_budget(
    name: BudgetName, principal: AdminAuth, session: WriteSession, clock: ClockDep
) -> Response:
    """Delete a budget (its audit entries stay)."""
    delete_budget(session, name=name, actor=principal.name, now=clock())
    return Response(status_code=204)
