"""Clocks: a monotonic clock for durations, a wall clock for timestamps.

The collector never reads time directly; it is handed a `Clock`, so tests and the fleet
simulator can run on a virtual clock with compressed time.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

NS_PER_S = 1_000_000_000


class Clock(Protocol):
    def monotonic_ns(self) -> int: ...

    def wall_ns(self) -> int: ...

    def boot_id(self) -> str: ...

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        """Wait `seconds` of this clock's time; True when `stop` was set meanwhile."""
        ...


class SystemClock:
    """CLOCK_MONOTONIC (shared by every process since boot) and the system wall clock."""

    def __init__(self, boot_id_path: Path = Path("/proc/sys/kernel/random/boot_id")) -> None:
        self._boot_id_path = boot_id_path

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def wall_ns(self) -> int:
        return time.time_ns()

    def boot_id(self) -> str:
        try:
            return self._boot_id_path.read_text().strip()
        except OSError:
            return "unknown"

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        return stop.wait(max(0.0, seconds))


@dataclass
class FakeClock:
    """Virtual time that advances only by `wait`, optionally paced against real time.

    `speed` is virtual seconds per real second (0: no pacing at all). With a `state_file`
    the virtual monotonic time survives a restart of the process, as CLOCK_MONOTONIC does.
    A `wait` interrupted by `stop` advances nothing, so interrupted runs stay exact.
    """

    start_wall_ns: int
    mono_ns: int = 0
    speed: float = 0.0
    wall_steps: list[tuple[int, int]] = field(default_factory=list)
    state_file: Path | None = None
    boot: str = "fake-boot"
    manual_wall_offset_ns: int = 0

    def __post_init__(self) -> None:
        if self.state_file is not None and self.state_file.exists():
            self.mono_ns = int(self.state_file.read_text().split()[0])

    def monotonic_ns(self) -> int:
        return self.mono_ns

    def wall_ns(self) -> int:
        stepped = sum(delta for at, delta in self.wall_steps if at <= self.mono_ns)
        return self.start_wall_ns + self.mono_ns + stepped + self.manual_wall_offset_ns

    def boot_id(self) -> str:
        return self.boot

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        if stop.is_set():
            return True
        if self.speed > 0 and stop.wait(max(0.0, seconds) / self.speed):
            return True
        self.advance(seconds)
        return False

    def advance(self, seconds: float) -> None:
        self.mono_ns += max(0, round(seconds * NS_PER_S))
        if self.state_file is not None:
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(f"{self.mono_ns}\n")
            os.replace(tmp, self.state_file)

    def step_wall(self, seconds: float) -> None:
        """An NTP-style step of the wall clock; monotonic time is untouched."""
        self.manual_wall_offset_ns += round(seconds * NS_PER_S)
