"""A year of hourly usage for a 2,048-GPU fleet, written straight into a fresh database.

Read benchmarks need realistic volume, not realistic ingest: hours go in with PostgreSQL
COPY after the schema is migrated, and the rollup's other levels (day, month, model) are then
summed from them as `gpucost db check-totals --repair` would. 2,048 H800s are 64 slots of
32 GPUs; each slot runs its jobs back to back through the year (5,000 jobs in all), and one
GPU in twenty is idle.
"""

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from app.core import migrate
from app.core.config import Settings
from app.core.db import Database, create_db_engine
from app.totals.check import rebuild_totals
from tests.support import drop_all_postgres, ensure_postgres_database, libpq

YEAR_START = datetime(2025, 1, 1, tzinfo=UTC)
HOURS = 365 * 24
GPUS, SLOT_GPUS = 2048, 32
IDLE_GPUS = GPUS // 20
MODELS = [f"model-{n:02d}" for n in range(20)]
PHASES = ["pre-training", "context-extension", "post-training", "eval"]
TEAMS = [f"team-{n}" for n in range(8)]
US_PER_HOUR = 3_600_000_000


@dataclass(frozen=True)
class Dataset:
    url: str
    jobs: int
    rollup_rows: int
    busiest_model: str


def load_year(url: str, *, jobs: int = 5000, slot_gpus: int = SLOT_GPUS, seed: int = 7) -> Dataset:
    """Recreate the database at `url` and fill it (hours, then the other levels from them);
    returns what was written.

    Smaller slots mean more jobs running at once, and so more hourly rows.
    """
    slots = GPUS // slot_gpus
    ensure_postgres_database(url)
    drop_all_postgres(url)
    engine = create_db_engine(Settings(database_url=url))
    migrate.upgrade(engine)
    engine.dispose()

    rng = random.Random(seed)
    # Each slot gets its share of jobs, cut at random points of the year.
    per_slot = [jobs // slots + (1 if s < jobs % slots else 0) for s in range(slots)]
    schedule: list[tuple[int, int, int, int]] = []  # job number, slot, first hour, hours
    number = 0
    for slot, count in enumerate(per_slot):
        cuts = sorted(rng.sample(range(1, HOURS), count - 1))
        for start, end in zip([0, *cuts], [*cuts, HOURS], strict=True):
            schedule.append((number, slot, start, end - start))
            number += 1

    conninfo = libpq(url)
    rows = 0
    model_hours: dict[str, int] = {}
    with psycopg.connect(conninfo) as conn:
        created = datetime.now(UTC)
        cluster_id = conn.execute(
            "INSERT INTO clusters (name, created_at) VALUES ('hf-h800', %s) RETURNING id",
            (created,),
        ).fetchone()[0]  # type: ignore[index]
        with conn.cursor().copy(
            "COPY jobs (id, cluster_id, scheduler_job_id, model, phase, team, user_name, labels,"
            " first_seen, last_seen, created_at, updated_at) FROM STDIN"
        ) as copy:
            for job, _slot, start, length in schedule:
                model = MODELS[job % len(MODELS)]
                model_hours[model] = model_hours.get(model, 0) + length
                first = YEAR_START + timedelta(hours=start)
                copy.write_row(
                    (
                        job + 1,
                        cluster_id,
                        str(100000 + job),
                        model,
                        PHASES[job % len(PHASES)],
                        TEAMS[job % len(TEAMS)],
                        f"user-{job % 50}",
                        "{}",
                        first,
                        first + timedelta(hours=length),
                        created,
                        created,
                    )
                )
        conn.execute("SELECT setval('jobs_id_seq', %s)", (len(schedule),))
        with conn.cursor().copy(
            "COPY usage_hourly (cluster_id, job_id, gpu_model, hour, gpu_us, busy_us, energy_mj)"
            " FROM STDIN"
        ) as copy:
            # Hour by hour, as collectors report: a job's rows lie spread over the table.
            running: dict[int, list[int]] = {}
            for job, _slot, start, length in schedule:
                for hour in range(start, start + length):
                    running.setdefault(hour, []).append(job)
            gpu_us = slot_gpus * US_PER_HOUR
            idle_us = IDLE_GPUS * US_PER_HOUR
            for hour in range(HOURS):
                moment = YEAR_START + timedelta(hours=hour)
                for job in running.get(hour, []):
                    copy.write_row(
                        (
                            cluster_id,
                            job + 1,
                            "NVIDIA H800",
                            moment,
                            gpu_us,
                            gpu_us * 9 // 10,
                            slot_gpus * 2_520_000_000,
                        )
                    )
                    rows += 1
                copy.write_row(
                    (cluster_id, None, "NVIDIA H800", moment, idle_us, 0, IDLE_GPUS * 300_000_000)
                )
                rows += 1
        conn.execute(
            "INSERT INTO rates (gpu_model, cluster_id, effective_from, micro_usd_per_gpu_hour,"
            " created_at, created_by) VALUES ('NVIDIA H800', NULL, %s, 2000000, %s, 'bench'),"
            " ('NVIDIA H800', NULL, %s, 1800000, %s, 'bench')",
            (YEAR_START, created, YEAR_START + timedelta(days=182), created),
        )
    fill_levels(url)
    # Steady state, as autovacuum keeps a live database: statistics and visibility map.
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    busiest = max(model_hours, key=lambda m: model_hours[m])
    return Dataset(url=url, jobs=len(schedule), rollup_rows=rows, busiest_model=busiest)


def fill_levels(url: str) -> None:
    """The rollup's other levels summed from the hours in one transaction, as
    `gpucost db check-totals --repair` does."""
    engine = create_db_engine(Settings(database_url=url))
    try:
        with Database(engine).write() as session:
            rebuild_totals(session)
    finally:
        engine.dispose()
