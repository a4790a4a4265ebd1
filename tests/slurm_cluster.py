"""A real single-node Slurm for tests: munge, slurmdbd on MariaDB, slurmctld and slurmd from
Debian's packages, run as root in the foreground from a directory of their own, with fake GPU
device files as GRES and the shipped prolog/epilog installed as the docs say."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import collectors
from tests.support import free_port, skip_or_fail

DEPLOY = Path(collectors.__file__).parent / "deploy"
TOOLS = ("munged", "munge", "unmunge", "slurmdbd", "slurmctld", "slurmd", "sbatch", "sacct",
         "scancel", "squeue", "sinfo", "mysql")  # fmt: skip
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")  # where Slurm's auth/munge looks for it
# The GPU devices' character major (NVIDIA's), as `mknod /dev/nvidiaN c 195 N` makes them.
NVIDIA_MAJOR = 195


def install_slurm_script(name: str, target: Path, mapping_dir: Path) -> Path:
    """A shipped prolog or epilog installed as the docs say: the `MAPPING_DIR=` line set with
    sed, made executable."""
    done = subprocess.run(
        ["sed", f"s|^MAPPING_DIR=.*|MAPPING_DIR={mapping_dir}|", str(DEPLOY / name)],
        capture_output=True,
        text=True,
        check=True,
    )
    target.write_text(done.stdout)
    target.chmod(0o755)
    return target


def require_slurm() -> None:
    """Skip (fail under CI=true) where this machine cannot run a Slurm of its own."""
    missing = [name for name in TOOLS if shutil.which(name) is None]
    if missing:
        skip_or_fail(
            f"{', '.join(missing)} not installed (Debian: apt-get install -y slurmctld slurmd "
            "slurmdbd slurm-client munge mariadb-client)"
        )
    if os.geteuid() != 0:
        skip_or_fail("a Slurm of its own needs root (its daemons, prolog and device files)")
    probe = subprocess.run(["mysql", "-uroot", "-e", "SELECT 1"], capture_output=True, text=True)
    if probe.returncode != 0:
        skip_or_fail(f"MariaDB unreachable as root on its socket: {probe.stderr.strip()}")


class SlurmCluster:
    """One node with `gpus` GPUs, accounting in a MariaDB database of its own."""

    def __init__(self, root: Path, *, mapping_dir: Path, gpus: int = 8) -> None:
        self.root = root
        self.name = "gpucost-e2e"
        self.node = socket.gethostname().split(".")[0]
        self.database = f"gpucost_slurm_{uuid.uuid4().hex[:8]}"
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "TZ": "UTC"}
        self.processes: list[subprocess.Popen[bytes]] = []
        self._write_files(mapping_dir, gpus)

    def _write_files(self, mapping_dir: Path, gpus: int) -> None:
        for name in ("state", "spool", "dev"):
            (self.root / name).mkdir()
        for index in range(gpus):
            os.mknod(self.root / "dev" / f"nvidia{index}", 0o600 | 0o020000,
                     os.makedev(NVIDIA_MAJOR, index))  # fmt: skip
        prolog = install_slurm_script("slurm-prolog.sh", self.root / "prolog", mapping_dir)
        epilog = install_slurm_script("slurm-epilog.sh", self.root / "epilog", mapping_dir)
        ctld, slurmd, dbd = free_port(), free_port(), free_port()
        settings = {
            "ClusterName": self.name,
            "SlurmctldHost": f"{self.node}(127.0.0.1)",
            "SlurmctldPort": ctld,
            "SlurmdPort": slurmd,
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "StateSaveLocation": self.root / "state",
            "SlurmdSpoolDir": self.root / "spool",
            "SlurmctldPidFile": self.root / "slurmctld.pid",
            "SlurmdPidFile": self.root / "slurmd.pid",
            "SlurmctldLogFile": self.root / "slurmctld.log",
            "SlurmdLogFile": self.root / "slurmd.log",
            # No cgroup hierarchy is needed: processes tracked by parentage, tasks unconfined.
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core",
            "GresTypes": "gpu",
            # More CPUs than the machine has, so that GPUs, not cores, limit what runs at once.
            "SlurmdParameters": "config_overrides",
            # The prolog runs when the job is allocated, as docs/slurm.md asks.
            "PrologFlags": "Alloc",
            "Prolog": prolog,
            "Epilog": epilog,
            "AccountingStorageType": "accounting_storage/slurmdbd",
            "AccountingStorageHost": "127.0.0.1",
            "AccountingStoragePort": dbd,
            "AccountingStorageTRES": "gres/gpu",
            "MinJobAge": 3600,
            "KillWait": 2,
            "ReturnToService": 2,
            "SchedulerParameters": "sched_interval=1",
            "NodeName": f"{self.node} NodeAddr=127.0.0.1 CPUs=16 RealMemory=1000 "
            f"Gres=gpu:{gpus} State=UNKNOWN",
            "PartitionName": f"gpu Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
        }
        self.conf.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        (self.root / "gres.conf").write_text(
            f"Name=gpu File={self.root}/dev/nvidia[0-{gpus - 1}]\n"
        )
        dbd_conf = self.root / "slurmdbd.conf"  # slurmdbd reads it beside slurm.conf
        dbd_conf.write_text(
            "AuthType=auth/munge\nDbdAddr=127.0.0.1\nDbdHost=localhost\n"
            f"DbdPort={dbd}\nSlurmUser=root\nPidFile={self.root}/slurmdbd.pid\n"
            f"LogFile={self.root}/slurmdbd.log\nStorageType=accounting_storage/mysql\n"
            "StorageHost=localhost\nStorageUser=root\n"  # MariaDB's socket, as root
            f"StorageLoc={self.database}\n"
        )
        dbd_conf.chmod(0o600)

    # -- running it ------------------------------------------------------------------------
    def _daemon(self, *command: str) -> None:
        with (self.root / f"{command[0]}.out").open("ab") as log:
            self.processes.append(
                subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
            )

    def _munge_works(self) -> bool:
        encoded = subprocess.run(["munge", "-n"], capture_output=True)
        return (
            encoded.returncode == 0
            and subprocess.run(["unmunge"], input=encoded.stdout, capture_output=True).returncode
            == 0
        )

    def start(self) -> None:
        # Slurm's daemons reach munged on its system socket only: a munged already up there is
        # shared (one of ours is stopped with the rest, so two clusters at once cannot be).
        if not self._munge_works():
            key = self.root / "munge.key"
            key.write_bytes(os.urandom(1024))
            key.chmod(0o400)
            MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
            self._daemon(
                "munged", "--foreground", "--force", f"--key-file={key}",
                f"--socket={MUNGE_SOCKET}", f"--pid-file={self.root}/munged.pid",
                f"--log-file={self.root}/munged.log", f"--seed-file={self.root}/munged.seed",
            )  # fmt: skip
            self.wait_until(self._munge_works, "munged answers", 20)
        self._daemon("slurmdbd", "-D")
        self.wait_until(
            lambda: self._answers(self.setting("AccountingStoragePort")), "slurmdbd", 60
        )
        self._daemon("slurmctld", "-D", "-i", "-f", str(self.conf))
        self._daemon("slurmd", "-D", "-f", str(self.conf))
        self.wait_until(lambda: self.node_state() == "idle", "the node is idle", 60)

    def stop(self) -> None:
        """Cancel every job and wait for them to go, stop the daemons, drop the database."""
        if self.processes:
            subprocess.run(["scancel", "--full", "--user=root"],
                           env=self.env, capture_output=True)  # fmt: skip
            try:
                self.wait_until(lambda: not self._queued(), "every job has gone", 60)
            except RuntimeError:
                pass  # stopped all the same: slurmd takes its job steps down with it
        for process in reversed(self.processes):
            process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        drop = f"DROP DATABASE IF EXISTS {self.database}"
        subprocess.run(["mysql", "-uroot", "-e", drop], capture_output=True)

    def _queued(self) -> bool:
        try:
            return bool(self.command("squeue", "--noheader", "--format=%i").strip())
        except RuntimeError:
            return False

    def setting(self, key: str) -> str:
        for line in self.conf.read_text().splitlines():
            if line.startswith(key + "="):
                return line.split("=", 1)[1]
        raise KeyError(key)

    @staticmethod
    def _answers(port: str) -> bool:
        try:
            socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
        except OSError:
            return False
        return True

    def wait_until(self, condition: Callable[[], bool], what: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            dead = [p.args for p in self.processes if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead[0]} exited; see the logs in {self.root}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"waited {seconds} s for: {what}; see the logs in {self.root}")
            time.sleep(0.5)

    def command(self, *args: str) -> str:
        done = subprocess.run(
            args, env=self.env, cwd=self.root, capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def node_state(self) -> str:
        try:
            return self.command("sinfo", "--noheader", "--format=%T").strip()
        except RuntimeError:
            return ""

    def sbatch(self, *args: str) -> str:
        """Submit a batch job; its id."""
        output = f"--output={self.root}/job-%j.out"
        return self.command("sbatch", "--parsable", output, *args).strip().split(";")[0]

    def job_states(self, jobs: list[str]) -> dict[str, str]:
        """Each job's state as the accounting database has it."""
        out = self.command(
            "sacct", "--noheader", "--parsable2", "--allocations", "--format=JobIDRaw,State",
            f"--jobs={','.join(jobs)}",
        )  # fmt: skip
        return dict(line.split("|")[0:2] for line in out.splitlines() if "|" in line)
