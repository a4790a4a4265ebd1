"""Benchmark: the fleet's reports while hostile and greedy clients do their worst, beside the
same load without them.

Run: .venv/bin/python -m benchmarks.bench_soak [--postgres URL] [--seconds 180]

`gpucost serve --workers 2` on a fresh PostgreSQL database takes the fleet load of
`bench_fleet` (12,500 nodes of 8 GPUs, one report each a minute, 208 requests/s, open loop)
twice, for `--seconds` each: first alone, then while
- 20 slow clients each declare a 100,000-byte report and send a byte a second: 10 without a
  token, 10 with a valid collector token; each opens a new connection as soon as it is
  answered (or cut off);
- 10 clients download the hourly FOCUS export of the last two days over and over, reading
  16 KiB every 0.1 s (about 160 KiB/s each).
Printed for both phases side by side: reports sent, errors, 5xx among them, latency p50, p99
and max; for the hostile phase, what the slow clients and the downloads got. Target: with the
hostile clients, ingest p99 < 250 ms and no 5xx. Writes bench-results/soak.json.
"""

import argparse
import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from benchmarks.bench_fleet import (
    CLUSTER,
    NODES,
    P99_TARGET_MS,
    REPORT_S,
    Fleet,
    Phase,
    label_jobs,
    open_loop,
    template_entries,
)
from benchmarks.bench_replay import fresh_database, make_tokens, process_tree, serving
from benchmarks.results import write_results

SLOW_SENDERS, DOWNLOADS = 20, 10
DRIP_EVERY_S = 1.0
READ_BYTES, READ_EVERY_S = 16 * 1024, 0.1


@dataclass
class Hostile:
    """What the hostile and greedy clients got."""

    slow_answers: Counter[str] = field(default_factory=Counter)
    downloads: Counter[str] = field(default_factory=Counter)
    download_bytes: int = 0


async def slow_sender(host: str, port: int, token: str | None, out: Hostile) -> None:
    """Declare a 100,000-byte report, send a byte a second; again a second after it is
    answered or cut off."""
    authorization = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        "POST /v1/reports HTTP/1.1\r\nHost: gpucost\r\nContent-Type: application/json\r\n"
        f"{authorization}Content-Length: 100000\r\n\r\n{{"
    ).encode()
    kind = "with a token" if token else "without a token"
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            out.slow_answers[f"{kind}: connect {type(exc).__name__}"] += 1
            await asyncio.sleep(1)
            continue
        try:
            writer.write(head)
            await writer.drain()
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), DRIP_EVERY_S)
                except TimeoutError:
                    writer.write(b" ")
                    await writer.drain()
                    continue
                status = line.split(b" ")[1].decode() if line.count(b" ") >= 2 else "closed"
                out.slow_answers[f"{kind}: {status}"] += 1
                break
        except (OSError, IndexError) as exc:
            out.slow_answers[f"{kind}: {type(exc).__name__}"] += 1
        finally:
            writer.close()
        await asyncio.sleep(DRIP_EVERY_S)


async def slow_download(session: aiohttp.ClientSession, token: str, out: Hostile) -> None:
    """The last two days' hourly FOCUS export, read slowly, over and over."""
    today = datetime.now(UTC).date()
    query = {
        "from": (today - timedelta(days=1)).isoformat(),
        "to": (today + timedelta(days=1)).isoformat(),
        "granularity": "hour",
    }
    headers = {"Authorization": f"Bearer {token}"}
    while True:
        try:
            async with session.get("/v1/exports/focus.csv", params=query, headers=headers) as r:
                while chunk := await r.content.read(READ_BYTES):
                    out.download_bytes += len(chunk)
                    await asyncio.sleep(READ_EVERY_S)
                out.downloads[str(r.status)] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            out.downloads[type(exc).__name__] += 1
            await asyncio.sleep(1)


