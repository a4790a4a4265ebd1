"""Exact GPU-seconds from scenarios: attribution order, sharing, MIG, energy, lost GPUs, clocks."""

from __future__ import annotations

from decimal import Decimal
from itertools import pairwise

from collectors.spool_merge import epoch_ms
from tests.collectors.helpers import check_report_invariants, gpu, gpu_uuid, process, slurm, totals

D = Decimal


def test_exact_gpu_seconds_per_job_and_idle(harness):
    h = harness(
        {
            "gpus": [gpu(0), gpu(1)],
            "processes": [
                process(100, 0, start=30, end=250, cgroup=slurm(42)),
                process(101, 1, start=0, cgroup=slurm(43)),
            ],
        }
    )
    reports = h.finish(600)
    check_report_invariants(reports)
    assert totals(reports) == {"42": D(220), "43": D(600), None: D(380)}
    assert [r["seq"] for r in reports] == list(range(1, 11))
    assert reports[0]["start"] == "2026-01-05T10:00:00.000Z"
    assert reports[-1]["end"] == "2026-01-05T10:10:00.000Z"


def test_mapping_directory_wins_over_processes_and_counts_held_idle_time(harness):
    h = harness(
        {
            "gpus": [gpu(0), gpu(1), gpu(2)],
            "processes": [
                process(100, 0, start=0, cgroup=slurm(7)),
                process(101, 1, start=0, environ={"SLURM_JOB_ID": "8"}),
            ],
        }
    )
    h.map_gpu(0, "99")  # by index: beats the process's cgroup
    h.map_gpu(gpu_uuid(2), "77")  # by UUID: held, no process at all
    h.advance_to(120)
    h.map_gpu(gpu_uuid(2), None)  # the epilog ran just after the sample at 120 s
    reports = h.finish(240)
    assert totals(reports, by="gpu") == {
        (gpu_uuid(0), "99"): D(240),
        (gpu_uuid(1), "8"): D(240),
        (gpu_uuid(2), "77"): D(130),  # seen gone at the next sample
        (gpu_uuid(2), None): D(110),
    }


def test_cgroup_before_environ_and_gpucost_job_id_before_slurm(harness):
    pod = (
        "0::/kubepods.slice/kubepods-burstable.slice/"
        "kubepods-burstable-pod1f2e3d4c_aaaa_bbbb_cccc_0123456789ab.slice/cri-containerd-1.scope\n"
    )
    h = harness(
        {
            "gpus": [gpu(0), gpu(1), gpu(2)],
            "processes": [
                process(100, 0, cgroup=slurm(5), environ={"SLURM_JOB_ID": "6"}),
                process(101, 1, cgroup=pod),
                process(102, 2, environ={"SLURM_JOB_ID": "6", "GPUCOST_JOB_ID": "train-1"}),
            ],
        }
    )
    reports = h.finish(60)
    assert totals(reports) == {
        "5": D(60),
        "1f2e3d4c-aaaa-bbbb-cccc-0123456789ab": D(60),
        "train-1": D(60),
    }


def test_processes_of_several_jobs_split_a_gpu_equally(harness):
    h = harness(
        {
            "gpus": [gpu(0)],
            "processes": [
                process(100, 0, start=0, end=120, cgroup=slurm(1)),
                process(101, 0, start=0, end=120, cgroup=slurm(1)),
                process(102, 0, start=60, end=180, cgroup=slurm(2)),
                process(103, 0, start=60, end=180, cgroup=slurm(3)),
                process(104, 0, start=60, end=180, cgroup=slurm(4)),
                process(105, 0, start=60, end=180, cgroup=slurm(5)),
            ],
        }
    )
    reports = h.finish(240)
    check_report_invariants(reports)
    # 0-60: job 1 alone; 60-120: five jobs at 12 s each per minute; 120-180: four at 15 s.
    assert totals(reports) == {
        "1": D(72),
        "2": D(27),
        "3": D(27),
        "4": D(27),
        "5": D(27),
        None: D(60),
    }


