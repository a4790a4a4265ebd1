"""`GET /v1/costs` and `GET /v1/models/{model}/cost`: what training cost, and who spent it."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from app.core.auth import ViewerAuth
from app.core.db import ReadSession, SettingsDep
from app.core.errors import PRINTABLE, ErrorBody, InvalidInput
from app.core.numbers import DecimalJsonRoute
from app.core.timestamps import UtcQueryHour
from app.core.units import micro_from_usd
from app.costs.model_cost import model_cost
from app.costs.schemas import GROUP_KEYS, CostReport, ModelCost
from app.costs.service import cost_report
from app.scenarios.reads import scenario_prices
from app.scenarios.schemas import SCENARIO_NAME

router = APIRouter(prefix="/v1", tags=["costs"], route_class=DecimalJsonRoute)

Instant = Annotated[
    UtcQueryHour | None,
    Query(description="A whole UTC hour; a time without zone is taken as UTC."),
]
Filter = Annotated[str | None, Query(max_length=128, pattern=PRINTABLE)]
ScenarioName = Annotated[
    str | None,
    Query(
        max_length=64,
        pattern=SCENARIO_NAME,
        description="Price the usage under this price scenario (`/v1/scenarios`), not the "
        "books: its prices where it has them, the books' elsewhere (`rate_sources` says which).",
    ),
]


def _period(
    start: datetime | None, end: datetime | None
) -> tuple[datetime | None, datetime | None]:
    if start and end and end <= start:
        raise InvalidInput("to", "must be after from")
    return start, end


def _group_by(text: str) -> list[str]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    for key in keys:
        if key not in GROUP_KEYS:
            raise InvalidInput("group_by", f"'{key}' is not one of {', '.join(GROUP_KEYS)}")
    if len(set(keys)) != len(keys):
        raise InvalidInput("group_by", "a key is given twice")
    return keys


@router.get("/costs")
def get_costs(
    _: ViewerAuth,
    session: ReadSession,
    settings: SettingsDep,
    start: Annotated[Instant, Query(alias="from")] = None,
    end: Annotated[Instant, Query(alias="to")] = None,
    group_by: Annotated[str, Query(max_length=200, examples=["team,model"])] = "",
    model: Filter = None,
    phase: Filter = None,
    team: Filter = None,
    user: Filter = None,
    cluster: Filter = None,
    gpu_model: Filter = None,
    job_id: Filter = None,
    include_idle: bool = True,
    scenario: ScenarioName = None,
) -> CostReport:
    """GPU-hours, busy GPU-hours, energy and cost, grouped by any of the keys, with a total.

    Idle capacity is its own group (`model: "(idle)"`); jobs without a model are
    `"(unattributed)"`. Usage is per UTC hour: `from` and `to` are whole hours, `to` exclusive.
    """
    start, end = _period(start, end)
    filters = {
        "model": model,
        "phase": phase,
        "team": team,
        "user": user,
        "cluster": cluster,
        "gpu_model": gpu_model,
        "job_id": job_id,
    }
    return cost_report(
        session,
        start=start,
        end=end,
        group_by=_group_by(group_by),
        filters=filters,
        include_idle=include_idle,
        default_micro_usd=micro_from_usd(settings.default_rate_usd),
        scenario=scenario_prices(session, scenario),
    )


@router.get(
    "/models/{model}/cost",
    responses={404: {"model": ErrorBody, "description": "No usage for the model"}},
)
def get_model_cost(
    model: str,
    _: ViewerAuth,
    session: ReadSession,
    settings: SettingsDep,
    start: Annotated[Instant, Query(alias="from")] = None,
    end: Annotated[Instant, Query(alias="to")] = None,
    cluster: Filter = None,
    scenario: ScenarioName = None,
) -> ModelCost:
    """A model's training cost phase by phase (pre-training, context extension,
    post-training, then others), with shares, first and last usage and peak GPUs."""
    start, end = _period(start, end)
    return model_cost(
        session,
        model=model,
        start=start,
        end=end,
        cluster=cluster,
        default_micro_usd=micro_from_usd(settings.default_rate_usd),
        scenario=scenario_prices(session, scenario),
    )
