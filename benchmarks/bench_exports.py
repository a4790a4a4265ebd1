"""Benchmark: streaming a FOCUS export of over a million rows from PostgreSQL, as CSV and
as Parquet.

Run: .venv/bin/python -m benchmarks.bench_exports [--postgres URL]

Loads a year of hourly usage for 2,048 GPUs in 128 slots of 16 (about 1.1 million
job-hours), then downloads the FOCUS export at hour granularity, for half the year and for
the whole year, as CSV and as Parquet, each from a fresh server process. Prints rows per
second and the server's peak resident memory (VmHWM) for each, beside a baseline measured in
the same run: PostgreSQL's own `COPY (SELECT ...) TO STDOUT` of the same hourly rows joined to
their jobs. Targets: more than 50,000 rows/s and under 250 MB. Writes
bench-results/exports.json.
"""

import argparse
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import pyarrow.parquet as pq

from benchmarks.dataset import load_year
from benchmarks.results import write_results
from tests.support import libpq, running_server, token_on

ROWS_PER_S_TARGET = 50_000
PEAK_MB_TARGET = 250


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def copy_baseline(conninfo: str) -> tuple[int, float]:
    started = time.perf_counter()
    rows = 0
    with psycopg.connect(conninfo) as conn, conn.cursor() as cursor:
        query = (
            "COPY (SELECT u.hour, c.name, j.scheduler_job_id, j.model, j.phase, j.team,"
            " j.user_name, u.gpu_model, u.gpu_us, u.busy_us, u.energy_mj FROM usage_hourly u"
            " JOIN clusters c ON c.id = u.cluster_id LEFT JOIN jobs j ON j.id = u.job_id"
            " ORDER BY u.hour) TO STDOUT WITH (FORMAT csv)"
        )
        with cursor.copy(query) as copy:
            for block in copy:
                rows += bytes(block).count(b"\n")
    return rows, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/gpucost_bench_exports"
    )
    parser.add_argument("--out", default="bench-results/exports.json")
    args = parser.parse_args()

    data = load_year(args.postgres, slot_gpus=16)
    print(f"loaded {data.rollup_rows:,} hourly rows for {data.jobs:,} jobs")
    token = token_on(args.postgres, "viewer")
    conninfo = libpq(args.postgres)

    copy_rows, copy_s = copy_baseline(conninfo)
    print(
        f"baseline  PostgreSQL COPY of the hourly rows  {round(copy_rows / copy_s):>10,} rows/s "
        f"({copy_rows:,} rows)"
    )
    result: dict[str, object] = {
        "copy_rows": copy_rows,
        "copy_rows_per_s": round(copy_rows / copy_s),
    }
    for file_format in ("csv", "parquet"):
        for months, end in ((6, "2025-07-01T00:00:00Z"), (12, "2026-01-01T00:00:00Z")):
            window = {"from": "2025-01-01T00:00:00Z", "to": end, "granularity": "hour"}
            measured = export_once(args.postgres, token, file_format, window)
            result[f"{file_format}_{months}_months"] = measured
            verdict = "meets" if measured["rows_per_s"] > ROWS_PER_S_TARGET else "MISSES"
            memory = "meets" if measured["server_peak_rss_mb"] < PEAK_MB_TARGET else "MISSES"
            print(
                f"FOCUS {file_format:<7} {months:>2} months, hourly  {measured['rows_per_s']:>10,} "
                f"rows/s ({measured['rows']:,} rows, {measured['megabytes']} MB in "
                f"{measured['seconds']} s, first byte after {measured['first_byte_seconds']} s; "
                f"{verdict} {ROWS_PER_S_TARGET:,}); server peak "
                f"{measured['server_peak_rss_mb']} MB (idle {measured['server_rss_before_mb']} "
                f"MB; {memory} {PEAK_MB_TARGET} MB)"
            )
    write_results(args.out, result)


def export_once(
    postgres: str, token: str, file_format: str, params: dict[str, str]
) -> dict[str, float]:
    """One download from a fresh server: its rows, time and the server's peak memory."""
    with (
        tempfile.TemporaryDirectory() as logs,
        running_server(postgres, Path(logs)) as server,
        tempfile.TemporaryFile() as file,
    ):
        idle_mb = peak_rss_mb(server.process.pid)
        started = time.perf_counter()
        first_byte_s = None
        with httpx.stream(
            "GET",
            f"{server.url}/v1/exports/focus.{file_format}",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
            timeout=600,
        ) as response:
            response.raise_for_status()
            size, lines = 0, -1  # the CSV's header
            for chunk in response.iter_bytes():
                if first_byte_s is None:
                    first_byte_s = time.perf_counter() - started
                size += len(chunk)
                if file_format == "csv":
                    lines += chunk.count(b"\n")  # no field holds a newline
                else:
                    file.write(chunk)  # counted from its footer, once whole
        seconds = time.perf_counter() - started
        peak_mb = peak_rss_mb(server.process.pid)
        rows = lines if file_format == "csv" else pq.ParquetFile(file).metadata.num_rows
    return {
        "rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds),
        "megabytes": round(size / 1e6, 1),
        "first_byte_seconds": round(first_byte_s or 0, 2),
        "server_rss_before_mb": round(idle_mb, 1),
        "server_peak_rss_mb": round(peak_mb, 1),
    }


if __name__ == "__main__":
    main()
