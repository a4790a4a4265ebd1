"""The figures the page at `/` shows, read through the costs services (nothing is priced
here): each model's training-cost table as `gpucost report MODEL` prints it, and this UTC
month by team and model with its idle share."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from app.core.calendar import month_bounds, month_of
from app.core.labels import IDLE
from app.core.units import rounded
from app.costs.figures import Exact
from app.costs.model_cost import model_cost
from app.costs.report_table import gpu_hours_text, rate_note, table_rows, usd_text
from app.costs.service import cost_groups

# Figures in full as the CLI's table shows them below 1K GPU-hours and $1M, from its one home.
from app.jobs.service import latest_models

IDLE_SHARE_PLACES = 1  # the idle share in percent, to a tenth
# Each model's table is a query over its whole history: the page shows the models used
# last, and says how many more there are (`gpucost models` lists them all).
PAGE_MODELS = 12


@dataclass(frozen=True)
class ModelTable:
    model: str
    rows: list[list[str]]  # header, GPU-hours, USD: the V3 report's layout
    note: str


@dataclass(frozen=True)
class MonthRow:
    team: str
    model: str
    gpu_hours: str
    cost_usd: str


@dataclass(frozen=True)
class Summary:
    month: str  # `2025-01`, UTC
    start: datetime
    end: datetime
    models: list[ModelTable]  # the models used last, at most PAGE_MODELS
    more_models: int  # models with usage not shown
    month_rows: list[MonthRow]
    month_total: MonthRow
    idle_gpu_hours: str
    idle_share_pct: str | None  # None in a month with no usage


def read_summary(session: Session, *, now: datetime, default_micro_usd: int) -> Summary:
    """The page's figures as of `now`: every model with usage, and `now`'s UTC month."""
    month = month_of(now)
    start, end = month_bounds(month)
    models = []
    shown, with_usage = latest_models(session, limit=PAGE_MODELS)
    for model in shown:
        cost = model_cost(
            session,
            model=model,
            start=None,
            end=None,
            cluster=None,
            default_micro_usd=default_micro_usd,
        )
        models.append(ModelTable(model=model, rows=table_rows(cost), note=rate_note(cost)))
    groups = cost_groups(
        session,
        start=start,
        end=end,
        group_by=["team", "model"],
        filters={},
        include_idle=True,
        default_micro_usd=default_micro_usd,
    )
    total, idle = Exact(), Exact()
    for group in groups:
        total.add(group.exact)
        if group.key("model") == IDLE:
            idle.add(group.exact)
    return Summary(
        month=month,
        start=start,
        end=end,
        models=models,
        more_models=with_usage - len(models),
        month_rows=[
            _month_row(group.key("team"), group.key("model"), group.exact) for group in groups
        ],
        month_total=_month_row("Total", "", total),
        idle_gpu_hours=_month_row(IDLE, IDLE, idle).gpu_hours,
        idle_share_pct=(
            str(rounded(100 * idle.gpu_us, total.gpu_us, IDLE_SHARE_PLACES))
            if total.gpu_us
            else None
        ),
    )


def _month_row(team: str, model: str, exact: Exact) -> MonthRow:
    shown = exact.shown()
    return MonthRow(
        team=team,
        model=model,
        gpu_hours=gpu_hours_text(shown["gpu_hours"], in_thousands=False),
        cost_usd=usd_text(shown["cost_usd"], in_millions=False),
    )
