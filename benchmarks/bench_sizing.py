"""Benchmark: bytes on disk per GPU per day, raw usage, its folded GPU-hours and the
rollup, at the 60-s interval.

Run: .venv/bin/python -m benchmarks.bench_sizing [--postgres URL] [--nodes 8] [--hours 6]

Posts real reports through a real server into a fresh PostgreSQL database: NODES nodes of
8 GPUs, one report a minute each for HOURS hours, two jobs a node (the GPUs split between
them), then measures the tables with `pg_total_relation_size` (indexes included); then
prunes it all as `gpucost db prune` does (folding it into GPU-hour records), timed beside a
plain scan of the same raw rows, and measures the folded records. Scales the figures to
GPU-days and prints a sizing table for 2,048 and 100,000 GPUs; writes
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
from app.retention.service import prune_raw
from benchmarks.results import write_results
from tests.support import (
    drop_all_postgres,
    ensure_postgres_database,
    entry,
    libpq,
    report,
    running_server,
    token_on,
    transactions_on,
)

GPUS_PER_NODE = 8
RAW = ("usage", "reports", "gpu_occupancy")
FOLDED = ("usage_gpu_hourly",)
ROLLUP = ("usage_hourly", "usage_daily", "usage_monthly", "usage_model_hourly")
RAW_DAYS = Settings().raw_retention_days


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
    token = token_on(args.postgres, "collector", cluster="hf-h800", name="sizing")
    conninfo = libpq(args.postgres)
    tables = {"raw": RAW, "folded": FOLDED, "rollup": ROLLUP}
    empty = {name: table_bytes(conninfo, names) for name, names in tables.items()}

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
    scan_s, raw_rows = scan(conninfo)
    started = time.perf_counter()
    end = start + timedelta(hours=args.hours, minutes=1)
    pruned = prune_raw(transactions_on(engine), now=end, retention_days=0, actor="bench")
    fold_s = time.perf_counter() - started
    engine.dispose()
    assert pruned.usage_rows_deleted == raw_rows, (pruned, raw_rows)
    per_gpu_day = {
        "raw": raw / gpu_days,
        "folded": (table_bytes(conninfo, FOLDED) - empty["folded"]) / gpu_days,
        "rollup": (table_bytes(conninfo, ROLLUP) - empty["rollup"]) / gpu_days,
    }
    kept = per_gpu_day["folded"] + per_gpu_day["rollup"]
    result = {
        "nodes": args.nodes,
        "gpus": args.nodes * GPUS_PER_NODE,
        "hours": args.hours,
        "reports": args.nodes * minutes,
        "ingest_seconds": round(ingest_s, 1),
        "raw_rows": raw_rows,
        "fold_seconds": round(fold_s, 2),
        "scan_seconds": round(scan_s, 3),
        "gpu_hour_updates": pruned.gpu_hour_updates,
        **{f"{name}_bytes_per_gpu_day": round(size) for name, size in per_gpu_day.items()},
        "kept_bytes_per_gpu_day": round(kept),
    }
    print(
        f"{result['reports']:,} reports of {GPUS_PER_NODE} GPUs (2 jobs a node) at 60 s, "
        "measured with indexes:"
    )
    print(f"  raw usage, reports, occupancy {per_gpu_day['raw']:>9,.0f} bytes per GPU-day")
    print(f"  folded GPU-hours              {per_gpu_day['folded']:>9,.0f} bytes per GPU-day")
    print(
        f"  rollup (4 levels)             {per_gpu_day['rollup']:>9,.0f} bytes per GPU-day"
        " (4 GPUs a job)"
    )
    print(f"  kept for ever                 {kept:>9,.0f} bytes per GPU-day")
    print(
        f"  fold: {raw_rows:,} raw rows in {fold_s:.2f} s ({raw_rows / fold_s:,.0f} rows/s); "
        f"a plain scan of them: {scan_s:.3f} s ({raw_rows / scan_s:,.0f} rows/s)"
    )
    for fleet in (2048, 100_000):
        raw_gb = per_gpu_day["raw"] * fleet * RAW_DAYS / 1e9
        kept_gb = kept * fleet * 365 / 1e9
        fold_min = fleet * raw_rows / (args.nodes * GPUS_PER_NODE) * 24 / args.hours
        fold_min *= fold_s / raw_rows / 60
        print(
            f"  {fleet:>7,} GPUs: raw for {RAW_DAYS} days {raw_gb:8,.1f} GB; "
            f"kept {kept_gb:7,.2f} GB a year; a day's fold {fold_min:6,.1f} min"
        )
        result[f"raw_gb_{RAW_DAYS}_days_{fleet}_gpus"] = round(raw_gb, 1)
        result[f"kept_gb_per_year_{fleet}_gpus"] = round(kept_gb, 2)
        result[f"fold_minutes_per_day_{fleet}_gpus"] = round(fold_min, 1)
    write_results(args.out, result)


def scan(conninfo: str) -> tuple[float, int]:
    """A plain read of every raw row's figures with their reports' spans: the baseline."""
    query = """
        SELECT u.gpu_id, u.job_id, r.period_start, r.period_end, u.gpu_us, u.busy_us,
               u.energy_mj
        FROM usage u JOIN reports r ON r.id = u.report_id
    """
    # Streamed (a server-side cursor): a read, not a read into memory.
    with psycopg.connect(conninfo) as conn, conn.cursor(name="scan") as cursor:
        cursor.itersize = 10_000
        started = time.perf_counter()
        count = sum(1 for _ in cursor.execute(query))
        return time.perf_counter() - started, count


if __name__ == "__main__":
    main()
