"""Fleet scenarios: a cluster, its jobs and events, read from a TOML file.

Times are offsets from the scenario's `start` (`"1300.78125h"`, `"30m"`, `"90s"` or a number
of seconds), kept as exact fractions so that a phase sized to a GPU-hour figure is exact.
GPUs are numbered across the cluster (node × gpus_per_node + index); a job holds the
`gpus` consecutive GPUs from `first_gpu`, or one MIG instance (`mig = [gpu, instance]`).
A job may give the `tokens` it processed, sent with its labels; a `[reference]` table, what
a published report states of one phase's GPU-hours per trillion tokens, which `gpucost demo`
sets beside what it measures.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

from collectors.config import exact_duration

EVENT_KINDS = ("node-down", "gpu-lost", "job-restart", "rate-change")


class ScenarioError(ValueError):
    """A scenario file that cannot be used, said in one line."""


def seconds(value: Any, what: str) -> Fraction:
    """An exact duration from `"1300.78125h"`, `"15m"`, `"2.5s"` or a number of seconds."""
    exact = exact_duration(value)
    if exact is None:
        raise ScenarioError(f"{what}: {value!r} is not a duration (like 90s, 15m, 1300.78125h)")
    return exact


@dataclass(frozen=True)
class Job:
    job_id: str
    model: str | None
    phase: str | None
    team: str | None
    user: str | None
    start: Fraction
    end: Fraction
    first_gpu: int
    gpus: int
    mig: tuple[int, int] | None
    held_idle: bool
    util_pct: int
    power_w: int
    tokens: int | None = None  # tokens the job processed, sent with its labels

    def metadata(self) -> dict[str, str]:
        fields = {"model": self.model, "phase": self.phase, "team": self.team, "user": self.user}
        return {k: v for k, v in fields.items() if v is not None}

    def registration(self) -> dict[str, str | int]:
        """What the scheduler says of the job: its labels, and its tokens where known."""
        tokens = {} if self.tokens is None else {"tokens": self.tokens}
        return {**self.metadata(), **tokens}

    def holds(self, gpu: int) -> bool:
        if self.mig is not None:
            return gpu == self.mig[0]
        return self.first_gpu <= gpu < self.first_gpu + self.gpus


@dataclass(frozen=True)
class Event:
    kind: str
    at: Fraction
    duration: Fraction = Fraction(0)
    node: int | None = None
    gpu: int | None = None
    job_id: str | None = None
    gpu_model: str | None = None
    usd_per_gpu_hour: Decimal | None = None


@dataclass(frozen=True)
class Reference:
    """What a published report states of the run, to set beside what is measured: the
    GPU-hours per trillion tokens of one phase."""

    phase: str
    gpu_hours_per_trillion_tokens: Decimal


@dataclass(frozen=True)
class SimScenario:
    name: str
    cluster: str
    start: datetime
    end: Fraction
    nodes: int
    gpus_per_node: int
    gpu_model: str
    idle_power_w: int
    mig: dict[int, tuple[int, ...]]
    jobs: tuple[Job, ...]
    node_models: dict[int, str] = field(default_factory=dict)
    events: tuple[Event, ...] = field(default=())
    description: str = ""
    reference: Reference | None = None

    @property
    def gpu_count(self) -> int:
        return self.nodes * self.gpus_per_node

    def gpu_model_of(self, node: int) -> str:
        return self.node_models.get(node, self.gpu_model)

    def at(self, offset: Fraction) -> datetime:
        return self.start + timedelta(microseconds=int(offset * 1_000_000))

    def regrouped(self, gpus_per_node: int) -> SimScenario:
        """The same GPUs as fewer, bigger nodes (node-level events are refused)."""
        if self.gpu_count % gpus_per_node:
            raise ScenarioError(f"{self.gpu_count} GPUs do not fill nodes of {gpus_per_node}")
        if self.node_models or any(e.kind == "node-down" for e in self.events):
            raise ScenarioError("a scenario with node outages or mixed GPUs cannot be regrouped")
        return replace(self, nodes=self.gpu_count // gpus_per_node, gpus_per_node=gpus_per_node)

    def boundaries(self) -> set[Fraction]:
        """Every moment a GPU's state may change."""
        moments = {Fraction(0), self.end}
        for job in self.jobs:
            moments |= {job.start, job.end}
        for event in self.events:
            moments |= {event.at, event.at + event.duration}
        return {m for m in moments if 0 <= m <= self.end}


def _job(raw: dict[str, Any], index: int) -> Job:
    where = f"jobs[{index}]"
    try:
        start = seconds(raw.get("start", 0), f"{where}.start")
        mig = raw.get("mig")
        return Job(
            job_id=str(raw["id"]),
            model=raw.get("model"),
            phase=raw.get("phase"),
            team=raw.get("team"),
            user=raw.get("user"),
            start=start,
            end=start + seconds(raw["duration"], f"{where}.duration"),
            first_gpu=int(raw.get("first_gpu", 0)),
            gpus=int(raw.get("gpus", 1 if mig else 0)),
            mig=None if mig is None else (int(mig[0]), int(mig[1])),
            held_idle=bool(raw.get("held_idle", False)),
            util_pct=int(raw.get("util_pct", 95)),
            power_w=int(raw.get("power_w", 600)),
            tokens=_tokens(raw.get("tokens"), f"{where}.tokens"),
        )
    except KeyError as missing:
        raise ScenarioError(f"{where}: {missing.args[0]!r} is required") from None


