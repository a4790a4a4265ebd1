"""Benchmark: a 100,000-GPU fleet reporting in real time, and cost queries while it does.

Run: .venv/bin/python -m tests.benchmarks.bench_fleet [--postgres URL] [--seconds 180]

12,500 simulated nodes of 8 GPUs each send one report every 60 s (about 208 requests/s),
spread evenly over the minute, to `gpucost serve --workers 2` on a fresh PostgreSQL database,
for `--seconds` of real time. What a node reports comes from the collector's real code, run
once on a template node for one minute; each node's report is that body with its own node
name, GPU UUIDs, job, sequence number and the current minute, so that the client's CPU goes
to sending, not to simulating 100,000 GPUs in Python on a shared 2-core machine. The nodes
are shared among `--processes` client processes (4): one Python process with 200 sending
threads tops out near 100 requests/s whatever the server does, and would measure itself.

Figures: report latency p50/p99/max, errors (must be zero), how far sends lagged their
schedule, the server's CPU share (its processes' CPU time over wall time and cores), database
growth per hour of fleet time, and (3) `GET /v1/models/{model}/cost` latency every 2 s during
the run. Target: p99 under 250 ms. Writes bench-results/fleet.json.
"""

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import psycopg

from collectors.simulator import scenario as scenarios
from collectors.simulator.gpus import gpu_uuid
from collectors.simulator.node import SimNode
from tests.benchmarks.bench_replay import fresh_database, make_tokens, process_tree, serving
from tests.benchmarks.results import write_results

NODES, GPUS_PER_NODE, JOBS, REPORT_S = 12_500, 8, 1_000, 60
MODELS = ("atlas-7b", "atlas-70b", "vision-3b", "rerank-1b", "speech-2b")
P99_TARGET_MS = 250
BIN = Path(sys.executable).parent
CLUSTER = "fleet-100k"


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


def cpu_seconds(pid: int) -> float:
    ticks = 0
    for each in process_tree(pid):
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# What one client process sent: latencies, latencies by report number, lags, errors, skipped.
Sent = tuple[list[float], dict[int, list[float]], list[float], list[str], int]


