"""Benchmark: cost queries on a year of hourly usage (2,048 GPUs, 5,000 jobs) on PostgreSQL.

Run: .venv/bin/python -m tests.benchmarks.bench_costs [--postgres URL] [--repeat 30]

Prints the median latency of `GET /v1/models/{model}/cost` and a month's
`GET /v1/costs?group_by=team,model`, next to two baselines measured in the same run on
the same machine: a plain `SELECT 1` round trip to PostgreSQL and `GET /healthz` through
the same HTTP server. Writes the figures to bench-results/costs.json. Target: 50 ms each.
"""

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg

from tests.benchmarks.dataset import load_year
from tests.benchmarks.results import write_results
from tests.support import libpq, running_server, token_on

TARGET_MS = 50.0


def median_ms(action: Callable[[], object], repeat: int) -> float:
    action()  # warm caches and connections once
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/gpucost_bench"
    )
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--out", default="bench-results/costs.json")
    args = parser.parse_args()

    started = time.perf_counter()
    data = load_year(args.postgres)
    load_s = time.perf_counter() - started
    print(f"loaded {data.rollup_rows:,} hourly rows for {data.jobs:,} jobs in {load_s:.1f} s")

    token = token_on(args.postgres, "viewer")
    headers = {"Authorization": f"Bearer {token}"}
    conninfo = libpq(args.postgres)

    with tempfile.TemporaryDirectory() as logs, running_server(args.postgres, Path(logs)) as server:
        with (
            psycopg.connect(conninfo) as conn,
            httpx.Client(base_url=server.url, headers=headers) as http,
        ):

            def get(path: str, **params: str) -> Callable[[], object]:
                def call() -> object:
                    response = http.get(path, params=params)
                    response.raise_for_status()
                    return response

                return call

            figures = {
                "select_1_ms": median_ms(lambda: conn.execute("SELECT 1").fetchone(), args.repeat),
                "healthz_ms": median_ms(get("/healthz"), args.repeat),
                "model_cost_ms": median_ms(
                    get(f"/v1/models/{data.busiest_model}/cost"), args.repeat
                ),
                "month_team_model_ms": median_ms(
                    get(
                        "/v1/costs",
                        group_by="team,model",
                        **{"from": "2025-03-01T00:00:00Z", "to": "2025-04-01T00:00:00Z"},
                    ),
                    args.repeat,
                ),
            }
    result = {
        "rollup_rows": data.rollup_rows,
        "jobs": data.jobs,
        "repeat": args.repeat,
        "target_ms": TARGET_MS,
        **figures,
    }
    print(f"baseline  SELECT 1 round trip             {figures['select_1_ms']:8.2f} ms")
    print(f"baseline  GET /healthz                    {figures['healthz_ms']:8.2f} ms")
    for name, label in [
        ("model_cost_ms", "GET /v1/models/{model}/cost"),
        ("month_team_model_ms", "GET /v1/costs month team,model"),
    ]:
        verdict = "meets" if figures[name] <= TARGET_MS else "MISSES"
        ratio = figures[name] / figures["select_1_ms"]
        print(
            f"{label:<42}{figures[name]:8.2f} ms  ({ratio:.0f}x SELECT 1; "
            f"{verdict} {TARGET_MS:.0f} ms)"
        )
    write_results(args.out, result)


if __name__ == "__main__":
    main()
