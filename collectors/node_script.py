"""Scripted GPU scenarios for the fake NVML: GPUs, MIG layouts, processes, energy, failures.

A scenario is a JSON or TOML file (or the same dict). Times are seconds of virtual monotonic
time from the scenario's start. Values follow piecewise-constant schedules
(`[{"at": 0, "value": 0}, {"at": 600, "value": 97}]`) or a constant. Example::

    {"start_wall": "2026-01-05T10:00:00Z", "speed": 0,
     "gpus": [{"index": 0, "uuid": "GPU-…", "name": "NVIDIA H800", "power_mw": 350000,
               "util": [{"at": 0, "value": 0}, {"at": 60, "value": 90}],
               "energy_resets": [600], "lost_at": 900,
               "faults": [{"call": "nvmlDeviceGetMemoryInfo", "error": "NVML_ERROR_UNKNOWN",
                           "from": 60, "to": 120}],
               "mig": [{"uuid": "MIG-…", "gi_slices": 3, "ci_slices": 3}]}],
     "processes": [{"pid": 4242, "gpu": 0, "start": 60, "end": 300, "used_memory": 1000,
                    "cgroup": "0::/slurm/uid_1000/job_42/step_0", "environ": {"A": "b"}}]}
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

from collectors.clock import NS_PER_S


@dataclass(frozen=True)
class Schedule:
    """A piecewise-constant value: `points` are (from_second, value), sorted."""

    points: tuple[tuple[Fraction, int], ...]

    @classmethod
    def parse(cls, raw: Any, default: int = 0) -> Schedule:
        if raw is None:
            return cls(((Fraction(0), default),))
        if isinstance(raw, int | float):
            return cls(((Fraction(0), int(raw)),))
        points = sorted((Fraction(str(p["at"])), int(p["value"])) for p in raw)
        return cls(tuple(points))

    def at(self, t: Fraction) -> int:
        value = 0
        for start, v in self.points:
            if start <= t:
                value = v
        return value

    def integral(self, lo: Fraction, hi: Fraction) -> Fraction:
        """Exact integral of the schedule over [lo, hi)."""
        total = Fraction(0)
        bounds = [p[0] for p in self.points[1:]] + [hi]
        for (start, value), end in zip(self.points, bounds, strict=True):
            a, b = max(start, lo), min(end, hi)
            if b > a:
                total += value * (b - a)
        return total


@dataclass(frozen=True)
class MigSpec:
    uuid: str
    gi_slices: int
    ci_slices: int
    memory_total: int


@dataclass(frozen=True)
class Fault:
    """`call` on this GPU raises NVML error `error` (e.g. NVML_ERROR_UNKNOWN) in [start, end)."""

    call: str
    error: str
    start: Fraction
    end: Fraction | None

    def active(self, call: str, t: Fraction) -> bool:
        return call == self.call and self.start <= t and (self.end is None or t < self.end)


@dataclass(frozen=True)
class GpuSpec:
    index: int
    uuid: str
    name: str
    memory_total: int
    power_mw: Schedule
    util: Schedule
    mem_used: Schedule
    energy_supported: bool
    energy_start_mj: int
    energy_resets: tuple[Fraction, ...]
    lost_at: Fraction | None
    mig: tuple[MigSpec, ...] | None
    faults: tuple[Fault, ...] = ()

    def energy_mj(self, t: Fraction) -> int:
        """The driver's counter: millijoules since load, restarting at 0 at each reset."""
        resets = [r for r in self.energy_resets if r <= t]
        since = resets[-1] if resets else Fraction(0)
        base = 0 if resets else self.energy_start_mj
        return base + int(self.power_mw.integral(since, t))


@dataclass(frozen=True)
class ProcessSpec:
    pid: int
    gpu: int
    mig: str | None
    start: Fraction
    end: Fraction | None
    used_memory: int
    cgroup: str | None
    environ: dict[str, str] = field(default_factory=dict)

    def alive(self, t: Fraction) -> bool:
        return self.start <= t and (self.end is None or t < self.end)