def test_mig_instances_count_their_fraction_of_the_parent(harness):
    # 70 s reports so that sevenths are whole seconds.
    mig = [
        {"uuid": "MIG-a", "gi_slices": 3},
        {"uuid": "MIG-b", "gi_slices": 2},
        {"uuid": "MIG-c", "gi_slices": 1},
    ]
    h = harness(
        {
            "gpus": [gpu(0, mig=mig)],
            "processes": [
                process(100, 0, mig="MIG-a", cgroup=slurm(1)),
                process(101, 0, mig="MIG-b", cgroup=slurm(2)),
            ],
        },
        sample_interval=10.0,
        report_interval=70.0,
    )
    h.map_gpu("MIG-c", "3")
    reports = h.finish(700)
    check_report_invariants(reports)
    # 1g left unpartitioned: idle. The whole GPU adds up to one GPU-second per second.
    assert totals(reports) == {"1": D(300), "2": D(200), "3": D(100), None: D(100)}


def test_energy_is_the_counter_delta_across_a_reset(harness):
    h = harness(
        {
            "gpus": [
                gpu(0, power_mw=300_000, energy_start_mj=5_000_000, energy_resets=[130]),
                gpu(1, power_mw=200_000, energy_supported=False),
            ]
        }
    )
    reports = h.finish(240)
    energy = {}
    for report in reports:
        for entry in report["gpus"]:
            energy[entry["index"]] = energy.get(entry["index"], D(0)) + D(str(entry["energy_j"]))
    assert energy == {0: D(300 * 240), 1: D(200 * 240)}


def test_a_lost_gpu_is_missing_from_then_on_and_the_others_carry_on(harness):
    h = harness(
        {
            "gpus": [gpu(0, lost_at=90), gpu(1)],
            "processes": [
                process(100, 0, cgroup=slurm(1)),
                process(101, 1, cgroup=slurm(2)),
            ],
        }
    )
    reports = h.finish(300)
    assert totals(reports) == {"1": D(90), "2": D(300)}
    assert all(e["uuid"] == gpu_uuid(1) for r in reports[2:] for e in r["gpus"])
    assert h.metrics.gpus_lost._value.get() == 1
    assert h.metrics.nvml_errors.labels(error="NVMLError_GpuIsLost")._value.get() == 1


def test_a_wall_clock_step_neither_creates_nor_destroys_gpu_seconds(harness):
    h = harness(
        {
            "gpus": [gpu(0)],
            "processes": [process(100, 0, cgroup=slurm(1))],
            "wall_steps": [{"at": 95, "delta": -3600}, {"at": 215, "delta": 7200}],
        }
    )
    reports = h.finish(300)
    check_report_invariants(reports)
    assert totals(reports) == {"1": D(300)}
    # Report 2 (60-120 s) ends after the backwards step: dated an hour earlier.
    assert reports[1]["end"] == "2026-01-05T09:02:00.000Z"
    assert reports[1]["start"] == "2026-01-05T09:01:00.000Z"


def test_utilisation_and_peak_memory_follow_the_samples(harness):
    h = harness(
        {
            "gpus": [
                gpu(
                    0,
                    util=[{"at": 0, "value": 40}, {"at": 30, "value": 100}],
                    mem_used=[{"at": 0, "value": 500}],
                )
            ],
            "processes": [process(100, 0, start=0, end=20, used_memory=7000, cgroup=slurm(1))],
        }
    )
    reports = h.finish(60)
    by_job = {e["job_id"]: e for e in reports[0]["gpus"]}
    assert by_job["1"]["util_pct"] == 40.0 and by_job["1"]["mem_peak_bytes"] == 7500
    assert by_job[None]["util_pct"] == 85.0 and by_job[None]["mem_peak_bytes"] == 500


def fault(call: str, error: str, start: float = 0, end: float | None = None) -> dict:
    return {"call": call, "error": error, "from": start, "to": end}


