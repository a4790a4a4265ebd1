"""A model's efficiency per phase: GPU-hours per trillion tokens and USD per million tokens.

A job may carry the tokens it processed (its whole run's). A job *carries tokens* for a
model's cost when it has a count and all of its usage lies in the period asked for (its
first and last reported instants within `from` and `to`): the count of a job cut by the
period would be set against only part of its GPU-hours.

The two ratios are given for a phase (and the total) only when jobs that carry tokens hold
all of its GPU-time, and their tokens add up to more than zero. A ratio over only some of a
phase's jobs would be read as the phase's own, and the total's as the whole run's: with
tokens on DeepSeek-V3's pre-training job only, the total would read 180K GPU-hours per
trillion tokens for a run whose later phases add 124K GPU-hours and no counted token. So
`tokens` and `gpu_hours_with_tokens` are given wherever some job carries tokens, and say
what is missing when a ratio is null.

Both ratios are exact quotients of integers (microseconds, `PARTS` of a USD, tokens),
rounded once, as shown: nine decimal places, half to even, like every shown figure.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, select

from app.core.sums import exact_sum
from app.core.units import PARTS, US_PER_HOUR, hours, rounded
from app.costs.figures import Exact
from app.models import Job
from app.totals.levels import MONTH, on_level

TRILLION = 10**12
MILLION = 10**6


@dataclass(slots=True)
class Counted:
    """The jobs of a phase that carry tokens: their tokens, and their GPU-time."""

    tokens: int = 0
    gpu_us: int = 0

    def add(self, other: "Counted") -> None:
        self.tokens += other.tokens
        self.gpu_us += other.gpu_us


def counted_by_phase(
    connection: Connection,
    *,
    owned: ColumnElement[bool],
    where: list[ColumnElement[bool]],
    start: datetime | None,
    end: datetime | None,
    shown: Callable[[str | None], str],
) -> tuple[dict[str, Counted], Counted | None]:
    """The tokens and GPU-time of the `owned` jobs matching `where` (conditions on the hourly
    level, not its hours) that carry tokens, per phase by the name `shown` gives a stored
    one (phases with none left out), and in all (None when no job carries tokens)."""
    carrying = [owned, Job.tokens.is_not(None)]
    if start is not None:
        carrying.append(Job.first_seen >= start)
    if end is not None:
        carrying.append(Job.last_seen <= end)
    # Each job's GPU-time first (a job has atoms per month and GPU model), then per phase:
    # joined to the atoms directly, a job's tokens would be counted once per atom. A job
    # that carries tokens has all of its usage within the period, so its months hold it.
    months = MONTH.table
    per_job = (
        select(months.c.job_id, exact_sum(months.c.gpu_us).label("gpu_us"))
        .where(
            months.c.job_id.in_(select(Job.id).where(*carrying)),
            *(on_level(condition, MONTH) for condition in where),
        )
        .group_by(months.c.job_id)
        .subquery("per_job")
    )
    query = (
        select(Job.phase, exact_sum(Job.tokens).label("tokens"), exact_sum(per_job.c.gpu_us))
        .join(per_job, per_job.c.job_id == Job.id)
        .group_by(Job.phase)
    )
    by_phase: dict[str, Counted] = {}
    total = None
    for phase, tokens, gpu_us in connection.execute(query):
        counted = Counted(tokens=int(tokens), gpu_us=int(gpu_us))
        by_phase.setdefault(shown(phase), Counted()).add(counted)
        total = total or Counted()
        total.add(counted)
    return by_phase, total


def efficiency(figures: Exact, counted: Counted | None) -> dict[str, Any]:
    """The efficiency fields of a phase (`schemas.PhaseCost`) whose figures are `figures`."""
    if counted is None:
        return {
            "tokens": None,
            "gpu_hours_with_tokens": hours(0),
            "gpu_hours_per_trillion_tokens": None,
            "usd_per_million_tokens": None,
        }
    whole = counted.gpu_us == figures.gpu_us and counted.tokens > 0
    return {
        "tokens": counted.tokens,
        "gpu_hours_with_tokens": hours(counted.gpu_us),
        "gpu_hours_per_trillion_tokens": (
            rounded(figures.gpu_us * TRILLION, US_PER_HOUR * counted.tokens) if whole else None
        ),
        "usd_per_million_tokens": (
            rounded(figures.cost * MILLION, PARTS * counted.tokens) if whole else None
        ),
    }
