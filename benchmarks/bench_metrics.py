"""Benchmark: `GET /metrics` on a year of hourly usage (2,048 GPUs, 5,000 jobs) on PostgreSQL.

Run: .venv/bin/python -m benchmarks.bench_metrics [--postgres URL] [--repeat 30]

Prints the median latency of `GET /metrics` read from the database on every scrape (cold:
no cache), from the cache (several scrapes within the cache duration), and from a stale
snapshot while a background read refreshes it (a scrape after the cache duration has
passed, as Prometheus does every 15 s), next to two baselines measured in the same run: a
plain `SELECT 1` round trip to PostgreSQL and `GET /healthz` through the same HTTP server.
Writes the figures to bench-results/metrics.json. Target: 100 ms for a scrape.
"""

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

from benchmarks.bench_costs import median_ms
from benchmarks.dataset import GPUS, SLOT_GPUS, load_year
from benchmarks.results import write_results
from tests.support import gpu_uuid, libpq, running_server

TARGET_MS = 100.0
STALE_CACHE_S = 1.0


def add_fleet(conninfo: str) -> None:
    """Nodes of 32 GPUs each, all reporting now: what the fleet gauges read."""
    now = datetime.now(UTC)
    with psycopg.connect(conninfo) as conn:
        cluster_id = conn.execute("SELECT id FROM clusters").fetchone()[0]  # type: ignore[index]
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO nodes (cluster_id, name, first_seen, last_interval_end,"
                " last_report_at) VALUES (%s, %s, %s, %s, %s)",
                [(cluster_id, f"node-{n:03d}", now, now, now) for n in range(GPUS // SLOT_GPUS)],
            )
            node_ids = [row[0] for row in conn.execute("SELECT id FROM nodes ORDER BY name")]
            cursor.executemany(
                "INSERT INTO gpus (uuid, node_id, gpu_index, model, first_seen)"
                " VALUES (%s, %s, %s, 'NVIDIA H800', %s)",
                [
                    (gpu_uuid(n).lower(), node_ids[n // SLOT_GPUS], n % SLOT_GPUS, now)
                    for n in range(GPUS)
                ],
            )


def stale_median_ms(scrape: Callable[[], object], repeat: int) -> float:
    """Scrapes spaced past the cache duration: each finds a stale snapshot."""
    scrape()
    times = []
    for _ in range(repeat):
        time.sleep(STALE_CACHE_S * 1.5)
        started = time.perf_counter()
        scrape()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/gpucost_bench_metrics"
    )
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--out", default="bench-results/metrics.json")
    args = parser.parse_args()

    started = time.perf_counter()
    data = load_year(args.postgres)
    conninfo = libpq(args.postgres)
    add_fleet(conninfo)
    load_s = time.perf_counter() - started
    print(f"loaded {data.rollup_rows:,} hourly rows for {data.jobs:,} jobs in {load_s:.1f} s")

    def scrape_with(http: httpx.Client) -> Callable[[], object]:
        def call() -> object:
            response = http.get("/metrics")
            response.raise_for_status()
            return response

        return call

    figures: dict[str, float] = {}
    series = 0
    runs = [("cold_ms", "0"), ("cached_ms", "5"), ("stale_ms", str(STALE_CACHE_S))]
    with tempfile.TemporaryDirectory() as logs, psycopg.connect(conninfo) as conn:
        figures["select_1_ms"] = median_ms(lambda: conn.execute("SELECT 1").fetchone(), args.repeat)
        for name, cache_s in runs:
            env = {"GPUCOST_METRICS_CACHE_SECONDS": cache_s}
            with (
                running_server(args.postgres, Path(logs), env=env) as server,
                httpx.Client(base_url=server.url, timeout=60) as http,
            ):
                if name == "cold_ms":
                    figures["healthz_ms"] = median_ms(lambda: http.get("/healthz"), args.repeat)
                    figures[name] = median_ms(scrape_with(http), args.repeat)
                    exposition = http.get("/metrics").text
                    series = sum(1 for line in exposition.splitlines() if line[:1] not in "#")
                elif name == "cached_ms":
                    figures[name] = median_ms(scrape_with(http), args.repeat)
                else:
                    figures[name] = stale_median_ms(scrape_with(http), min(args.repeat, 10))

    result = {
        "rollup_rows": data.rollup_rows,
        "jobs": data.jobs,
        "series": series,
        "repeat": args.repeat,
        "target_ms": TARGET_MS,
        **figures,
    }
    print(f"/metrics exposes {series:,} series")
    print(f"baseline  SELECT 1 round trip                 {figures['select_1_ms']:8.2f} ms")
    print(f"baseline  GET /healthz                        {figures['healthz_ms']:8.2f} ms")
    for name, label in [
        ("cold_ms", "GET /metrics, database read each time"),
        ("cached_ms", "GET /metrics, from the cache"),
        ("stale_ms", "GET /metrics, stale while refreshing"),
    ]:
        verdict = "meets" if figures[name] <= TARGET_MS else "MISSES"
        ratio = figures[name] / figures["select_1_ms"]
        print(
            f"{label:<46}{figures[name]:8.2f} ms  ({ratio:.0f}x SELECT 1; "
            f"{verdict} {TARGET_MS:.0f} ms)"
        )
    write_results(args.out, result)


if __name__ == "__main__":
    main()
