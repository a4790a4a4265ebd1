"""Benchmark: the full DeepSeek-V3 replay through HTTP into PostgreSQL, beside COPY.

Run: .venv/bin/python -m benchmarks.bench_replay [--postgres URL] [--workers 2]

1. Reports: the collector's real code (fake NVML, virtual clock, hourly reports) runs once
   per distinct node timeline of the scenario (deepseek-v3 has two: nodes 0-249 take part
   in all three phases, nodes 250-255 only in pre-training); every other node's reports are
   its twin's, with its own node name and GPU UUIDs. Running the collector's Python for all
   2.79 million GPU-hours would measure the simulator, not the service.
2. Replay: `gpucost serve --workers N` on a fresh PostgreSQL database; every node's reports
   go from an in-memory spool through the collector's `Sender` (batches of 500) with
   `--clients` nodes sending at once. Figures: GPU-entries/s, reports/s, wall time, the
   server's peak memory (VmHWM of each process, summed), and the V3 table read back.
3. Baseline in the same run: the same GPU-entries loaded with `COPY` into a plain table.
Target: at least 50,000 GPU-entries/s. Writes bench-results/replay.json.
"""

import argparse
import gc
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy.engine import make_url

from app.cli.common import wait_until_serving
from app.core import migrate
from app.core.config import Settings
from app.core.db import create_db_engine
from benchmarks.results import write_results
from collectors.clock import FakeClock
from collectors.metrics import CollectorMetrics
from collectors.sender import Backoff, Sender
from collectors.spool import Spool
from simulator import scenario as scenarios
from simulator.fleet import Fleet, register_jobs
from simulator.gpus import gpu_uuid
from tests.support import ensure_postgres_database, free_port, token_on

ENTRIES_PER_S_TARGET = 50_000
BIN = Path(sys.executable).parent


def node_signature(scenario: scenarios.SimScenario, node: int) -> tuple[Any, ...]:
    gpus = range(node * scenario.gpus_per_node, (node + 1) * scenario.gpus_per_node)
    jobs = tuple(tuple(j.job_id for j in scenario.jobs if j.holds(g)) for g in gpus)
    events = tuple(e for e in scenario.events if e.node == node or e.gpu in gpus)
    return jobs, events, scenario.gpu_model_of(node)


def generate(scenario: scenarios.SimScenario) -> tuple[dict[int, list[dict[str, Any]]], float]:
    """Every node's report bodies (without seq), and the seconds the collector code took."""
    twins: dict[tuple[Any, ...], list[int]] = {}
    for node in range(scenario.nodes):
        twins.setdefault(node_signature(scenario, node), []).append(node)
    started = time.perf_counter()
    fleet = Fleet(scenario, server=None, token=None, only_nodes=[g[0] for g in twins.values()])
    fleet.run()
    elapsed = time.perf_counter() - started
    bodies: dict[int, list[dict[str, Any]]] = {}
    for sim, group in zip(fleet.nodes, twins.values(), strict=True):
        made = [r.body for r in sim.spool.pending(10**7)]
        for node in group:
            uuids = {
                gpu_uuid(scenario.cluster, sim.first_gpu + i): gpu_uuid(
                    scenario.cluster, node * scenario.gpus_per_node + i
                )
                for i in range(scenario.gpus_per_node)
            }
            bodies[node] = [
                {
                    **{k: v for k, v in body.items() if k != "seq"},
                    "node": f"node-{node:03d}",
                    "gpus": [{**e, "uuid": uuids[e["uuid"]]} for e in body["gpus"]],
                }
                for body in made
            ]
    fleet.close()
    return bodies, elapsed


def peak_memory_mb(pid: int) -> float:
    """VmHWM of the server and its worker processes, summed."""
    total = 0
    for each in process_tree(pid):
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total / 1024


def copy_baseline(conninfo: str, bodies: dict[int, list[dict[str, Any]]]) -> float:
    """Seconds to COPY the same GPU-entries into a plain table."""
    with psycopg.connect(conninfo) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_replay_copy")
        conn.execute(
            "CREATE TABLE bench_replay_copy (node text, seq int, period_start timestamptz,"
            " period_end timestamptz, uuid text, gpu_index int, model text, job_id text,"
            " gpu_seconds numeric, util_pct numeric, energy_j numeric, mem_peak_bytes bigint)"
        )
        conn.commit()
        started = time.perf_counter()
        with conn.cursor().copy("COPY bench_replay_copy FROM STDIN") as copy:
            for node, reports in bodies.items():
                for seq, body in enumerate(reports, 1):
                    for e in body["gpus"]:
                        copy.write_row(
                            (
                                f"node-{node:03d}",
                                seq,
                                body["start"],
                                body["end"],
                                e["uuid"],
                                e["index"],
                                e["model"],
                                e["job_id"],
                                e["gpu_seconds"],
                                e["util_pct"],
                                e["energy_j"],
                                e["mem_peak_bytes"],
                            )
                        )
        conn.commit()
        return time.perf_counter() - started


def process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid, *(int(p) for p in children.read_text().split())] if children.exists() else [pid]