class Load:
    def __init__(
        self, url: str, token: str, entries: list[dict[str, Any]], seconds: int, threads: int
    ) -> None:
        self.url, self.entries, self.seconds, self.threads = url, entries, seconds, threads
        self.headers = {"Authorization": f"Bearer {token}"}
        self.client: httpx.Client  # each sending process's own (send_share)
        self.latencies: list[float] = []
        # By each node's report number: its first report registers the node and its GPUs.
        self.by_minute: dict[int, list[float]] = defaultdict(list)
        self.lags: list[float] = []
        self.errors: list[str] = []
        self.skipped = 0
        self.lock = threading.Lock()

    def merge(self, sent: Sent) -> None:
        latencies, by_minute, lags, errors, skipped = sent
        self.latencies += latencies
        for minute, took in by_minute.items():
            self.by_minute[minute] += took
        self.lags += lags
        self.errors += errors
        self.skipped += skipped

    def body(self, node: int, seq: int, end: datetime) -> dict[str, Any]:
        gpus = [
            {
                **e,
                "uuid": gpu_uuid(CLUSTER, node * GPUS_PER_NODE + i),
                "job_id": f"job-{node % JOBS:04d}",
            }
            for i, e in enumerate(self.entries)
        ]
        return {
            "cluster": CLUSTER,
            "node": f"node-{node:05d}",
            "seq": seq,
            "start": iso(end - timedelta(seconds=REPORT_S)),
            "end": iso(end),
            "gpus": gpus,
        }

    def worker(self, first: int, began: float) -> None:
        nodes = range(first, NODES, self.threads)
        schedule = sorted(
            (began + node * REPORT_S / NODES + k * REPORT_S, node, k + 1)
            for node in nodes
            for k in range(self.seconds // REPORT_S)
        )
        deadline = began + self.seconds + 30
        # Each report is dated by its schedule, as a collector's monotonic clock dates it: a
        # client running late sends it late, never over its node's last report (the service
        # refuses GPU time counted twice).
        began_wall = datetime.now(UTC) - timedelta(seconds=time.monotonic() - began)
        for due, node, seq in schedule:
            time.sleep(max(0.0, due - time.monotonic()))
            if time.monotonic() > deadline:  # this thread fell too far behind its schedule
                with self.lock:
                    self.skipped += 1
                continue
            lag = time.monotonic() - due
            end = began_wall + timedelta(seconds=due - began)
            body = self.body(node, seq, end.replace(microsecond=end.microsecond // 1000 * 1000))
            sent = time.perf_counter()
            try:
                response = self.client.post(
                    self.url + "/v1/reports", json=body, headers=self.headers
                )
                error = None if response.status_code == 201 else f"{response.status_code}"
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            took = time.perf_counter() - sent
            with self.lock:
                self.latencies.append(took)
                self.by_minute[seq].append(took)
                self.lags.append(lag)
                if error:
                    self.errors.append(error)


def send_share(
    load: Load, threads: range, began: float, out: "multiprocessing.Queue[Sent]"
) -> None:
    """In a client process of its own: the nodes of `threads`, on the common schedule."""
    # A connection per report, as a collector's: its client keeps an idle connection 5 s
    # and reports come a minute apart. (Connections reused across nodes would also pin each
    # client thread to one server worker for the whole run, however unevenly they fell.)
    limits = httpx.Limits(max_connections=len(threads) + 8, max_keepalive_connections=0)
    load.client = httpx.Client(timeout=10, limits=limits)
    workers = [threading.Thread(target=load.worker, args=(i, began)) for i in threads]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put((load.latencies, dict(load.by_minute), load.lags, load.errors, load.skipped))


def query_loop(url: str, token: str, stop: threading.Event, out: list[float | None]) -> None:
    """A finance user's query every 2 s; None for one that failed or timed out."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=30) as client:
        while not stop.wait(2.0):
            started = time.perf_counter()
            try:
                response = client.get(url + "/v1/models/atlas-7b/cost", headers=headers)
                ok = response.status_code in (200, 404)
            except httpx.HTTPError:
                ok = False
            out.append(time.perf_counter() - started if ok else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/gpucost_bench_sim_fleet"
    )
    parser.add_argument("--seconds", type=int, default=180)
    parser.add_argument("--threads", type=int, default=200)
    parser.add_argument(
        "--processes",
        type=int,
        default=4,
        help="client processes sharing the threads (one Python process cannot send 208/s)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="bench-results/fleet.json")
    args = parser.parse_args()

    entries = template_entries()
    conninfo = fresh_database(args.postgres)
    tokens = make_tokens(args.postgres, CLUSTER)
    with serving(args.postgres, args.workers) as (url, server):
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
                    headers={"Authorization": f"Bearer {tokens['collector']}"},
                )
        with psycopg.connect(conninfo) as conn:
            size_before = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        load = Load(url, tokens["collector"], entries, args.seconds, args.threads)
        cpu_before, wall_before = cpu_seconds(server.pid), time.monotonic()
        began = time.monotonic() + 2.0  # CLOCK_MONOTONIC: the same in every process
        # Forked, so that each sender inherits the template and the schedule as they are.
        fork = multiprocessing.get_context("fork")
        results: multiprocessing.Queue[Sent] = fork.Queue()
        senders = [
            fork.Process(
                target=send_share,
                args=(load, range(p, args.threads, args.processes), began, results),
            )
            for p in range(args.processes)
        ]
        for sender in senders:
            sender.start()
        stop, query_latencies = threading.Event(), list[float | None]()
        querier = threading.Thread(
            target=query_loop, args=(url, tokens["viewer"], stop, query_latencies)
        )
        querier.start()
        for _ in senders:
            load.merge(results.get())
        for sender in senders:
            sender.join()
        stop.set()
        querier.join()
        wall = time.monotonic() - wall_before
        cpu = cpu_seconds(server.pid) - cpu_before
        with psycopg.connect(conninfo) as conn:
            size_after = conn.execute("SELECT pg_database_size(current_database())").fetchone()

    fleet_hours = args.seconds / 3600
    growth = (size_after[0] - size_before[0]) / fleet_hours if size_after and size_before else 0
    ms = [x * 1000 for x in load.latencies]
    steady = [x for minute, took in load.by_minute.items() if minute > 1 for x in took]
    answered = [q for q in query_latencies if q is not None]
    result = {
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": f"{os.cpu_count()} CPUs, load {os.getloadavg()}",
        "nodes": NODES,
        "gpus": NODES * GPUS_PER_NODE,
        "seconds": args.seconds,
        "requests": len(ms),
        "requests_per_s": round(len(ms) / wall, 1),
        "requests_per_s_scheduled": round(NODES / REPORT_S, 1),
        "errors": len(load.errors),
        "not_sent_client_behind": load.skipped,
        "error_kinds": sorted(set(load.errors))[:10],
        "latency_p50_ms": round(percentile(ms, 0.5), 1),
        "latency_p99_ms": round(percentile(ms, 0.99), 1),
        "latency_max_ms": round(max(ms), 1) if ms else None,
        "steady_latency_p50_ms": round(percentile([x * 1000 for x in steady], 0.5), 1),
        "steady_latency_p99_ms": round(percentile([x * 1000 for x in steady], 0.99), 1),
        "latency_p99_ms_by_minute": [
            round(percentile([x * 1000 for x in load.by_minute[m]], 0.99), 1)
            for m in sorted(load.by_minute)
        ],
        "send_lag_p99_s": round(percentile(load.lags, 0.99), 2),
        "server_cpu_share_of_machine": round(cpu / wall / (os.cpu_count() or 1), 3),
        "server_cpu_seconds": round(cpu, 1),
        "db_growth_mb_per_fleet_hour": round(growth / 2**20, 1),
        # The same, scaled to the whole fleet's 750,000 reports an hour (if fewer were stored).
        "db_growth_mb_per_full_fleet_hour": round(
            growth
            / 2**20
            * (NODES * 3600 / REPORT_S)
            / max(1, len(ms) - len(load.errors))
            * fleet_hours,
            1,
        ),
        "cost_query_count": len(query_latencies),
        "cost_query_failed": sum(q is None for q in query_latencies),
        "cost_query_p50_ms": round(statistics.median(answered) * 1000, 1) if answered else None,
        "cost_query_max_ms": round(max(answered) * 1000, 1) if answered else None,
        "target_p99_ms": P99_TARGET_MS,
        "target_met": bool(ms)
        and percentile(ms, 0.99) < P99_TARGET_MS
        and not load.errors
        and not load.skipped,
    }
    for key, value in result.items():
        print(f"{key:>28}: {value}")
    write_results(args.out, result)


if __name__ == "__main__":
    main()
