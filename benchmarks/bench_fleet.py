"""Benchmark: a 100,000-GPU fleet reporting in real time, and cost queries while it does.

Run: .venv/bin/python -m benchmarks.bench_fleet [--postgres URL] [--seconds 180]

12,500 simulated nodes of 8 GPUs each send one report every 60 s (about 208 requests/s),
spread evenly over the minute, to `gpucost serve --workers 2` on a fresh PostgreSQL database,
for `--seconds` of real time. What a node reports comes from the collector's real code, run
once on a template node for one minute; each node's report is that body with its own node
name, GPU UUIDs, job, sequence number and the current minute, so that the client's CPU goes
to sending, not to simulating 100,000 GPUs in Python.

The load generator is one asyncio process on keep-alive connections (as collectors keep
theirs): each request leaves at its scheduled moment whether or not earlier ones have been
answered (an open loop, so a slow server cannot slow the offered rate down), and its latency
counts from that moment. Its own CPU per request is printed; when its sends lag their schedule
or it needs most of a core, it says that the client, not the server, fell behind.

`GET /healthz` at the same rate for `--healthz-seconds` before the reports and again after
them: the framework's floor, measured on both sides because this machine's speed drifts by
tens of percent within minutes (both are printed; the ratio is against their mean). Figures:
server CPU per request for reports and `/healthz` and their ratio (target ≤ 3, and ≤ 2 ms a
report), the
database's CPU per report, report latency p50/p99/max (target p99 < 250 ms, zero errors), by
minute, the server's share of the machine, database growth per hour of fleet time, and
`GET /v1/models/{model}/cost` latency every 2 s during the run. Writes bench-results/fleet.json.
"""

import argparse
import asyncio
import json
import math
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psycopg

from benchmarks.bench_replay import fresh_database, make_tokens, process_tree, serving
from benchmarks.results import write_results
from simulator import scenario as scenarios
from simulator.gpus import gpu_uuid
from simulator.node import SimNode

NODES, GPUS_PER_NODE, JOBS, REPORT_S = 12_500, 8, 1_000, 60
MODELS = ("atlas-7b", "atlas-70b", "vision-3b", "rerank-1b", "speech-2b")
P99_TARGET_MS = 250
CPU_PER_REPORT_TARGET_MS = 2.0
HEALTHZ_RATIO_TARGET = 3.0
CLUSTER = "fleet-100k"
# The client fell behind when a send left this late after its schedule (p99), or when it
# needed this share of its one core: past that, the figures measure the client.
CLIENT_LAG_LIMIT_S = 0.05
CLIENT_CPU_LIMIT = 0.7


