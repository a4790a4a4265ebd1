"""Benchmark: cost queries on a year of hourly usage (2,048 GPUs, 5,000 jobs) on PostgreSQL.

Run: .venv/bin/python -m benchmarks.bench_costs [--postgres URL] [--repeat 30]
     [--scale [--first-metrics 3]] [--out PATH]

Prints the median latency of `GET /v1/models/{model}/cost` and a month's
`GET /v1/costs?group_by=team,model`, next to two baselines measured in the same run on
the same machine: a plain `SELECT 1` round trip to PostgreSQL and `GET /healthz` through
the same HTTP server. Writes the figures to bench-results/costs.json. Target: 50 ms each.

--scale loads two years instead, in slots of 32 GPUs (0.57M hourly rows) and of 4 (4.5M),
into the --postgres database name suffixed `_scale_small` and `_scale_large`. On each it
measures the same figures, a year's `GET /v1/costs?group_by=team`, and the first
`GET /metrics` of a freshly started server, whose cache is still empty (the median over
--first-metrics starts). Prints them side by side with the ratio large/small and writes
bench-results/costs-scale.json. Targets at 4.5M: model cost 20 ms, month by team,model
50 ms, year by team 100 ms, first /metrics 200 ms; each at most 1.5 times its time at 0.57M.
"""

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy.engine import make_url

from benchmarks.dataset import SLOT_GPUS, Dataset, load_year
from benchmarks.results import write_results
from tests.support import libpq, running_server, token_on

TARGET_MS = 50.0
SCALE_TARGETS_MS = {
    "model_cost_ms": 20.0,
    "month_team_model_ms": 50.0,
    "year_team_ms": 100.0,
    "first_metrics_ms": 200.0,
}
MAX_RATIO = 1.5
SCALE_SLOT_GPUS = {"small": 32, "large": 4}
MONTH = {"from": "2025-03-01T00:00:00Z", "to": "2025-04-01T00:00:00Z"}
YEAR = {"from": "2025-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
QUERIES: dict[str, tuple[str, dict[str, str]]] = {
    "model_cost_ms": ("/v1/models/{model}/cost", {}),
    "month_team_model_ms": ("/v1/costs", {"group_by": "team,model", **MONTH}),
    "year_team_ms": ("/v1/costs", {"group_by": "team", **YEAR}),
}
PLAIN_QUERIES = ("model_cost_ms", "month_team_model_ms")
LABELS = {
    "select_1_ms": "baseline  SELECT 1 round trip",
    "healthz_ms": "baseline  GET /healthz",
    "model_cost_ms": "GET /v1/models/{model}/cost",
    "month_team_model_ms": "GET /v1/costs month team,model",
    "year_team_ms": "GET /v1/costs year team",
    "first_metrics_ms": "first GET /metrics",
}
LEVEL_TABLES = ("usage_hourly", "usage_daily", "usage_monthly", "usage_model_hourly")
# Given to the server, so a scrape is let in whatever GPUCOST_METRICS_TOKEN this shell has.
METRICS_TOKEN = "bench-metrics-token-0000"


def median_ms(action: Callable[[], object], repeat: int) -> float:
    action()  # warm caches and connections once
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def getter(http: httpx.Client, path: str, params: dict[str, str]) -> Callable[[], object]:
    def call() -> object:
        response = http.get(path, params=params)
        response.raise_for_status()
        return response

    return call


def timed_load(url: str, slot_gpus: int) -> tuple[Dataset, float]:
    started = time.perf_counter()
    data = load_year(url, slot_gpus=slot_gpus)
    return data, time.perf_counter() - started


def measure(data: Dataset, names: Iterable[str], *, repeat: int, log_dir: Path) -> dict[str, float]:
    """The two baselines and the median of each named query, on one server."""
    headers = {"Authorization": f"Bearer {token_on(data.url, 'viewer')}"}
    with (
        psycopg.connect(libpq(data.url)) as conn,
        running_server(data.url, log_dir) as server,
        httpx.Client(base_url=server.url, headers=headers, timeout=60) as http,
    ):
        figures = {
            "select_1_ms": median_ms(lambda: conn.execute("SELECT 1").fetchone(), repeat),
            "healthz_ms": median_ms(getter(http, "/healthz", {}), repeat),
        }
        for name in names:
            path, params = QUERIES[name]
            call = getter(http, path.format(model=data.busiest_model), params)
            figures[name] = median_ms(call, repeat)
    return figures


def first_metrics_ms(url: str, *, starts: int, log_dir: Path) -> float:
    """The median over `starts` fresh servers of the first scrape, which reads the database."""
    times = []
    for _ in range(starts):
        with (
            running_server(url, log_dir, env={"GPUCOST_METRICS_TOKEN": METRICS_TOKEN}) as server,
            httpx.Client(base_url=server.url, timeout=60) as http,
        ):
            http.get("/healthz").raise_for_status()  # the connection open: time the scrape alone
            started = time.perf_counter()
            response = http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            times.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    return statistics.median(times)


def level_rows(url: str) -> dict[str, int]:
    with psycopg.connect(libpq(url)) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in LEVEL_TABLES
        }


