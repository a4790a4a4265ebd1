"""Driving a fleet of simulated nodes through a scenario, as fast as possible or paced.

GPU states only change at scenario events, so each node samples at those moments and on the
report grid (every `report_seconds` from the scenario's start) and nowhere else: what the
collector measures is then exact. Reports end on the grid, so none is longer than the
service's limit, and with an hourly grid each lies within one UTC hour.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from urllib.parse import quote

import httpx

from simulator.node import SimNode
from simulator.scenario import SimScenario

logger = logging.getLogger(__name__)


class SimulationError(RuntimeError):
    """The service refused something the simulation needs; said in one line."""


@dataclass
class Progress:
    simulated_s: Fraction
    total_s: Fraction
    reports_sent: int
    gpu_hours: float


@dataclass(frozen=True)
class Options:
    report_seconds: int = 3600
    speed: float = 0.0  # simulated seconds per real second; 0: as fast as possible
    concurrency: int = 4
    send_every: int = 24  # reports a node spools before it sends (1 when paced)
    batch_size: int = 500


def report_grid(scenario: SimScenario, report_seconds: int) -> list[Fraction]:
    """Every moment some node samples: events and the report grid, in order."""
    grid = {Fraction(k * report_seconds) for k in range(int(scenario.end // report_seconds) + 1)}
    return sorted((grid | scenario.boundaries()) - {m for m in grid if m > scenario.end})


def _check(response: httpx.Response, what: str) -> None:
    if not response.is_success:
        raise SimulationError(
            f"{what}: the service answered {response.status_code}: {response.text[:300]}"
        )


def register_jobs(client: httpx.Client, server: str, token: str, scenario: SimScenario) -> None:
    """The scheduler's metadata for every job (its tokens too, where the scenario gives
    them), so held-but-idle jobs are labelled too."""
    for job in scenario.jobs:
        path = f"/v1/jobs/{quote(scenario.cluster, safe='')}/{quote(job.job_id, safe='')}"
        response = client.put(
            server + path, json=job.registration(), headers={"Authorization": f"Bearer {token}"}
        )
        _check(response, f"registering job {job.job_id}")


def post_rates(
    client: httpx.Client, server: str, admin_token: str | None, scenario: SimScenario
) -> None:
    """The scenario's rate changes, as an administrator posts them."""
    changes = [e for e in scenario.events if e.kind == "rate-change"]
    if changes and admin_token is None:
        raise SimulationError("this scenario changes rates: it needs an admin token")
    for event in changes:
        body = {
            "gpu_model": event.gpu_model or scenario.gpu_model,
            "usd_per_gpu_hour": str(event.usd_per_gpu_hour),
            "effective_from": scenario.at(event.at).isoformat().replace("+00:00", "Z"),
        }
        response = client.post(
            server + "/v1/rates", json=body, headers={"Authorization": f"Bearer {admin_token}"}
        )
        _check(response, f"posting the rate change at {body['effective_from']}")


class Fleet:
    def __init__(
        self,
        scenario: SimScenario,
        *,
        server: str | None,
        token: str | None,
        admin_token: str | None = None,
        options: Options = Options(),
        workdir: Path | None = None,
        only_nodes: list[int] | None = None,
    ) -> None:
        """`only_nodes`: simulate just these nodes of the scenario (a benchmark's sample)."""
        self.scenario, self.server, self.token = scenario, server, token
        self.admin_token, self.options = admin_token, options
        self._tmp = tempfile.TemporaryDirectory(prefix="gpucost-sim-") if workdir is None else None
        self.workdir = workdir or Path(self._tmp.name if self._tmp else ".")
        self.client = httpx.Client(timeout=60.0) if server else None
        self.nodes = [
            SimNode(
                scenario,
                n,
                workdir=self.workdir,
                client=self.client,
                server=server,
                token=token,
                report_seconds=options.report_seconds,
                batch_size=options.batch_size,
            )
            for n in (range(scenario.nodes) if only_nodes is None else only_nodes)
        ]
        self.outages = {
            (e.node, e.at, e.at + e.duration) for e in scenario.events if e.kind == "node-down"
        }

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        for node in self.nodes:
            node.spool.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def progress(self, moment: Fraction) -> Progress:
        sent = sum(
            int(n.metrics.reports_sent.labels(outcome=o)._value.get())
            for n in self.nodes
            for o in ("accepted", "duplicate")
        )
        hours = sum(n.gpu_seconds_spooled() for n in self.nodes) / 3600
        return Progress(moment, self.scenario.end, sent, hours)

    def _node_step(self, moment: Fraction, on_grid: bool, last: bool, node: SimNode) -> None:
        for index, down_at, up_at in self.outages:
            if index == node.index and moment == down_at:
                node.go_down(moment)
            elif index == node.index and moment == up_at:
                node.come_up(moment)
        if last:
            node.finish(moment)
        elif not node.down:
            node.step(moment, close=on_grid)
        send_every = 1 if self.options.speed > 0 else self.options.send_every
        if node.pending() >= send_every or last:
            node.send()

    def run(self, on_progress: Callable[[Progress], None] | None = None) -> Progress:
        """The whole scenario; returns the final progress once every report is acknowledged."""
        if self.client is not None and self.server is not None and self.token is not None:
            post_rates(self.client, self.server, self.admin_token, self.scenario)
            register_jobs(self.client, self.server, self.token, self.scenario)
        moments = report_grid(self.scenario, self.options.report_seconds)
        began = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(1, self.options.concurrency)) as pool:
            for moment in moments:
                if self.options.speed > 0:
                    time.sleep(
                        max(0.0, began + float(moment) / self.options.speed - time.monotonic())
                    )
                on_grid = moment % self.options.report_seconds == 0
                last = moment == moments[-1]
                step = functools.partial(self._node_step, moment, on_grid, last)
                list(pool.map(step, self.nodes))
                if on_progress is not None:
                    on_progress(self.progress(moment))
        self._drain()
        final = self.progress(self.scenario.end)
        if on_progress is not None:
            on_progress(final)
        return final

    def _drain(self, attempts: int = 30) -> None:
        """Retry what the service has not acknowledged yet; dead letters are an error."""
        for _ in range(attempts):
            left = [n for n in self.nodes if n.pending()]
            if not left or self.server is None:
                break
            time.sleep(1.0)
            for node in left:
                assert node.sender is not None
                node.sender.next_attempt_mono_ns = 0
                node.send()
        left_over = sum(n.pending() for n in self.nodes)
        dead = sum(len(n.spool.dead_letters()) for n in self.nodes)
        if self.server is not None and (left_over or dead):
            raise SimulationError(
                f"{left_over} reports left unsent and {dead} rejected by the service (see the log)"
            )
