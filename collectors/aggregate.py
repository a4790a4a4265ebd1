"""Samples into per-interval reports.

Each sample's state (who holds each GPU, its utilisation and memory) holds until the next
sample, so the time between two samples is attributed to the earlier one. Durations come from
the monotonic clock only; the wall clock only dates a report's end, and its start is the end
minus the monotonic duration, so a wall-clock step forward moves a report in time but never
changes its GPU-seconds. A step back could date a report over time this collector already
reported, which the service counts once: such a report starts where the reported time ends
instead, its GPU time scaled to that shorter interval (the step is what is lost), and one the
step puts wholly inside the reported time waits until the wall clock has passed it. Sums are
exact fractions until the report is written in milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from collectors.attribution import Attribution, Share
from collectors.clock import NS_PER_S
from collectors.sampling import GpuReading, Sample

NS_PER_MS = 1_000_000


@dataclass
class Entry:
    gpu_ns: Fraction = Fraction(0)
    util_ns: Fraction = Fraction(0)
    energy_mj: Fraction = Fraction(0)
    mem_peak: int = 0


@dataclass
class GpuPoint:
    """A GPU's last sample: what holds until the next one."""

    index: int
    model: str
    util_pct: int
    energy_mj: int | None
    power_mw: int | None
    shares: dict[str | None, Share]


