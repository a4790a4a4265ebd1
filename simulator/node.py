"""One simulated node: the collector's real agent on the fake NVML and a virtual clock.

The node's GPUs, processes (with the job's `GPUCOST_*` environment) and job-mapping files
are derived from the fleet scenario; the agent, sampler, attributor, spool and sender are
the collector's own, on a virtual clock. The spool is SQLite in memory.
"""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx

from collectors.agent import Agent
from collectors.attribution import Attributor
from collectors.clock import NS_PER_S, FakeClock
from collectors.config import Config
from collectors.fakenvml import FakeNvml
from collectors.metrics import CollectorMetrics
from collectors.node_script import parse_scenario, write_fake_proc
from collectors.sampling import Sampler
from collectors.sender import Backoff, Sender
from collectors.spool import IN_MEMORY, Spool
from simulator.gpus import jobs_on, mig_uuid, nvml_script
from simulator.scenario import SimScenario


class SimulatedAgent(Agent):
    """The collector's agent, counting what it spools for the progress bar."""

    gpu_seconds_spooled: float = 0.0

    def _spool_report(self, body: dict[str, Any], *, state: dict[str, Any] | None) -> None:
        self.gpu_seconds_spooled += sum(e["gpu_seconds"] for e in body["gpus"])
        super()._spool_report(body, state=state)


class SimNode:
    def __init__(
        self,
        scenario: SimScenario,
        index: int,
        *,
        workdir: Path,
        client: httpx.Client | None,
        server: str | None,
        token: str | None,
        report_seconds: int,
        batch_size: int = 500,
        start_wall_ns: int | None = None,
    ) -> None:
        self.scenario, self.index = scenario, index
        self.name = f"node-{index:03d}"
        self.first_gpu = index * scenario.gpus_per_node
        self.local = range(self.first_gpu, self.first_gpu + scenario.gpus_per_node)
        root = workdir / self.name
        self.mapping_dir, self.proc_root = root / "jobs", root / "proc"
        self.mapping_dir.mkdir(parents=True, exist_ok=True)
        self.jobs = jobs_on(scenario, index)
        fake = parse_scenario(nvml_script(scenario, index))
        write_fake_proc(fake, self.proc_root)
        wall = scenario.start.timestamp() if start_wall_ns is None else start_wall_ns / NS_PER_S
        self.clock = FakeClock(start_wall_ns=round(wall * 1000) * 1_000_000, boot="boot-1")
        self.nvml = FakeNvml(fake, self.clock)
        self.metrics = CollectorMetrics()
        self.spool = Spool.in_memory()
        self.config = Config(
            server=server,
            cluster=scenario.cluster,
            node=self.name,
            # Reports are closed by the fleet on the report grid, never by the agent itself.
            sample_interval=0.001,
            report_interval=10.0 * report_seconds,
            max_gap=float(report_seconds),
            spool=IN_MEMORY,
            mapping_dir=self.mapping_dir,
            proc_root=self.proc_root,
            batch_size=batch_size,
        )
        self.sender = None
        if client is not None and server is not None and token is not None:
            self.sender = Sender(
                spool=self.spool,
                client=client,
                server=server,
                token=lambda: token,
                cluster=scenario.cluster,
                clock=self.clock,
                backoff=Backoff(rng=random.Random(index), base_s=1.0, max_s=60.0),
                metrics=self.metrics,
                batch_size=batch_size,
            )
        self.agent = self._new_agent()
        self.down = False
        self.spooled_before = 0.0

    # -- the collector ---------------------------------------------------------------------
    def _new_agent(self) -> SimulatedAgent:
        return SimulatedAgent(
            config=self.config,
            clock=self.clock,
            sampler=Sampler(nvml=self.nvml, clock=self.clock, metrics=self.metrics),
            attributor=Attributor(mapping_dir=self.mapping_dir, proc_root=self.proc_root),
            spool=self.spool,
            sender=self.sender,
            metrics=self.metrics,
        )

    def _write_mapping(self, moment: Fraction) -> None:
        """The scheduler's prolog/epilog: held-but-idle jobs are known by the mapping only."""
        wanted: dict[str, str] = {}
        for job in self.jobs:
            if job.held_idle and job.start <= moment < job.end:
                for local, gpu in enumerate(self.local):
                    if job.holds(gpu):
                        key = (
                            str(local)
                            if job.mig is None
                            else mig_uuid(self.scenario.cluster, *job.mig)
                        )
                        wanted[key] = job.job_id
        for path in self.mapping_dir.iterdir():
            if path.name not in wanted:
                path.unlink()
        for key, job_id in wanted.items():
            path = self.mapping_dir / key
            if not path.exists():
                path.write_text(job_id + "\n")

    def now(self) -> Fraction:
        return Fraction(self.clock.monotonic_ns(), NS_PER_S)

    def _advance_to(self, moment: Fraction) -> None:
        self.clock.mono_ns = int(moment * NS_PER_S)

    def step(self, moment: Fraction, *, close: bool) -> None:
        """Sample at `moment`; `close` ends the report there (the report grid)."""
        self._write_mapping(moment)
        self._advance_to(moment)
        if self.agent.interval is None:
            self.agent.start()
        else:
            self.agent.tick()
        if close and self.agent.interval is not None and self.agent.interval.duration_ms > 0:
            self.agent.close_interval()

    def go_down(self, moment: Fraction) -> None:
        """The node stops: the collector closes what it measured, then nothing is sampled."""
        self.step(moment, close=True)
        self.agent.shutdown()
        self.spooled_before += self.agent.gpu_seconds_spooled
        self.agent, self.down = self._new_agent(), True

    def come_up(self, moment: Fraction) -> None:
        """A reboot: a new boot id, so the collector counts nothing for the time it was down."""
        self.clock.boot = f"boot-{moment}"
        self.down = False
        self.step(moment, close=False)

    def finish(self, moment: Fraction) -> None:
        if not self.down:
            self.step(moment, close=True)
            self.agent.shutdown()

    def gpu_seconds_spooled(self) -> float:
        return self.spooled_before + self.agent.gpu_seconds_spooled

    def send(self) -> None:
        if self.sender is not None:
            self.sender.send_pending(max_batches=1000)

    def pending(self) -> int:
        return self.spool.depth()