def scale_url(url: str, size: str) -> str:
    target = make_url(url)
    renamed = target.set(database=f"{target.database}_scale_{size}")
    return renamed.render_as_string(hide_password=False)


def measure_size(
    url: str, slot_gpus: int, args: argparse.Namespace, log_dir: Path
) -> dict[str, Any]:
    """Load one year at `url` and take every figure of --scale on it."""
    data, load_s = timed_load(url, slot_gpus)
    rows = level_rows(url)
    counts = ", ".join(f"{table} {count:,}" for table, count in rows.items())
    print(f"{make_url(url).database}: loaded in {load_s:.1f} s ({counts})")
    figures = measure(data, QUERIES, repeat=args.repeat, log_dir=log_dir)
    figures["first_metrics_ms"] = first_metrics_ms(url, starts=args.first_metrics, log_dir=log_dir)
    return {"slot_gpus": slot_gpus, "jobs": data.jobs, "load_s": load_s, "rows": rows, **figures}


def print_scale(small: dict[str, Any], large: dict[str, Any]) -> dict[str, float]:
    """The table of --scale; returns the ratio large/small of each figure."""
    sizes = [f"{s['rows']['usage_hourly'] / 1e6:.2g}M ms" for s in (small, large)]
    print(
        f"{'':<34}{sizes[0]:>10}{sizes[1]:>10}{'large/small':>13}"
        f"  {'target at ' + sizes[1][:-3]:<22}ratio <= {MAX_RATIO}"
    )
    ratios = {}
    for name, label in LABELS.items():
        ratios[name] = large[name] / small[name]
        line = f"{label:<34}{small[name]:10.2f}{large[name]:10.2f}{ratios[name]:13.2f}"
        if name in SCALE_TARGETS_MS:
            target = SCALE_TARGETS_MS[name]
            verdict = "meets" if large[name] < target else "MISSES"
            within = "yes" if ratios[name] <= MAX_RATIO else "NO"
            line += f"  {f'< {target:.0f} ms: {verdict}':<22}{within}"
        print(line)
    return ratios


def run_scale(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as logs:
        sizes = {
            size: measure_size(scale_url(args.postgres, size), slot_gpus, args, Path(logs))
            for size, slot_gpus in SCALE_SLOT_GPUS.items()
        }
    ratios = print_scale(sizes["small"], sizes["large"])
    result = {
        "repeat": args.repeat,
        "first_metrics_starts": args.first_metrics,
        "targets_ms": SCALE_TARGETS_MS,
        "max_ratio": MAX_RATIO,
        **sizes,
        "ratios": ratios,
    }
    write_results(args.out or "bench-results/costs-scale.json", result)


def run_plain(args: argparse.Namespace) -> None:
    data, load_s = timed_load(args.postgres, SLOT_GPUS)
    print(f"loaded {data.rollup_rows:,} hourly rows for {data.jobs:,} jobs in {load_s:.1f} s")
    with tempfile.TemporaryDirectory() as logs:
        figures = measure(data, PLAIN_QUERIES, repeat=args.repeat, log_dir=Path(logs))
    result = {
        "rollup_rows": data.rollup_rows,
        "jobs": data.jobs,
        "repeat": args.repeat,
        "target_ms": TARGET_MS,
        **figures,
    }
    print(f"{LABELS['select_1_ms']:<42}{figures['select_1_ms']:8.2f} ms")
    print(f"{LABELS['healthz_ms']:<42}{figures['healthz_ms']:8.2f} ms")
    for name in PLAIN_QUERIES:
        verdict = "meets" if figures[name] <= TARGET_MS else "MISSES"
        ratio = figures[name] / figures["select_1_ms"]
        print(
            f"{LABELS[name]:<42}{figures[name]:8.2f} ms  ({ratio:.0f}x SELECT 1; "
            f"{verdict} {TARGET_MS:.0f} ms)"
        )
    write_results(args.out or "bench-results/costs.json", result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/gpucost_bench"
    )
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--scale", action="store_true", help="0.57M against 4.5M hourly rows")
    parser.add_argument("--first-metrics", type=int, default=3, help="server starts (--scale)")
    parser.add_argument("--out", help="default bench-results/costs.json or costs-scale.json")
    args = parser.parse_args()
    if args.scale:
        run_scale(args)
    else:
        run_plain(args)


if __name__ == "__main__":
    main()
