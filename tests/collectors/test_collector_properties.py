"""Properties over random scenarios: the time of every GPU is reported once, and only once."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.aggregate import apportion
from collectors.spool_merge import merge_reports
from tests.collectors.helpers import Harness, check_report_invariants, gpu, process, slurm, totals

STEP = 10


@given(st.lists(st.fractions(min_value=0, max_value=10**6), min_size=1, max_size=9),
       st.integers(min_value=0, max_value=10**7))  # fmt: skip
def test_apportion_sums_exactly_and_stays_within_one(parts, total):
    shares = apportion(parts, total)
    whole = sum(parts, Fraction(0))
    assert sum(shares) == (total if whole else 0)
    if whole:
        assert all(abs(s - p * total / whole) < 1 for s, p in zip(shares, parts, strict=True))


processes = st.lists(
    st.tuples(
        st.integers(0, 2),  # GPU
        st.integers(1, 4),  # job
        st.integers(0, 30),  # start, in steps
        st.integers(1, 30),  # length, in steps
    ),
    max_size=8,
)


@settings(max_examples=40, deadline=None)
@given(processes, st.sampled_from([30, 60, 70]))
def test_random_scenarios_report_every_gpu_second_once(spec, report_interval):
    end = 40 * STEP
    scenario = {
        "gpus": [gpu(i) for i in range(3)],
        "processes": [
            process(100 + n, g, start=s * STEP, end=(s + length) * STEP, cgroup=slurm(job))
            for n, (g, job, s, length) in enumerate(spec)
        ],
    }
    with tempfile.TemporaryDirectory() as root:
        h = Harness(Path(root), scenario, report_interval=float(report_interval))
        reports = h.finish(end)
    check_report_invariants(reports)
    expected: dict[str | None, Fraction] = defaultdict(Fraction)
    for t in range(0, end, STEP):
        for g in range(3):
            jobs = {
                str(job) for gg, job, s, n in spec if gg == g and s * STEP <= t < (s + n) * STEP
            }
            for job in jobs or {None}:
                expected[job] += Fraction(STEP, len(jobs) or 1)
    got = totals(reports)
    assert sum(got.values()) == 3 * end  # not a millisecond more or less in all
    assert got.keys() == {k for k, v in expected.items() if v}
    for job, seconds in expected.items():
        assert abs(Fraction(got[job]) - seconds) <= Fraction(len(reports), 1000)
    merged = merge_reports(reports[:3])
    assert totals([merged]) == totals(reports[:3])
    assert sum(totals([merged]).values(), Decimal(0)) == sum(totals(reports[:3]).values())
