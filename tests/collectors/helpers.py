"""Helpers for the collector tests: a scenario-driven harness on the fake NVML and clock."""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from collectors.agent import Agent
from collectors.attribution import Attributor
from collectors.clock import NS_PER_S, FakeClock
from collectors.config import Config
from collectors.fakenvml import FakeNvml
from collectors.metrics import CollectorMetrics
from collectors.node_script import parse_scenario, write_fake_proc
from collectors.sampling import Sampler
from collectors.spool import Spool

START_WALL = "2026-01-05T10:00:00Z"


def gpu_uuid(index: int) -> str:
    return f"GPU-{index:08d}-1111-2222-3333-444444444444"


def gpu(index: int, **extra: Any) -> dict[str, Any]:
    return {"index": index, "uuid": gpu_uuid(index), "name": "NVIDIA H800", **extra}


def process(pid: int, gpu_index: int, **extra: Any) -> dict[str, Any]:
    return {"pid": pid, "gpu": gpu_index, **extra}


def slurm(job: int) -> str:
    return f"0::/system.slice/slurmstepd.scope/job_{job}/step_0/user/task_0\n"


class Harness:
    """The real agent on a scenario, stepped by hand or run until a virtual time."""

    def __init__(self, root: Path, scenario: dict[str, Any], **config: Any) -> None:
        self.root = root
        self.scenario = parse_scenario({"start_wall": START_WALL, **scenario})
        self.mapping_dir = root / "jobs"
        self.mapping_dir.mkdir(exist_ok=True)
        self.proc_root = root / "proc"
        write_fake_proc(self.scenario, self.proc_root)
        self.spool_path = root / "spool.db"
        self.clock = FakeClock(
            start_wall_ns=self.scenario.start_wall_ns, wall_steps=list(self.scenario.wall_steps)
        )
        self.config = Config(
            cluster="c1",
            node="n1",
            spool=self.spool_path,
            mapping_dir=self.mapping_dir,
            proc_root=self.proc_root,
            **config,
        )
        self.metrics = CollectorMetrics()
        self.agent = self.new_agent()

    def new_agent(self) -> Agent:
        self.spool = Spool(self.spool_path)
        return Agent(
            config=self.config,
            clock=self.clock,
            sampler=Sampler(
                nvml=FakeNvml(self.scenario, self.clock), clock=self.clock, metrics=self.metrics
            ),
            attributor=Attributor(mapping_dir=self.mapping_dir, proc_root=self.proc_root),
            spool=self.spool,
            sender=None,
            metrics=self.metrics,
        )

    def now(self) -> float:
        return self.clock.monotonic_ns() / NS_PER_S

    def advance_to(self, t: float) -> None:
        """Start if needed, then one sample per sample interval until virtual time `t`."""
        if self.agent.interval is None:
            self.agent.start()
        while self.now() < t:
            self.clock.advance(min(self.config.sample_interval, t - self.now()))
            self.agent.tick()

    def finish(self, t: float) -> list[dict[str, Any]]:
        self.advance_to(t)
        self.agent.shutdown()
        return self.reports()

    def map_gpu(self, name: str | int, job: str | None) -> None:
        path = self.mapping_dir / str(name)
        if job is None:
            path.unlink()
        else:
            path.write_text(job + "\n")

    def reports(self) -> list[dict[str, Any]]:
        return [r.body for r in self.spool.pending(1_000_000)]


def totals(reports: list[dict[str, Any]], by: str = "job") -> dict[Any, Decimal]:
    """Exact GPU-seconds per job (None: idle), or per (uuid, job) with by='gpu'."""
    sums: dict[Any, Decimal] = defaultdict(Decimal)
    for report in reports:
        for entry in report["gpus"]:
            key = entry["job_id"] if by == "job" else (entry["uuid"], entry["job_id"])
            sums[key] += Decimal(str(entry["gpu_seconds"]))
    return dict(sums)


def check_report_invariants(reports: list[dict[str, Any]]) -> None:
    """What the service validates: per GPU, GPU-seconds within the interval."""
    from collectors.spool_merge import epoch_ms

    for report in reports:
        span = Decimal(epoch_ms(report["end"]) - epoch_ms(report["start"])) / 1000
        per_gpu: dict[str, Decimal] = defaultdict(Decimal)
        for entry in report["gpus"]:
            per_gpu[entry["uuid"]] += Decimal(str(entry["gpu_seconds"]))
        assert all(v <= span for v in per_gpu.values()), (report, span)
        json.dumps(report)