def energy_delta_mj(point: GpuPoint, current: GpuReading | None, dt_ns: int) -> Fraction:
    """Energy between two samples: the counter's delta, else power integrated over the gap."""
    by_power = Fraction(point.power_mw * dt_ns, NS_PER_S) if point.power_mw is not None else None
    if current is not None and point.energy_mj is not None and current.energy_mj is not None:
        if current.energy_mj >= point.energy_mj:
            return Fraction(current.energy_mj - point.energy_mj)
        # The counter restarted (driver reload): what it counted since is a lower bound.
        return by_power if by_power is not None else Fraction(current.energy_mj)
    return by_power if by_power is not None else Fraction(0)


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC with a Z."""
    moment = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def apportion(parts: list[Fraction], total: int) -> list[int]:
    """Integers proportional to `parts` summing to `total` (largest remainder)."""
    whole = sum(parts, Fraction(0))
    if whole == 0:
        return [0] * len(parts)
    exact = [p * total / whole for p in parts]
    floors = [math.floor(x) for x in exact]
    order = sorted(range(len(parts)), key=lambda i: exact[i] - floors[i], reverse=True)
    for i in order[: total - sum(floors)]:
        floors[i] += 1
    return floors


@dataclass
class OpenInterval:
    start_mono_ns: int
    last_mono_ns: int
    last_wall_ns: int
    boot_id: str
    # The wall-clock span (ms) of the reports so far, first start to last end: no report
    # overlaps it.
    reported: tuple[int, int] | None = None
    last: dict[str, GpuPoint] = field(default_factory=dict)
    entries: dict[tuple[str, str | None], Entry] = field(default_factory=dict)
    info: dict[str, tuple[int, str]] = field(default_factory=dict)

    @classmethod
    def begin(cls, sample: Sample, attribution: Attribution, boot_id: str) -> OpenInterval:
        interval = cls(sample.mono_ns, sample.mono_ns, sample.wall_ns, boot_id)
        interval._remember(sample, attribution)
        return interval

    def _remember(self, sample: Sample, attribution: Attribution) -> None:
        self.last_mono_ns, self.last_wall_ns = sample.mono_ns, sample.wall_ns
        self.last = {
            g.uuid: GpuPoint(
                g.index, g.model, g.util_pct, g.energy_mj, g.power_mw, attribution.shares[g.uuid]
            )
            for g in sample.gpus
        }

    def advance(self, sample: Sample, attribution: Attribution) -> None:
        """Attribute the time since the last sample to the last sample's state."""
        dt_ns = max(0, sample.mono_ns - self.last_mono_ns)
        current = {g.uuid: g for g in sample.gpus}
        for uuid, point in self.last.items():
            energy = energy_delta_mj(point, current.get(uuid), dt_ns)
            self.info[uuid] = (point.index, point.model)
            for job, share in point.shares.items():
                entry = self.entries.setdefault((uuid, job), Entry())
                entry.gpu_ns += share.fraction * dt_ns
                entry.util_ns += share.fraction * dt_ns * point.util_pct
                entry.energy_mj += share.fraction * energy
                entry.mem_peak = max(entry.mem_peak, share.mem_bytes)
        self._remember(sample, attribution)

    @property
    def duration_ms(self) -> int:
        # On a fixed millisecond grid, so consecutive reports add up without drift.
        return self.last_mono_ns // NS_PER_MS - self.start_mono_ns // NS_PER_MS

    def dated(self) -> tuple[int, int] | None:
        """The wall-clock interval (ms) a report would have now; None while the wall clock,
        stepped back, is inside the time already reported."""
        end_ms = self.last_wall_ns // NS_PER_MS
        start_ms = end_ms - self.duration_ms
        if self.reported is not None:
            first_ms, last_ms = self.reported
            if end_ms > first_ms and start_ms < last_ms:
                start_ms = last_ms
        return (start_ms, end_ms) if start_ms < end_ms else None

    def report(self) -> dict[str, Any]:
        """The report body for [start, last sample), without cluster, node and seq."""
        dated = self.dated()
        assert dated is not None, "no report while the wall clock is before the last one"
        start_ms, end_ms = dated
        duration_ms, duration_ns = end_ms - start_ms, self.last_mono_ns - self.start_mono_ns
        gpus = []
        for uuid in sorted(self.info, key=lambda u: self.info[u]):
            keys = [k for k in self.entries if k[0] == uuid and self.entries[k].gpu_ns > 0]
            keys.sort(key=lambda k: (k[1] is not None, k[1] or ""))
            covered = sum((self.entries[k].gpu_ns for k in keys), Fraction(0))
            target = min(duration_ms, round(covered * duration_ms / duration_ns)) if keys else 0
            index, model = self.info[uuid]
            for key, ms in zip(
                keys, apportion([self.entries[k].gpu_ns for k in keys], target), strict=True
            ):
                entry = self.entries[key]
                gpus.append(
                    {
                        "uuid": uuid,
                        "index": index,
                        "model": model,
                        "job_id": key[1],
                        "gpu_seconds": ms / 1000,
                        "util_pct": round(float(entry.util_ns / entry.gpu_ns), 2),
                        "energy_j": round(float(entry.energy_mj) / 1000, 3),
                        "mem_peak_bytes": entry.mem_peak,
                    }
                )
        return {"start": iso_ms(start_ms), "end": iso_ms(end_ms), "gpus": gpus}

    def restart(self) -> None:
        """Start the next interval at the last sample, keeping that sample's state, after
        the report of this one."""
        self.reported = self.reported_after()
        self.start_mono_ns = self.last_mono_ns
        self.entries, self.info = {}, {}

    def reported_after(self) -> tuple[int, int] | None:
        """The span reported once this interval's report is."""
        dated = self.dated()
        if dated is None or self.reported is None:
            return dated or self.reported
        return min(self.reported[0], dated[0]), max(self.reported[1], dated[1])

    # -- persistence: the open interval is saved with every sample, so a crash loses nothing
    def to_json(self) -> dict[str, Any]:
        return {
            "start_mono_ns": self.start_mono_ns,
            "last_mono_ns": self.last_mono_ns,
            "last_wall_ns": self.last_wall_ns,
            "boot_id": self.boot_id,
            "reported": self.reported,
            "last": [
                {
                    "uuid": uuid,
                    **{k: v for k, v in p.__dict__.items() if k != "shares"},
                    "shares": [[j, str(s.fraction), s.mem_bytes] for j, s in p.shares.items()],
                }
                for uuid, p in self.last.items()
            ],
            "entries": [
                [uuid, job, str(e.gpu_ns), str(e.util_ns), str(e.energy_mj), e.mem_peak]
                for (uuid, job), e in self.entries.items()
            ],
            "info": [[uuid, index, model] for uuid, (index, model) in self.info.items()],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> OpenInterval:
        interval = cls(
            raw["start_mono_ns"],
            raw["last_mono_ns"],
            raw["last_wall_ns"],
            raw["boot_id"],
            # Absent in states saved before it was kept.
            (raw["reported"][0], raw["reported"][1]) if raw.get("reported") else None,
        )
        for p in raw["last"]:
            shares = {j: Share(Fraction(f), mem) for j, f, mem in p["shares"]}
            fields = {k: v for k, v in p.items() if k not in ("uuid", "shares")}
            interval.last[p["uuid"]] = GpuPoint(**fields, shares=shares)
        for uuid, job, gpu_ns, util_ns, energy, mem in raw["entries"]:
            interval.entries[(uuid, job)] = Entry(
                Fraction(gpu_ns), Fraction(util_ns), Fraction(energy), mem
            )
        interval.info = {uuid: (index, model) for uuid, index, model in raw["info"]}
        return interval