# The service's bound on a job's tokens (app.jobs.schemas.MAX_TOKENS; collectors never
# import app), so that a scenario's count is refused here, not by its registration.
MAX_TOKENS = 10**18


def _tokens(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
        raise ScenarioError(
            f"{what}: {value!r} is not a whole number of tokens from 0 to 10**18 (like 14_800_000)"
        )
    return value


def _reference(raw: Any) -> Reference | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ScenarioError("reference: must be a table ([reference])")
    figure = raw.get("gpu_hours_per_trillion_tokens")
    if (
        isinstance(figure, bool)
        or not isinstance(figure, int | float)
        or not math.isfinite(figure)
        or figure < 0
    ):
        raise ScenarioError(
            f"reference.gpu_hours_per_trillion_tokens: {figure!r} is not a number of GPU-hours"
        )
    if "phase" not in raw:
        raise ScenarioError("reference: 'phase' is required")
    return Reference(
        phase=str(raw["phase"]),
        gpu_hours_per_trillion_tokens=Decimal(str(figure)),
    )


def _event(raw: dict[str, Any], index: int) -> Event:
    where = f"events[{index}]"
    kind = str(raw.get("kind"))
    if kind not in EVENT_KINDS:
        raise ScenarioError(f"{where}.kind: {kind!r} is not one of {', '.join(EVENT_KINDS)}")
    rate = raw.get("usd_per_gpu_hour")
    return Event(
        kind=kind,
        at=seconds(raw.get("at", 0), f"{where}.at"),
        duration=seconds(raw.get("duration", 0), f"{where}.duration"),
        node=raw.get("node"),
        gpu=raw.get("gpu"),
        job_id=raw.get("job"),
        gpu_model=raw.get("gpu_model"),
        usd_per_gpu_hour=None if rate is None else Decimal(str(rate)),
    )


def parse(raw: dict[str, Any]) -> SimScenario:
    """A scenario from its TOML tables, checked for what would make it impossible."""
    start = datetime.fromisoformat(str(raw.get("start", "2026-01-05T00:00:00Z")))
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    jobs = tuple(_job(j, i) for i, j in enumerate(raw.get("jobs", [])))
    events = tuple(_event(e, i) for i, e in enumerate(raw.get("events", [])))
    last = max([j.end for j in jobs] + [e.at + e.duration for e in events] + [Fraction(0)])
    scenario = SimScenario(
        name=str(raw.get("name", "scenario")),
        cluster=str(raw.get("cluster", "sim")),
        description=str(raw.get("description", "")),
        start=start,
        end=seconds(raw["end"], "end") if "end" in raw else last,
        nodes=int(raw.get("nodes", 1)),
        gpus_per_node=int(raw.get("gpus_per_node", 8)),
        gpu_model=str(raw.get("gpu_model", "NVIDIA H800")),
        idle_power_w=int(raw.get("idle_power_w", 90)),
        mig={int(m["gpu"]): tuple(int(s) for s in m["slices"]) for m in raw.get("mig", [])},
        jobs=jobs,
        events=events,
        node_models={int(n["node"]): str(n["gpu_model"]) for n in raw.get("node_models", [])},
        reference=_reference(raw.get("reference")),
    )
    _check(scenario)
    return scenario


def _check(scenario: SimScenario) -> None:
    held: dict[tuple[int, int | None], list[Job]] = {}
    for job in scenario.jobs:
        gpus = [job.mig[0]] if job.mig else range(job.first_gpu, job.first_gpu + job.gpus)
        for gpu in gpus:
            if not 0 <= gpu < scenario.gpu_count:
                raise ScenarioError(f"job {job.job_id}: GPU {gpu} is not in the cluster")
            if job.mig and job.mig[1] >= len(scenario.mig.get(gpu, ())):
                raise ScenarioError(f"job {job.job_id}: GPU {gpu} has no MIG instance {job.mig[1]}")
            slot = (gpu, job.mig[1] if job.mig else None)
            for other in held.setdefault(slot, []):
                if job.start < other.end and other.start < job.end:
                    raise ScenarioError(
                        f"jobs {other.job_id} and {job.job_id} overlap on GPU {gpu}"
                    )
            held[slot].append(job)


def shipped_names() -> list[str]:
    folder = resources.files("simulator") / "scenarios"
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def load(name_or_path: str) -> SimScenario:
    """A shipped scenario by name (`deepseek-v3`), or a TOML file by path."""
    path = Path(name_or_path)
    if name_or_path in shipped_names():
        text = (resources.files("simulator") / "scenarios" / f"{name_or_path}.toml").read_text()
    elif path.is_file():
        text = path.read_text()
    else:
        raise ScenarioError(
            f"{name_or_path!r} is neither a shipped scenario ({', '.join(shipped_names())}) "
            "nor a file"
        )
    try:
        return parse(tomllib.loads(text))
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"{name_or_path}: {error}") from None
