"""One read of everything `/metrics` says about accounting and the fleet.

Accounting figures come from the cost roll-up itself (`cost_groups`), so Prometheus and the
REST API sum the same priced atoms and agree to the last digit; several replicas reading the
same database expose the same values, and a restart resets nothing.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from sqlalchemy import String, case, func, select
from sqlalchemy.orm import Session

from app.core.calendar import floor_month
from app.core.labels import UNATTRIBUTED
from app.core.sums import exact_sum
from app.core.units import seconds, shown
from app.costs.figures import Exact
from app.costs.service import CostGroup, cost_groups
from app.models import Cluster, Gpu, Job, MonthlyUsage, Node

LABEL_NAMES = ("cluster", "model", "phase", "team", "gpu_model")


class Attribution(NamedTuple):
    cluster: str
    model: str
    phase: str
    team: str
    gpu_model: str


@dataclass(frozen=True)
class Usage:
    """Figures to date of one attribution, in the API's exact decimals."""

    gpu_seconds: Decimal
    busy_gpu_seconds: Decimal
    energy_joules: Decimal
    cost_usd: Decimal


@dataclass(frozen=True)
class Metered:
    """Usage to date of one cluster and GPU model, in the rollup's exact integer units."""

    gpu_us: int
    idle_us: int
    busy_us: int
    energy_mj: int


@dataclass(frozen=True)
class NodeState:
    cluster: str
    node: str
    last_report_at: datetime
    gpus: dict[str, int]  # GPU model -> GPUs known on the node


@dataclass(frozen=True)
class Snapshot:
    read_at: datetime
    metered: dict[tuple[str, str], Metered]
    usage: dict[Attribution, Usage]
    month_cost_usd: dict[Attribution, Decimal]
    nodes: list[NodeState]
    running_jobs: dict[tuple[str, str], int] = field(default_factory=dict)


def _attribution(group: CostGroup) -> Attribution:
    return Attribution(*(group.key(name) for name in LABEL_NAMES))


def _usage(exact: Exact) -> Usage:
    """Exact base units; the cost rounded once, as the API shows it."""
    return Usage(
        gpu_seconds=seconds(exact.gpu_us),
        busy_gpu_seconds=seconds(exact.busy_us),
        energy_joules=Decimal(exact.energy_mj).scaleb(-3),
        cost_usd=shown(exact.cost),
    )


def _metered(session: Session) -> dict[tuple[str, str], Metered]:
    """Integer sums per cluster and GPU model, from the rollup's month level: they only
    grow, whatever is restated."""
    idle_us = case((MonthlyUsage.job_id.is_(None), MonthlyUsage.gpu_us), else_=0)
    query = (
        select(
            Cluster.name,
            MonthlyUsage.gpu_model,
            exact_sum(MonthlyUsage.gpu_us),
            exact_sum(idle_us),
            exact_sum(MonthlyUsage.busy_us),
            exact_sum(MonthlyUsage.energy_mj),
        )
        .join(Cluster, Cluster.id == MonthlyUsage.cluster_id)
        .group_by(Cluster.name, MonthlyUsage.gpu_model)
    )
    return {
        (cluster, gpu_model): Metered(*(int(value) for value in sums))
        for cluster, gpu_model, *sums in session.execute(query)
    }


def _nodes(session: Session) -> list[NodeState]:
    query = (
        select(Cluster.name, Node.name, Node.last_report_at, Gpu.model, func.count(Gpu.id))
        .join(Cluster, Cluster.id == Node.cluster_id)
        .outerjoin(Gpu, Gpu.node_id == Node.id)
        .group_by(Cluster.name, Node.name, Node.last_report_at, Gpu.model)
    )
    nodes: dict[tuple[str, str], NodeState] = {}
    for cluster, node, last_report_at, gpu_model, gpus in session.execute(query):
        state = nodes.setdefault((cluster, node), NodeState(cluster, node, last_report_at, gpus={}))
        if gpu_model is not None:
            state.gpus[gpu_model] = int(gpus)
    return list(nodes.values())


def _running_jobs(session: Session, *, since: datetime) -> dict[tuple[str, str], int]:
    """Jobs per cluster and model whose newest usage ends after `since` (0 for the others)."""
    model = func.coalesce(Job.model, UNATTRIBUTED, type_=String)
    running = func.count(Job.id).filter(Job.last_seen >= since)
    query = (
        select(Cluster.name, model, running)
        .join(Cluster, Cluster.id == Job.cluster_id)
        .group_by(Cluster.name, model)
    )
    return {(cluster, name): int(count) for cluster, name, count in session.execute(query)}


def read_snapshot(
    session: Session, *, now: datetime, default_micro_usd: int, reporting_window_s: int
) -> Snapshot:
    """Accounting figures to date and this UTC month, nodes, and running jobs, as of `now`."""

    def by_attribution(start: datetime | None) -> list[CostGroup]:
        return cost_groups(
            session,
            start=start,
            end=None,
            group_by=list(LABEL_NAMES),
            filters={},
            include_idle=True,
            default_micro_usd=default_micro_usd,
        )

    return Snapshot(
        read_at=now,
        metered=_metered(session),
        usage={_attribution(group): _usage(group.exact) for group in by_attribution(None)},
        month_cost_usd={
            _attribution(group): shown(group.exact.cost)
            for group in by_attribution(floor_month(now))
        },
        nodes=_nodes(session),
        running_jobs=_running_jobs(session, since=now - timedelta(seconds=reporting_window_s)),
    )
