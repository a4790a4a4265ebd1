"""What a scenario should cost, worked out from its file alone.

Plain interval arithmetic over the scenario's jobs and events, sharing nothing with the
collector or the service: the fleet's measured totals are checked against this.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from simulator.scenario import Job, SimScenario

DEFAULT_USD_PER_GPU_HOUR = Fraction(2)
IDLE = "(idle)"


@dataclass
class Totals:
    gpu_seconds: Fraction = Fraction(0)
    busy_gpu_seconds: Fraction = Fraction(0)
    cost_usd: Fraction = Fraction(0)

    def add(self, other: Totals) -> None:
        self.gpu_seconds += other.gpu_seconds
        self.busy_gpu_seconds += other.busy_gpu_seconds
        self.cost_usd += other.cost_usd


@dataclass
class Expected:
    by_job: dict[str | None, Totals] = field(default_factory=lambda: defaultdict(Totals))

    def by(self, scenario: SimScenario, key: str) -> dict[str, Totals]:
        """Grouped by a job field (`team`, `model`, `phase`); idle time is `(idle)`."""
        jobs = {j.job_id: j for j in scenario.jobs}
        grouped: dict[str, Totals] = defaultdict(Totals)
        for job_id, totals in self.by_job.items():
            name = IDLE if job_id is None else getattr(jobs[job_id], key) or "(unattributed)"
            grouped[name].add(totals)
        return dict(grouped)

    def total(self) -> Totals:
        whole = Totals()
        for totals in self.by_job.values():
            whole.add(totals)
        return whole


def _cut(spans: list[tuple[Fraction, Fraction]], hole: tuple[Fraction, Fraction]) -> list:
    return [
        part
        for lo, hi in spans
        for part in ((lo, min(hi, hole[0])), (max(lo, hole[1]), hi))
        if part[1] > part[0]
    ]


def _rates(scenario: SimScenario, gpu_model: str) -> list[tuple[Fraction, Fraction]]:
    """(from, USD per GPU-hour) in time order, the default before the first change."""
    changes = sorted(
        (e.at, Fraction(Decimal(e.usd_per_gpu_hour or 0)))
        for e in scenario.events
        if e.kind == "rate-change" and (e.gpu_model or scenario.gpu_model) == gpu_model
    )
    return [(Fraction(-(10**12)), DEFAULT_USD_PER_GPU_HOUR), *changes]


def _cost(span: tuple[Fraction, Fraction], weight: Fraction, rates: list) -> Fraction:
    total = Fraction(0)
    bounds = [at for at, _ in rates[1:]] + [span[1]]
    for (start, rate), end in zip(rates, bounds, strict=True):
        lo, hi = max(start, span[0]), min(end, span[1])
        if hi > lo:
            total += weight * (hi - lo) * rate / 3600
    return total


def expected_totals(scenario: SimScenario) -> Expected:
    """GPU-seconds, busy GPU-seconds and cost per job (None: idle), from the scenario alone."""
    result = Expected()
    restarts = [e for e in scenario.events if e.kind == "job-restart"]

    def running(job: Job) -> list[tuple[Fraction, Fraction]]:
        spans = [(job.start, job.end)]
        if not job.held_idle:  # the mapping holds the GPU through a restart; processes do not
            for event in restarts:
                if event.job_id == job.job_id:
                    spans = _cut(spans, (event.at, event.at + event.duration))
        return spans

    def account(job: Job | None, spans: list, weight: Fraction, rates: list) -> None:
        totals = result.by_job[None if job is None else job.job_id]
        busy = 0 if job is None or job.held_idle or job.mig is not None else job.util_pct
        for lo, hi in spans:
            totals.gpu_seconds += weight * (hi - lo)
            totals.busy_gpu_seconds += weight * (hi - lo) * busy / 100
            totals.cost_usd += _cost((lo, hi), weight, rates)

    for gpu in range(scenario.gpu_count):
        node = gpu // scenario.gpus_per_node
        model = scenario.gpu_model_of(node)
        rates = _rates(scenario, model)
        alive = [(Fraction(0), scenario.end)]
        for event in scenario.events:
            if event.kind == "node-down" and event.node == node:
                alive = _cut(alive, (event.at, event.at + event.duration))
            if event.kind == "gpu-lost" and event.gpu == gpu:
                alive = _cut(alive, (event.at, scenario.end))
        slices = scenario.mig.get(gpu)
        units = (
            [(None, Fraction(1))]
            if slices is None
            else [
                (i, Fraction(n, max(_total_slices(model), sum(slices))))
                for i, n in enumerate(slices)
            ]
        )
        if slices is not None:
            rest = 1 - sum((w for _, w in units), Fraction(0))
            if rest:
                account(None, alive, rest, rates)
        for instance, weight in units:
            free = alive
            for job in scenario.jobs:
                if job.holds(gpu) and (job.mig is None or job.mig[1] == instance):
                    held = [
                        (max(lo, a), min(hi, b))
                        for lo, hi in running(job)
                        for a, b in alive
                        if min(hi, b) > max(lo, a)
                    ]
                    account(job, held, weight, rates)
                    for span in held:
                        free = _cut(free, span)
            account(None, free, weight, rates)
    return result


def _total_slices(gpu_model: str) -> int:
    """Compute slices of a whole GPU in MIG mode: 4 on an A30, 7 on the others NVIDIA sells."""
    return 4 if "A30" in gpu_model.split() else 7
