"""The spool: durable across crashes, sequence numbers that survive restarts, coalescing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from decimal import Decimal

from collectors.spool import Spool
from collectors.spool_merge import epoch_ms
from tests.collectors.helpers import check_report_invariants, gpu, process, slurm, totals

D = Decimal


def test_reports_and_the_sequence_survive_a_sigkill(tmp_path):
    path = tmp_path / "spool.db"
    child = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from collectors.spool import Spool
        spool = Spool(Path({str(path)!r}))
        for n in range(3):
            spool.add_report({{"gpus": [], "n": n}}, wall_ns=n, state={{"open": n}})
        spool.acknowledge([1])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True)
    assert done.returncode == -9, done.stderr
    spool = Spool(path)
    assert [(r.seq, r.body["n"]) for r in spool.pending(10)] == [(2, 1), (3, 2)]
    assert spool.load_state() == {"open": 2}
    assert spool.add_report({"gpus": []}, wall_ns=0, state=None) == 4
    assert spool._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_an_interval_left_open_by_a_crash_is_resumed_without_losing_time(harness):
    h = harness({"gpus": [gpu(0)], "processes": [process(1, 0, cgroup=slurm(9))]})
    h.advance_to(130)
    # Crash: the process and its memory are gone; the spool file and the clock remain.
    h.agent = h.new_agent()
    h.clock.advance(25)  # systemd restarted it 25 s later
    reports = h.finish(300)
    check_report_invariants(reports)
    assert totals(reports) == {"9": D(300)}


def test_after_a_reboot_the_time_before_it_is_reported_but_the_downtime_is_not(harness):
    h = harness({"gpus": [gpu(0)], "processes": [process(1, 0, cgroup=slurm(9))]})
    h.advance_to(130)
    h.agent = h.new_agent()
    h.clock.boot = "another-boot"
    h.clock.advance(40)
    reports = h.finish(300)
    assert totals(reports) == {"9": D(260)}
    assert reports[2]["end"] == "2026-01-05T10:02:10.000Z"  # the part measured before the crash


def test_a_gap_longer_than_max_gap_is_not_guessed(harness):
    h = harness({"gpus": [gpu(0)], "processes": [process(1, 0, cgroup=slurm(9))]}, max_gap=60.0)
    h.advance_to(60)
    h.agent = h.new_agent()
    h.clock.advance(120)
    assert totals(h.finish(300)) == {"9": D(180)}


def test_a_full_spool_coalesces_the_oldest_unsent_reports_into_hours_exactly(harness):
    h = harness(
        {
            "gpus": [gpu(0), gpu(1)],
            "processes": [
                process(1, 0, end=5000, cgroup=slurm(1)),
                process(2, 0, start=2000, cgroup=slurm(2)),
                process(3, 1, start=1000, end=9000, cgroup=slurm(3)),
            ],
        },
        spool_max_bytes=20_000,
    )
    h.advance_to(600)
    h.spool.mark_attempted([1, 2])  # may have reached the service: must stay as they are
    reports = h.finish(3 * 3600)
    check_report_invariants(reports)
    assert totals(reports) == {
        "1": D(2000 + 3000 / 2),
        "2": D(3000 / 2 + 3 * 3600 - 5000),
        "3": D(8000),
        None: D(2 * 3 * 3600 - 2000 - 3000 - (3 * 3600 - 5000) - 8000),
    }
    assert h.spool.size_bytes() <= 20_000
    assert [r["seq"] for r in reports[:3]] == [1, 2, 3]
    spans = [epoch_ms(r["end"]) - epoch_ms(r["start"]) for r in reports]
    assert spans[:2] == [60_000, 60_000] and max(spans) == 3_600_000
    assert all(span <= 3_600_000 for span in spans)
    assert len(reports) < 3 * 60
    assert h.metrics.reports_coalesced._value.get() > 100


def test_dead_letters_keep_the_report(tmp_path):
    spool = Spool(tmp_path / "s.db")
    seq = spool.add_report({"gpus": [1]}, wall_ns=5, state=None)
    spool.dead_letter(seq, http_status=422, error="gpu_seconds too large", wall_ns=6)
    assert spool.depth() == 0
    assert spool.dead_letters() == [(1, 422, "gpu_seconds too large")]