async def drive(
    url: str, tokens: dict[str, str], entries: list[dict[str, Any]], seconds: int, pids: list[int]
) -> tuple[Phase, Phase, Hostile]:
    host, port = url.removeprefix("http://").split(":")
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=50)
    async with (
        aiohttp.ClientSession(
            url, connector=connector, timeout=aiohttp.ClientTimeout(total=10)
        ) as session,
        aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=600)) as downloads,
    ):
        fleet = Fleet("", tokens["collector"], entries)
        print("the fleet alone", flush=True)
        alone = await open_loop(session, fleet.report, seconds, pids, None)
        minutes = seconds // REPORT_S + 1  # sequence numbers go on from the first phase

        async def report(s: aiohttp.ClientSession, node: int, n: int, at: datetime) -> int:
            return await fleet.report(s, node, n + minutes, at)

        hostile = Hostile()
        tasks = [
            asyncio.create_task(
                slow_sender(host, int(port), tokens["collector"] if i % 2 else None, hostile)
            )
            for i in range(SLOW_SENDERS)
        ]
        tasks += [
            asyncio.create_task(slow_download(downloads, tokens["viewer"], hostile))
            for _ in range(DOWNLOADS)
        ]
        print("the fleet with hostile and greedy clients", flush=True)
        try:
            besieged = await open_loop(session, report, seconds, pids, None)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return alone, besieged, hostile


def summary(phase: Phase) -> dict[str, Any]:
    server_errors = [e for e in phase.errors if e.isdigit() and int(e) >= 500]
    return {
        "reports": phase.count,
        "reports_per_s": round(phase.count / phase.wall, 1) if phase.wall else 0,
        "errors": len(phase.errors),
        "errors_5xx": len(server_errors),
        "error_kinds": dict(Counter(phase.errors).most_common(5)),
        "p50_ms": phase.ms(0.5),
        "p99_ms": phase.ms(0.99),
        "max_ms": phase.ms(1.0),
        "server_cpu_ms_per_report": phase.per_request_ms(phase.server_cpu),
        "client_fell_behind": phase.client_behind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/gpucost_bench_soak"
    )
    parser.add_argument("--seconds", type=int, default=180)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="bench-results/soak.json")
    args = parser.parse_args()
    if args.seconds % REPORT_S:
        # Whole minutes: a node's first report of the second phase then starts after its
        # last of the first ends (else it overlaps it, and is refused 409).
        parser.error(f"--seconds must be a multiple of {REPORT_S}")

    entries = template_entries()
    fresh_database(args.postgres)
    tokens = make_tokens(args.postgres, CLUSTER)
    started = time.perf_counter()
    with serving(args.postgres, args.workers) as (url, server):
        label_jobs(url, tokens["collector"])
        alone, besieged, hostile = asyncio.run(
            drive(url, tokens, entries, args.seconds, process_tree(server.pid))
        )
    rows = [summary(alone), summary(besieged)]
    print(f"{'':>26}  {'fleet alone':>20}  {'with hostile clients':>20}")
    for key in rows[0]:
        print(f"{key:>26}  {str(rows[0][key]):>20}  {str(rows[1][key]):>20}")
    print(f"slow senders' answers: {dict(hostile.slow_answers)}")
    print(f"downloads: {dict(hostile.downloads)}, {hostile.download_bytes / 2**20:.1f} MiB read")
    met = besieged.count > 0 and besieged.ms(0.99) < P99_TARGET_MS and not rows[1]["errors_5xx"]
    result = {
        "measured_at": datetime.now(UTC).isoformat(),
        "offered_reports_per_s": round(NODES / REPORT_S, 1),
        "seconds_per_phase": args.seconds,
        "alone": rows[0],
        "with_hostile_clients": rows[1],
        "slow_sender_answers": dict(hostile.slow_answers),
        "downloads": dict(hostile.downloads),
        "download_mib": round(hostile.download_bytes / 2**20, 1),
        "target_p99_ms": P99_TARGET_MS,
        "target_met": met,
        "wall_s": round(time.perf_counter() - started),
    }
    print(f"target (p99 < {P99_TARGET_MS} ms, no 5xx, with hostile clients) met: {met}")
    write_results(args.out, result)


if __name__ == "__main__":
    main()