@dataclass(frozen=True)
class Scenario:
    start_wall_ns: int
    speed: float
    boot_id: str
    wall_steps: tuple[tuple[int, int], ...]
    gpus: tuple[GpuSpec, ...]
    processes: tuple[ProcessSpec, ...]
    init_error: str | None


def _seconds(raw: Any) -> Fraction | None:
    return None if raw is None else Fraction(str(raw))


def _gpu(raw: dict[str, Any]) -> GpuSpec:
    memory_total = int(raw.get("memory_total", 80 * 1024**3))
    mig = raw.get("mig")
    return GpuSpec(
        index=int(raw["index"]),
        uuid=str(raw["uuid"]),
        name=str(raw.get("name", "NVIDIA H800")),
        memory_total=memory_total,
        power_mw=Schedule.parse(raw.get("power_mw"), default=100_000),
        util=Schedule.parse(raw.get("util")),
        mem_used=Schedule.parse(raw.get("mem_used")),
        energy_supported=bool(raw.get("energy_supported", True)),
        energy_start_mj=int(raw.get("energy_start_mj", 0)),
        energy_resets=tuple(sorted(Fraction(str(r)) for r in raw.get("energy_resets", []))),
        lost_at=_seconds(raw.get("lost_at")),
        mig=None
        if mig is None
        else tuple(
            MigSpec(
                uuid=str(m["uuid"]),
                gi_slices=int(m["gi_slices"]),
                ci_slices=int(m.get("ci_slices", m["gi_slices"])),
                memory_total=int(m.get("memory_total", memory_total * int(m["gi_slices"]) // 8)),
            )
            for m in mig
        ),
        faults=tuple(
            Fault(
                str(f["call"]),
                str(f["error"]),
                Fraction(str(f.get("from", 0))),
                _seconds(f.get("to")),
            )
            for f in raw.get("faults", [])
        ),
    )


def _process(raw: dict[str, Any]) -> ProcessSpec:
    return ProcessSpec(
        pid=int(raw["pid"]),
        gpu=int(raw["gpu"]),
        mig=raw.get("mig"),
        start=Fraction(str(raw.get("start", 0))),
        end=_seconds(raw.get("end")),
        used_memory=int(raw.get("used_memory", 0)),
        cgroup=raw.get("cgroup"),
        environ={str(k): str(v) for k, v in raw.get("environ", {}).items()},
    )


def parse_scenario(raw: dict[str, Any]) -> Scenario:
    """Build a `Scenario` from its dict form (see the module docstring)."""
    start = datetime.fromisoformat(str(raw.get("start_wall", "2026-01-05T10:00:00Z")))
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return Scenario(
        start_wall_ns=int(start.timestamp()) * NS_PER_S + start.microsecond * 1000,
        speed=float(raw.get("speed", 0)),
        boot_id=str(raw.get("boot_id", "fake-boot")),
        wall_steps=tuple(
            (int(Fraction(str(s["at"])) * NS_PER_S), int(Fraction(str(s["delta"])) * NS_PER_S))
            for s in raw.get("wall_steps", [])
        ),
        gpus=tuple(_gpu(g) for g in raw.get("gpus", [])),
        processes=tuple(_process(p) for p in raw.get("processes", [])),
        init_error=raw.get("init_error"),
    )


def load_scenario(path: Path) -> Scenario:
    """Read a scenario file: `.toml` as TOML, anything else as JSON."""
    text = path.read_text()
    raw = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    return parse_scenario(raw)


def write_fake_proc(scenario: Scenario, proc_root: Path) -> None:
    """Write `/proc/PID/cgroup` and `/proc/PID/environ` for the scenario's processes."""
    for process in scenario.processes:
        pid_dir = proc_root / str(process.pid)
        pid_dir.mkdir(parents=True, exist_ok=True)
        if process.cgroup is not None:
            (pid_dir / "cgroup").write_text(process.cgroup + "\n")
        environ = b"".join(f"{k}={v}".encode() + b"\0" for k, v in process.environ.items())
        (pid_dir / "environ").write_bytes(environ)