def template_entries() -> list[dict[str, Any]]:
    """One minute of one busy 8-GPU node, measured by the collector's own code."""
    scenario = scenarios.parse(
        {
            "cluster": CLUSTER,
            "nodes": 1,
            "gpus_per_node": GPUS_PER_NODE,
            "jobs": [{"id": "t", "model": "m", "gpus": GPUS_PER_NODE, "duration": "1h"}],
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        node = SimNode(
            scenario,
            0,
            workdir=Path(tmp),
            client=None,
            server=None,
            token=None,
            report_seconds=REPORT_S,
        )
        node.step(Fraction(0), close=False)
        node.step(Fraction(REPORT_S), close=True)
        body = node.spool.pending(1)[0].body
        node.spool.close()
    return list(body["gpus"])


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def cpu_seconds(pids: list[int], *, reaped: bool = False) -> float:
    """CPU time of these processes; with `reaped`, also of their children that have exited."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # gone since it was listed
            continue
        ticks += sum(int(f) for f in fields[11 : 15 if reaped else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


def postmaster(conninfo: str) -> int | None:
    """The benchmark's PostgreSQL server process, when it runs on this machine."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SHOW data_directory").fetchone()
    pid_file = Path(row[0]) / "postmaster.pid" if row else None
    try:
        return int(pid_file.read_text().split()[0]) if pid_file else None
    except (OSError, ValueError, IndexError):
        return None


def database_cpu_seconds(server: int) -> float:
    """CPU time of the database server: its processes, and those of backends since closed
    (the postmaster reaps them, and their time adds to its children's). Other databases'
    work on the same server counts too: run the benchmark alone."""
    return cpu_seconds(process_tree(server), reaped=True)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


@dataclass
class Phase:
    """What one open-loop phase sent and what it cost each side."""

    latencies: list[float] = field(default_factory=list)
    by_minute: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    lags: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0
    server_cpu: float = 0.0
    database_cpu: float = 0.0
    client_cpu: float = 0.0

    @property
    def count(self) -> int:
        return len(self.latencies)

    def ms(self, q: float) -> float:
        return round(percentile(self.latencies, q) * 1000, 1)

    def per_request_ms(self, cpu: float) -> float:
        return round(cpu / max(1, self.count) * 1000, 3)

    @property
    def client_behind(self) -> bool:
        return (
            percentile(self.lags, 0.99) > CLIENT_LAG_LIMIT_S
            or self.client_cpu / self.wall > CLIENT_CPU_LIMIT
        )


Request = Callable[[aiohttp.ClientSession, int, int, datetime], Awaitable[int]]


async def open_loop(
    session: aiohttp.ClientSession,
    request: Request,
    seconds: int,
    server_pids: list[int],
    database: int | None,
) -> Phase:
    """Every node's requests for `seconds`, each at its scheduled moment, every node once a
    minute; request(session, node, n, scheduled wall time) returns the HTTP status."""
    phase = Phase()
    loop = asyncio.get_running_loop()
    began = loop.time() + 1.0
    began_wall = datetime.now(UTC) + timedelta(seconds=1.0)
    pending: set[asyncio.Task[None]] = set()

    async def one(due: float, node: int, n: int) -> None:
        phase.lags.append(loop.time() - due)
        at = began_wall + timedelta(seconds=due - began)
        try:
            status = await request(
                session, node, n, at.replace(microsecond=at.microsecond // 1000 * 1000)
            )
            error = None if status in (200, 201) else str(status)
        except Exception as exc:  # each counted, whatever it is: no send is lost silently
            error = type(exc).__name__
        took = loop.time() - due  # from the schedule: a late send counts against the answer
        phase.latencies.append(took)
        phase.by_minute[n].append(took)
        if error:
            phase.errors.append(error)

    def database_cpu() -> float:
        return database_cpu_seconds(database) if database else float("nan")

    cpu = (cpu_seconds(server_pids), database_cpu(), time.process_time())
    for k in range(seconds * NODES // REPORT_S):
        n, node = divmod(k, NODES)
        due = began + k * REPORT_S / NODES
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(due, node, n + 1))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)
    phase.wall = loop.time() - began
    phase.server_cpu = cpu_seconds(server_pids) - cpu[0]
    phase.database_cpu = database_cpu() - cpu[1]
    phase.client_cpu = time.process_time() - cpu[2]
    return phase


class Fleet:
    """The nodes' reports: the template's entries with each node's GPUs and job."""

    def __init__(self, url: str, token: str, entries: list[dict[str, Any]]) -> None:
        self.url = url + "/v1/reports"
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.entries = entries
        self.gpus: dict[int, str] = {}  # each node's entries as JSON, made once

    def body(self, node: int, seq: int, end: datetime) -> str:
        gpus = self.gpus.get(node)
        if gpus is None:
            gpus = self.gpus[node] = json.dumps(
                [
                    {
                        **e,
                        "uuid": gpu_uuid(CLUSTER, node * GPUS_PER_NODE + i),
                        "job_id": f"job-{node % JOBS:04d}",
                    }
                    for i, e in enumerate(self.entries)
                ]
            )
        return (
            f'{{"cluster":"{CLUSTER}","node":"node-{node:05d}","seq":{seq},'
            f'"start":"{iso(end - timedelta(seconds=REPORT_S))}","end":"{iso(end)}",'
            f'"gpus":{gpus}}}'
        )

    async def report(
        self, session: aiohttp.ClientSession, node: int, seq: int, end: datetime
    ) -> int:
        async with session.post(
            self.url, data=self.body(node, seq, end), headers=self.headers
        ) as r:
            await r.read()
            return r.status


async def query_loop(
    session: aiohttp.ClientSession, url: str, token: str, stop: asyncio.Event
) -> list[float | None]:
    """A finance user's query every 2 s; None for one that failed or timed out."""
    headers = {"Authorization": f"Bearer {token}"}
    out: list[float | None] = []
    while True:
        try:
            await asyncio.wait_for(stop.wait(), 2.0)
            return out
        except TimeoutError:
            pass
        started = time.perf_counter()
        try:
            async with session.get(url + "/v1/models/atlas-7b/cost", headers=headers) as r:
                await r.read()
                ok = r.status in (200, 404)
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        out.append(time.perf_counter() - started if ok else None)


async def drive(
    url: str,
    tokens: dict[str, str],
    entries: list[dict[str, Any]],
    args: argparse.Namespace,
    server_pids: list[int],
    database: int | None,
) -> tuple[tuple[Phase, Phase], Phase, list[float | None]]:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=50)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:

        async def healthz(session: aiohttp.ClientSession, node: int, n: int, at: datetime) -> int:
            async with session.get("/healthz") as r:
                await r.read()
                return r.status

        floor = await open_loop(session, healthz, args.healthz_seconds, server_pids, database)
        print("sending reports", flush=True)
        fleet = Fleet("", tokens["collector"], entries)
        stop = asyncio.Event()
        querier = asyncio.create_task(query_loop(session, "", tokens["viewer"], stop))
        reports = await open_loop(session, fleet.report, args.seconds, server_pids, database)
        stop.set()
        queries = await querier
        print("GET /healthz again", flush=True)
        after = await open_loop(session, healthz, args.healthz_seconds, server_pids, database)
        return (floor, after), reports, queries


def label_jobs(url: str, collector_token: str) -> None:
    """Each of the fleet's jobs with its model, phase and team."""
    with httpx.Client(timeout=30) as client:
        for job in range(JOBS):
            labels = {
                "model": MODELS[job % len(MODELS)],
                "phase": "pre-training",
                "team": f"team-{job % 3}",
            }
            client.put(
                f"{url}/v1/jobs/{CLUSTER}/job-{job:04d}",
                json=labels,
                headers={"Authorization": f"Bearer {collector_token}"},
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/gpucost_bench_sim_fleet"
    )
    parser.add_argument("--seconds", type=int, default=180)
    parser.add_argument("--healthz-seconds", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="bench-results/fleet.json")
    args = parser.parse_args()

    entries = template_entries()
    conninfo = fresh_database(args.postgres)
    tokens = make_tokens(args.postgres, CLUSTER)
    with serving(args.postgres, args.workers) as (url, server):
        label_jobs(url, tokens["collector"])
        with psycopg.connect(conninfo) as conn:
            size_before = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        floors, load, queries = asyncio.run(
            drive(url, tokens, entries, args, process_tree(server.pid), postmaster(conninfo))
        )
        with psycopg.connect(conninfo) as conn:
            size_after = conn.execute("SELECT pg_database_size(current_database())").fetchone()

    fleet_hours = args.seconds / 3600
    growth = (size_after[0] - size_before[0]) / fleet_hours if size_after and size_before else 0
    steady = [x for minute, took in load.by_minute.items() if minute > 1 for x in took]
    answered = [q for q in queries if q is not None]
    report_cpu = load.per_request_ms(load.server_cpu)
    healthz_each = [floor.per_request_ms(floor.server_cpu) for floor in floors]
    healthz_cpu = round(statistics.mean(healthz_each), 3)
    ratio = round(report_cpu / healthz_cpu, 2) if healthz_cpu else None
    result = {
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": f"{os.cpu_count()} CPUs, load {os.getloadavg()}",
        "nodes": NODES,
        "gpus": NODES * GPUS_PER_NODE,
        "seconds": args.seconds,
        "requests": load.count,
        "requests_per_s": round(load.count / load.wall, 1),
        "requests_per_s_scheduled": round(NODES / REPORT_S, 1),
        "errors": len(load.errors),
        "error_kinds": sorted(set(load.errors))[:10],
        "latency_p50_ms": load.ms(0.5),
        "latency_p99_ms": load.ms(0.99),
        "latency_max_ms": load.ms(1.0),
        "steady_latency_p99_ms": round(percentile(steady, 0.99) * 1000, 1),
        "latency_p99_ms_by_minute": [
            round(percentile(load.by_minute[m], 0.99) * 1000, 1) for m in sorted(load.by_minute)
        ],
        "server_cpu_ms_per_report": report_cpu,
        "server_cpu_ms_per_healthz": healthz_cpu,
        "healthz_before_and_after_ms": healthz_each,
        "report_to_healthz_cpu": ratio,
        "database_cpu_ms_per_report": load.per_request_ms(load.database_cpu),
        "client_cpu_ms_per_report": load.per_request_ms(load.client_cpu),
        "client_send_lag_p99_ms": round(percentile(load.lags, 0.99) * 1000, 1),
        "client_fell_behind": any(phase.client_behind for phase in (load, *floors)),
        "healthz_requests": sum(floor.count for floor in floors),
        "healthz_errors": sum(len(floor.errors) for floor in floors),
        "healthz_latency_p99_ms": max(floor.ms(0.99) for floor in floors),
        "server_cpu_share_of_machine": round(
            load.server_cpu / load.wall / (os.cpu_count() or 1), 3
        ),
        "db_growth_mb_per_fleet_hour": round(growth / 2**20, 1),
        "cost_query_count": len(queries),
        "cost_query_failed": sum(q is None for q in queries),
        "cost_query_p50_ms": round(statistics.median(answered) * 1000, 1) if answered else None,
        "cost_query_max_ms": round(max(answered) * 1000, 1) if answered else None,
        "target_p99_ms": P99_TARGET_MS,
        "target_cpu_ms_per_report": CPU_PER_REPORT_TARGET_MS,
        "target_report_to_healthz_cpu": HEALTHZ_RATIO_TARGET,
        "target_met": bool(load.count)
        and load.ms(0.99) < P99_TARGET_MS
        and not load.errors
        and report_cpu <= CPU_PER_REPORT_TARGET_MS
        and ratio is not None
        and ratio <= HEALTHZ_RATIO_TARGET,
    }
    for key, value in result.items():
        print(f"{key:>28}: {value}")
    if result["client_fell_behind"]:
        print("the client fell behind its schedule: these figures measure it, not the server")
    write_results(args.out, result)


if __name__ == "__main__":
    main()