def fresh_database(database_url: str) -> str:
    """Empty and migrate the benchmark's PostgreSQL database; returns its libpq conninfo."""
    ensure_postgres_database(database_url)
    url = make_url(database_url)
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    engine = create_db_engine(Settings(database_url=database_url))
    migrate.upgrade(engine)
    engine.dispose()
    return conninfo


def make_tokens(database_url: str, cluster: str) -> dict[str, str]:
    """A collector token for `cluster` and a viewer token."""
    return {
        "collector": token_on(database_url, "collector", cluster=cluster, name="bench-collector"),
        "viewer": token_on(database_url, "viewer", name="bench-viewer"),
    }


@contextmanager
def serving(database_url: str, workers: int) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`gpucost serve --workers N` on a free port, until the block ends."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GPUCOST_DATABASE_URL": database_url}
    with tempfile.TemporaryDirectory() as logs, open(Path(logs) / "server.log", "wb") as log:
        server = subprocess.Popen(
            [str(BIN / "gpucost"), "serve", "--port", str(port), "--workers", str(workers)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            why_not = wait_until_serving(server, url)
            if why_not is not None:
                raise RuntimeError(f"gpucost serve {why_not}:\n{Path(log.name).read_text()}")
            yield url, server
        finally:
            worker_pids = process_tree(server.pid)[1:]
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:  # stuck requests hold a graceful shutdown
                for pid in [server.pid, *worker_pids]:
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/gpucost_bench_sim_replay",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=0, help="send only this many nodes")
    parser.add_argument("--out", default="bench-results/replay.json")
    args = parser.parse_args()

    scenario = scenarios.load("deepseek-v3")
    bodies, generate_s = generate(scenario)
    if args.nodes:
        bodies = {n: bodies[n] for n in sorted(bodies)[: args.nodes]}
    reports = sum(len(b) for b in bodies.values())
    entries = sum(len(r["gpus"]) for b in bodies.values() for r in b)
    print(f"collector code: {generate_s:.1f} s for the distinct node timelines")
    print(f"{reports:,} reports, {entries:,} GPU-entries for {len(bodies)} nodes")

    conninfo = fresh_database(args.postgres)
    tokens = make_tokens(args.postgres, scenario.cluster)
    collector, viewer = tokens["collector"], tokens["viewer"]
    with serving(args.postgres, args.workers) as (server_url, server):
        client = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=64))
        register_jobs(client, server_url, collector, scenario)
        senders = []
        for node, node_bodies in bodies.items():
            spool = Spool.in_memory()
            for body in node_bodies:
                spool.add_report(body, wall_ns=0, state=None)
            clock = FakeClock(start_wall_ns=0)
            senders.append(
                (
                    spool,
                    Sender(
                        spool=spool,
                        client=client,
                        server=server_url,
                        token=lambda: collector,
                        cluster=scenario.cluster,
                        clock=clock,
                        backoff=Backoff(rng=random.Random(node)),
                        metrics=CollectorMetrics(),
                        batch_size=500,
                        register_jobs=False,
                    ),
                )
            )
        # The load generator holds every report in memory, some 30 million objects that
        # the cycle collector would otherwise walk again and again while the senders run,
        # taking the cores the server is measured on. None of them is garbage.
        gc.freeze()
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(lambda s: s[1].send_pending(max_batches=10**6), senders))
        wall_s = time.perf_counter() - started
        left = sum(spool.depth() for spool, _ in senders)
        dead = sum(len(spool.dead_letters()) for spool, _ in senders)
        peak_mb = peak_memory_mb(server.pid)
        table = client.get(
            server_url + "/v1/models/deepseek-v3/cost",
            headers={"Authorization": f"Bearer {viewer}"},
        ).json()
    copy_s = copy_baseline(conninfo, bodies)
    api_rate, copy_rate = entries / wall_s, entries / copy_s
    phases = {p["phase"]: str(Decimal(p["gpu_hours"])) for p in table.get("phases", [])}
    result = {
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": f"{os.cpu_count()} CPUs, load {os.getloadavg()}",
        "server_workers": args.workers,
        "clients": args.clients,
        "nodes": len(bodies),
        "reports": reports,
        "gpu_entries": entries,
        "unsent": left,
        "dead_lettered": dead,
        "collector_code_s": round(generate_s, 1),
        "wall_s": round(wall_s, 1),
        "gpu_entries_per_s": round(api_rate),
        "reports_per_s": round(reports / wall_s),
        "server_peak_mb": round(peak_mb, 1),
        "copy_s": round(copy_s, 1),
        "copy_gpu_entries_per_s": round(copy_rate),
        "api_over_copy": round(api_rate / copy_rate, 4),
        "target_gpu_entries_per_s": ENTRIES_PER_S_TARGET,
        "target_met": api_rate >= ENTRIES_PER_S_TARGET and not left and not dead,
        "phases_gpu_hours": phases,
        "total_cost_usd": table.get("total", {}).get("cost_usd"),
    }
    for key, value in result.items():
        print(f"{key:>24}: {value}")
    write_results(args.out, result)


if __name__ == "__main__":
    main()
