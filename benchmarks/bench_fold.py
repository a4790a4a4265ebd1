"""Benchmark: folding an hour of raw usage into GPU-hour records, at two fleet sizes in one run.

Run: .venv/bin/python -m benchmarks.bench_fold [--postgres URL] [--gpus 4096]

For GPUS and 4 x GPUS GPUs in turn: a fresh PostgreSQL database, one hour of reports (8 GPUs
a node, one report a minute, two jobs a node) written straight into `reports` and `usage`
by SQL, then the hour folded by `app.retention._fold.fold_window`, as `gpucost db prune` does,
timed, with the growth of this process's peak memory (the hour's sums and one step's raw
rows are held while they are summed, see app.retention._fold). Prints, per size, seconds,
raw rows a second and bytes per raw row of the hour, and the ratio of the two sizes' times
(4 when the cost is linear in the rows).
"""

import argparse
import gc
import resource
import time
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.core import migrate
from app.core.config import Settings
from app.core.db import create_db_engine
from app.retention._fold import fold_window
from tests.support import drop_all_postgres, ensure_postgres_database

HOUR = datetime(2025, 1, 6, 10, tzinfo=UTC)
REPORTS = """
    INSERT INTO reports (id, node_id, seq, period_start, period_end, received_at,
                         payload_sha256, entries)
    SELECT g * 60 + m, g, m, :hour + m * interval '1 minute',
           :hour + (m + 1) * interval '1 minute', now(), 'bench', 8
    FROM generate_series(0, :nodes - 1) g, generate_series(0, 59) m
"""
USAGE = """
    INSERT INTO usage (report_id, gpu_id, job_id, period_start, gpu_us, busy_us, util_pct,
                       energy_mj, mem_peak_bytes)
    SELECT r.id, r.node_id * 8 + k, r.node_id * 2 + k / 4 + 1, r.period_start, 60000000,
           50000000, 83.3, 41200000, 1
    FROM reports r, generate_series(0, 7) k
"""


def fold_once(url: str, gpus: int) -> dict[str, float]:
    ensure_postgres_database(url)
    drop_all_postgres(url)
    engine = create_db_engine(Settings(database_url=url))
    migrate.upgrade(engine)
    with engine.begin() as connection:
        # Raw usage has no foreign keys; reports' node ids name no node here.
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text(REPORTS), {"hour": HOUR, "nodes": gpus // 8})
        connection.execute(text(USAGE))
        connection.execute(text("ANALYZE usage"))
    gc.collect()
    started = time.perf_counter()
    with Session(engine) as session, session.begin():
        folded = fold_window(session, start=None, before=datetime(2025, 1, 7, tzinfo=UTC))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    engine.dispose()
    assert folded is not None and folded.raw_rows == gpus * 60, folded
    return {"seconds": seconds, "rows": folded.raw_rows, "peak": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/gpucost_bench_fold"
    )
    parser.add_argument("--gpus", type=int, default=4096)
    args = parser.parse_args()
    # The process's peak memory only grows: each size's is taken over what it held before
    # the first, the smaller first, so that the larger's peak is its own.
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    results = [fold_once(args.postgres, gpus) for gpus in (args.gpus, 4 * args.gpus)]
    for result in results:
        result["peak_bytes"] = result["peak"] - base
    for gpus, result in zip((args.gpus, 4 * args.gpus), results, strict=True):
        print(
            f"{gpus:>7,} GPUs, {result['rows']:>9,.0f} raw rows an hour: "
            f"{result['seconds']:6.2f} s ({result['rows'] / result['seconds']:,.0f} rows/s), "
            f"peak memory {result['peak_bytes'] / 1e6:,.0f} MB "
            f"({result['peak_bytes'] / result['rows']:,.0f} bytes a row)"
        )
    print(f"time ratio, 4x the rows: {results[1]['seconds'] / results[0]['seconds']:.2f}")


if __name__ == "__main__":
    main()
