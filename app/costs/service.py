"""Cost roll-ups: any grouping of the priced hourly atoms, and a model's per-phase table."""

from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import ColumnElement, Select, Subquery, select
from sqlalchemy.orm import Session

from app.core.labels import canonical_phase
from app.core.units import usd_from_micro
from app.costs.figures import Exact, grouped
from app.costs.query import (
    LABELS,
    built_once,
    joined,
    label,
    label_is,
    price_columns,
    priced_usage,
    prices_for,
    resum,
)
from app.costs.schemas import CostReport, CostRow, Figures
from app.models import Cluster, HourlyUsage, Job
from app.pricing.atom_prices import AtomPrices

if TYPE_CHECKING:
    from app.scenarios.prices import ScenarioPrices


class CostGroup(NamedTuple):
    """One group of a cost roll-up (`cost_groups`): the value of each key it is grouped by
    (a `job` with its `cluster` beside it), and its exact figures."""

    keys: dict[str, str | None]  # a job's scheduler id is null for idle capacity
    exact: Exact

    def key(self, name: str) -> str:
        """The group's value of key `name`: a job label, cluster, GPU model, day or month,
        never null (idle capacity and unlabelled jobs have label values of their own)."""
        value = self.keys[name]
        if value is None:
            raise ValueError(f"the group's {name} is null: read it from `keys`")
        return value


def _key_columns(group_by: list[str], priced: Subquery) -> dict[str, Any]:
    """The stage-two columns each group key reads (days and months come from stage one)."""
    columns: dict[str, Any] = {}
    for key in group_by:
        if key in LABELS:
            columns[key] = label(key, priced.c.job_id)
        elif key == "job":
            # A scheduler's job id is unique within its cluster only.
            columns["cluster"] = Cluster.name
            columns["job"] = Job.scheduler_job_id
        elif key == "cluster":
            columns["cluster"] = Cluster.name
        elif key == "gpu_model":
            columns["gpu_model"] = priced.c.gpu_model
        else:
            columns[key] = priced.c[key]
    return columns


def rollup_filters(filters: dict[str, str | None], include_idle: bool) -> list[ColumnElement[bool]]:
    """Conditions on the rollup itself; label filters go through the jobs' indexes."""
    conditions = []
    for name, value in filters.items():
        if value is None:
            continue
        if name in LABELS:
            conditions.append(label_is(name, canonical_phase(value) if name == "phase" else value))
        elif name == "cluster":
            conditions.append(
                HourlyUsage.cluster_id.in_(select(Cluster.id).where(Cluster.name == value))
            )
        elif name == "gpu_model":
            conditions.append(HourlyUsage.gpu_model == value)
        elif name == "job_id":
            conditions.append(
                HourlyUsage.job_id.in_(select(Job.id).where(Job.scheduler_job_id == value))
            )
    if not include_idle:
        conditions.append(HourlyUsage.job_id.is_not(None))
    return conditions


def cost_groups(
    session: Session,
    *,
    start: datetime | None,
    end: datetime | None,
    group_by: list[str],
    filters: dict[str, str | None],
    include_idle: bool,
    default_micro_usd: int,
    scenario: "ScenarioPrices | None" = None,
) -> list[CostGroup]:
    """The exact figures of each group of the keys asked for, in the keys' order, at the
    books' prices or a `scenario`'s."""
    query, names = _groups_query(
        prices_for(session, default_micro_usd=default_micro_usd, scenario=scenario),
        start=start,
        end=end,
        group_by=tuple(group_by),
        filters=tuple(filters.items()),
        include_idle=include_idle,
    )
    groups = grouped(session.execute(query), lambda row: tuple(getattr(row, n) for n in names))
    keys = [name.removeprefix("key_") for name in names]
    return [CostGroup(dict(zip(keys, key, strict=True)), exact) for key, exact in groups]


@built_once
def _groups_query(
    prices: AtomPrices,
    *,
    start: datetime | None,
    end: datetime | None,
    group_by: tuple[str, ...],
    filters: tuple[tuple[str, str | None], ...],
    include_idle: bool,
) -> tuple[Select[Any], tuple[str, ...]]:
    """The roll-up's statement, and the names of its key columns, in the keys' order."""
    priced = priced_usage(
        prices,
        start=start,
        end=end,
        where=rollup_filters(dict(filters), include_idle),
        by={key: key for key in group_by if key in ("day", "month")},
    ).subquery("priced")
    keys = _key_columns(list(group_by), priced)
    price_keys = price_columns(priced)
    query = (
        joined(priced)
        .add_columns(
            *(column.label(f"key_{name}") for name, column in keys.items()),
            *price_keys,
            *resum(priced),
        )
        .group_by(*keys.values(), *price_keys)
        .order_by(*(column.nulls_first() for column in keys.values()))
    )
    return query, tuple(f"key_{name}" for name in keys)


def cost_report(
    session: Session,
    *,
    start: datetime | None,
    end: datetime | None,
    group_by: list[str],
    filters: dict[str, str | None],
    include_idle: bool,
    default_micro_usd: int,
    scenario: "ScenarioPrices | None" = None,
) -> CostReport:
    """Usage and cost grouped by the keys asked for, with the exact total of the rows, at the
    books' prices or a `scenario`'s."""
    groups = cost_groups(
        session,
        start=start,
        end=end,
        group_by=group_by,
        filters=filters,
        include_idle=include_idle,
        default_micro_usd=default_micro_usd,
        scenario=scenario,
    )
    total = Exact()
    for _, exact in groups:
        total.add(exact)
    return CostReport(
        start=start,
        end=end,
        group_by=group_by,
        scenario=None if scenario is None else scenario.name,
        default_usd_per_gpu_hour=usd_from_micro(default_micro_usd),
        rows=[CostRow(**keys, **exact.shown()) for keys, exact in groups],
        total=Figures(**total.shown()),
    )
