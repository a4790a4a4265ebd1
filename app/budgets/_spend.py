"""What budgets' scopes spent: one cost roll-up per scope kind and span, shared by budgets.

Spend is the books' priced usage of jobs, summed by the cost roll-up itself (`cost_groups`)
at the prices every cost figure uses, so that a budget spends exactly what `GET /v1/costs`
shows as `cost_usd` (or `gpu_hours`) and the FOCUS export bills for the same scope and hours.
Energy has a price of its own, shown beside the GPU-hour cost and never added to it, and
the bill has none: a USD budget does not count it either. Idle capacity is no one's spend.

Budgets with the same scope kind and span (every month budget, at any moment) share one
roll-up grouped by the scope's value, so reading a thousand budgets costs the database what
reading one of each kind does.
"""

from datetime import datetime

from sqlalchemy.orm import Session

from app.budgets.rules import gpu_hour_parts
from app.costs.figures import Exact
from app.costs.service import cost_groups
from app.models import Budget

Span = tuple[datetime, datetime]


class Spending:
    """Spend per scope value, read once per (scope kind, span) and kept for the session's
    read; with `only`, of that one value (reading a single budget)."""

    def __init__(self, session: Session, *, default_micro_usd: int, only: str | None = None):
        self._session = session
        self._default = default_micro_usd
        self._only = only
        self._read: dict[tuple[str, Span], dict[str, Exact]] = {}

    def of(self, budget: Budget, span: Span) -> int:
        """What `budget`'s scope spent in [start, end), in `PARTS` of the budget's unit."""
        key = (budget.scope, span)
        if key not in self._read:
            self._read[key] = self._by_value(budget.scope, span)
        exact = self._read[key].get(budget.scope_value)
        if exact is None:
            return 0
        return gpu_hour_parts(exact.gpu_us) if budget.unit == "gpu_hours" else exact.cost

    def _by_value(self, scope: str, span: Span) -> dict[str, Exact]:
        start, end = span
        if start >= end:
            return {}
        groups = cost_groups(
            self._session,
            start=start,
            end=end,
            group_by=[scope],
            filters={scope: self._only},
            include_idle=False,
            default_micro_usd=self._default,
        )
        return {group.key(scope): group.exact for group in groups}
