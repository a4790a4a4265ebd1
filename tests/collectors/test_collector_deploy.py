"""The shipped Slurm prolog/epilog, example configuration and systemd unit."""

from __future__ import annotations

import os
import subprocess
from fractions import Fraction
from pathlib import Path

import collectors
from collectors.attribution import Attributor
from collectors.config import load_config
from collectors.sampling import GpuReading, UnitReading
from tests.slurm_cluster import install_slurm_script

DEPLOY = Path(collectors.__file__).parent / "deploy"


def slurm_script(name: str, mapping_dir: Path, **env: str) -> None:
    """The script installed as the docs say, run as slurmd runs it: with only Slurm's variables."""
    installed = install_slurm_script(name, mapping_dir.parent / name, mapping_dir)
    subprocess.run([str(installed)], env={"PATH": os.environ["PATH"], **env}, check=True)


def reading(index: int) -> GpuReading:
    uuid = f"GPU-{index:08d}-1111-2222-3333-444444444444"
    unit = UnitReading(uuid, Fraction(1), (), 0)
    return GpuReading(uuid, index, "NVIDIA H800", 0, 0, None, None, (unit,))


def test_prolog_maps_the_jobs_gpus_and_epilog_removes_only_its_own(tmp_path):
    jobs = tmp_path / "jobs"
    slurm_script("slurm-prolog.sh", jobs, SLURM_JOB_ID="41", SLURM_JOB_GPUS="0,1")
    slurm_script("slurm-prolog.sh", jobs, SLURM_JOB_ID="42", SLURM_JOB_GPUS="1,2,../x")
    # A step's renumbered CUDA_VISIBLE_DEVICES is not the node's indices: never read.
    slurm_script("slurm-prolog.sh", jobs, SLURM_JOB_ID="43", CUDA_VISIBLE_DEVICES="0")
    assert sorted(p.name for p in jobs.iterdir()) == ["0", "1", "2"]
    attributor = Attributor(mapping_dir=jobs, proc_root=tmp_path / "proc")
    shares = attributor.attribute((reading(0), reading(1), reading(2), reading(3))).shares
    assert [list(s) for s in shares.values()] == [["41"], ["42"], ["42"], [None]]
    slurm_script("slurm-epilog.sh", jobs, SLURM_JOB_ID="41")  # GPU 1 is 42's now: kept
    assert sorted((p.name, p.read_text()) for p in jobs.iterdir()) == [("1", "42\n"), ("2", "42\n")]
    slurm_script("slurm-epilog.sh", jobs, SLURM_JOB_ID="42")
    assert list(jobs.iterdir()) == []


def test_the_example_configuration_loads(tmp_path):
    config = load_config({}, {}, DEPLOY / "collector.example.toml")
    assert (config.cluster, config.sample_interval, config.spool_max_bytes) == (
        "hf-h800",
        10.0,
        64 * 2**20,
    )


def test_the_systemd_unit_runs_the_collector_and_stops_it_with_sigterm():
    unit = (DEPLOY / "gpucost-collector.service").read_text()
    assert "ExecStart=/opt/gpucost/bin/gpucost-collector run --config" in unit
    assert "KillSignal=SIGTERM" in unit and "Restart=always" in unit


def test_a_mapping_dir_that_is_not_a_plain_absolute_path_fails_the_prolog_only(tmp_path):
    """The prolog refuses it (the node drains: an admin sees it at once); the epilog never
    fails."""
    for bad in (tmp_path / "a&b", Path("relative/jobs")):
        prolog = install_slurm_script("slurm-prolog.sh", tmp_path / "prolog", bad)
        done = subprocess.run(
            [str(prolog)], env={"PATH": os.environ["PATH"], "SLURM_JOB_ID": "1",
                                "SLURM_JOB_GPUS": "0"}, capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 1
        assert "MAPPING_DIR must be an absolute path" in done.stderr
        epilog = install_slurm_script("slurm-epilog.sh", tmp_path / "epilog", bad)
        ran = subprocess.run([str(epilog)], env={"SLURM_JOB_ID": "1", "PATH": os.environ["PATH"]})
        assert ran.returncode == 0
    assert not (tmp_path / "a&b").exists()


def test_a_job_id_from_a_process_must_be_whole_no_trailing_newline(tmp_path):
    proc = tmp_path / "proc"
    for pid, job in ((100, b"4242"), (101, b"4242\n")):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "environ").write_bytes(b"SLURM_JOB_ID=" + job + b"\0")
        (proc / str(pid) / "cgroup").write_text("0::/system.slice/other.service\n")
    attributor = Attributor(mapping_dir=tmp_path / "jobs", proc_root=proc)

    assert attributor._process_job(100, {}) == "4242"
    assert attributor._process_job(101, {}) is None  # the service would refuse it