def test_a_failing_nvml_reading_does_not_lose_the_gpus_time(harness):
    h = harness(
        {
            "gpus": [
                gpu(
                    0,
                    power_mw=200_000,
                    faults=[
                        fault("nvmlDeviceGetTotalEnergyConsumption", "NVML_ERROR_NO_PERMISSION"),
                        fault("nvmlDeviceGetUtilizationRates", "NVML_ERROR_UNKNOWN", 0, 30),
                    ],
                ),
                gpu(
                    1,
                    faults=[
                        fault("nvmlDeviceGetComputeRunningProcesses", "NVML_ERROR_UNKNOWN", 60, 120)
                    ],
                ),
                gpu(
                    2,
                    mig=[{"uuid": "MIG-t", "gi_slices": 7}],
                    faults=[fault("nvmlDeviceGetMaxMigDeviceCount", "NVML_ERROR_UNKNOWN", 30, 40)],
                ),
                gpu(3, faults=[fault("nvmlDeviceGetMigMode", "NVML_ERROR_NOT_SUPPORTED")]),
            ],
            "processes": [
                process(1, 0, cgroup=slurm(1)),
                process(2, 1, cgroup=slurm(2)),
                process(3, 2, mig="MIG-t", cgroup=slurm(3)),
                process(4, 3, cgroup=slurm(4)),
            ],
        }
    )
    reports = h.finish(300)
    check_report_invariants(reports)
    assert totals(reports, by="gpu") == {
        (gpu_uuid(0), "1"): D(300),
        (gpu_uuid(1), "2"): D(240),
        (gpu_uuid(1), None): D(60),  # processes unreadable for six samples: no job known
        (gpu_uuid(2), "3"): D(300),  # one failed sample: the last reading carried over
        (gpu_uuid(3), "4"): D(300),  # a GPU without MIG support (L40S, V100)
    }
    energy = sum(D(str(e["energy_j"])) for r in reports for e in r["gpus"] if e["index"] == 0)
    assert energy == D(200 * 300)  # integrated from power
    assert h.metrics.nvml_errors.labels(error="NVMLError_Unknown")._value.get() == 10
    assert h.metrics.nvml_errors.labels(error="NVMLError_NotSupported")._value.get() == 0


def test_a_stall_longer_than_max_gap_is_not_guessed(harness):
    h = harness({"gpus": [gpu(0)], "processes": [process(1, 0, cgroup=slurm(9))]})
    h.advance_to(130)
    h.clock.advance(3000)  # e.g. the process was SIGSTOPped
    h.agent.tick()
    reports = h.finish(3430)
    check_report_invariants(reports)
    assert totals(reports) == {"9": D(430)}


def test_mig_slices_are_out_of_4_on_an_a30_and_never_add_up_past_the_gpu(harness):
    a30 = [{"uuid": "MIG-q1", "gi_slices": 2}, {"uuid": "MIG-q2", "gi_slices": 1}]
    odd = [{"uuid": "MIG-o1", "gi_slices": 4}, {"uuid": "MIG-o2", "gi_slices": 4}]
    h = harness(
        {
            "gpus": [gpu(0, name="NVIDIA A30", mig=a30), gpu(1, name="NVIDIA X9", mig=odd)],
            "processes": [
                process(1, 0, mig="MIG-q1", cgroup=slurm(1)),
                process(2, 0, mig="MIG-q2", cgroup=slurm(2)),
                process(3, 1, mig="MIG-o1", cgroup=slurm(3)),
                process(4, 1, mig="MIG-o2", cgroup=slurm(4)),
            ],
        }
    )
    reports = h.finish(120)
    check_report_invariants(reports)
    assert totals(reports) == {"1": D(60), "2": D(30), None: D(30), "3": D(60), "4": D(60)}


def test_a_wall_clock_stepped_back_never_dates_a_report_over_reported_time(harness):
    h = harness(
        {
            "gpus": [gpu(0)],
            "processes": [process(100, 0, cgroup=slurm(1))],
            # 2 s back within the third report; 90 s back within the fifth.
            "wall_steps": [{"at": 150, "delta": -2}, {"at": 250, "delta": -90}],
        }
    )
    reports = h.finish(420)
    check_report_invariants(reports)
    spans = [(epoch_ms(r["start"]), epoch_ms(r["end"])) for r in reports]
    assert all(end <= start for (_, end), (start, _) in pairwise(spans)), spans
    # The third report starts where the second ended, 2 s short; the fifth waits until the
    # wall clock is past the fourth's end, and starts there: each step is what is lost.
    assert spans[2][1] - spans[2][0] == 58_000
    assert totals(reports) == {"1": D(420 - 2 - 90)}
