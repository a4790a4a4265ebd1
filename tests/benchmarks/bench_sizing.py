"""Benchmark: bytes on disk per GPU per day, raw usage and rollups, at the 60-s interval.

Run: .venv/bin/python -m tests.benchmarks.bench_sizing [--postgres URL] [--nodes 8] [--hours 6]

Posts real reports through a real server into a fresh PostgreSQL database: NODES nodes of
8 GPUs, one report a minute each for HOURS hours, two jobs a node (the GPUs split between
them), then measures the tables with `pg_total_relation_size` (indexes included) and scales
the figures to GPU-days. Prints a sizing table for 2,048 and 100,000 GPUs, and writes
bench-results/sizing.json.
"""

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

from app.core import migrate
from app.core.config import Settings
from app.core.db import create_db_engine
from tests.benchmarks.results import write_results
from tests.support import (
    drop_all_postgres,
    ensure_postgres_database,
    entry,
    libpq,
    report,
    running_server,
    token_on,
)

GPUS_PER_NODE = 8
RAW = ("usage", "reports")
ROLLUP = ("usage_hourly",)


def table_bytes(conninfo: str, names: tuple[str, ...]) -> int:
    """Tables and their indexes; a partitioned table counts all its partitions."""
    query = """
        SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
        WHERE c.relname = ANY(%(names)s) OR c.oid IN (
            SELECT i.inhrelid FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
            WHERE p.relname = ANY(%(names)s))
    """
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        return int(conn.execute(query, {"names": list(names)}).fetchone()[0])  # type: ignore[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/gpucost_bench_sizing"
    )
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--hours", type=int, default=6)
    parser.add_argument("--out", default="bench-results/sizing.json")
    args = parser.parse_args()

    ensure_postgres_database(args.postgres)
    drop_all_postgres(args.postgres)
    engine = create_db_engine(Settings(database_url=args.postgres))
    migrate.upgrade(engine)
    engine.dispose()
    token = token_on(args.postgres, "collector", cluster="hf-h800", name="sizing")
    conninfo = libpq(args.postgres)
    empty = {"raw": table_bytes(conninfo, RAW), "rollup": table_bytes(conninfo, ROLLUP)}

    start = datetime(2025, 1, 6, tzinfo=UTC)
    minutes = args.hours * 60
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as logs, running_server(args.postgres, Path(logs)) as server:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}
        ) as http:
            for node in range(args.nodes):
                bodies = []
                for minute in range(minutes):
                    begin = start + timedelta(minutes=minute)
                    gpus = [
                        entry(node * GPUS_PER_NODE + g, job_id=f"{node}-{g // 4}", gpu_seconds=60)
                        for g in range(GPUS_PER_NODE)
                    ]
                    for g, gpu in enumerate(gpus):
                        gpu["index"] = g
                    iso = [
                        (begin + timedelta(minutes=k)).isoformat().replace("+00:00", "Z")
                        for k in (0, 1)
                    ]
                    bodies.append(
                        report(minute, start=iso[0], end=iso[1], node=f"node-{node:03d}", gpus=gpus)
                    )
                for i in range(0, len(bodies), 500):
                    http.post(
                        "/v1/reports:batch", json={"reports": bodies[i : i + 500]}, timeout=120
                    ).raise_for_status()
    ingest_s = time.perf_counter() - started

    gpu_days = args.nodes * GPUS_PER_NODE * args.hours / 24
    raw = table_bytes(conninfo, RAW) - empty["raw"]
    rollup = table_bytes(conninfo, ROLLUP) - empty["rollup"]
    per_gpu_day = {"raw": raw / gpu_days, "rollup": rollup / gpu_days}
    result = {
        "nodes": args.nodes,
        "gpus": args.nodes * GPUS_PER_NODE,
        "hours": args.hours,
        "reports": args.nodes * minutes,
        "ingest_seconds": round(ingest_s, 1),
        "raw_bytes_per_gpu_day": round(per_gpu_day["raw"]),
        "rollup_bytes_per_gpu_day": round(per_gpu_day["rollup"]),
    }
    print(
        f"{result['reports']:,} reports of {GPUS_PER_NODE} GPUs (2 jobs a node) at 60 s, "
        "measured with indexes:"
    )
    print(f"  raw usage and reports  {per_gpu_day['raw']:>10,.0f} bytes per GPU-day")
    print(
        f"  hourly rollup          {per_gpu_day['rollup']:>10,.0f} bytes per GPU-day (4 GPUs a job)"
    )
    for fleet in (2048, 100_000):
        raw_gb = per_gpu_day["raw"] * fleet * 400 / 1e9
        rollup_gb = per_gpu_day["rollup"] * fleet * 365 / 1e9
        print(
            f"  {fleet:>7,} GPUs: raw for 400 days {raw_gb:8,.1f} GB; "
            f"rollup {rollup_gb:6,.2f} GB a year"
        )
        result[f"raw_gb_400_days_{fleet}_gpus"] = round(raw_gb, 1)
        result[f"rollup_gb_per_year_{fleet}_gpus"] = round(rollup_gb, 2)
    write_results(args.out, result)


if __name__ == "__main__":
    main()
