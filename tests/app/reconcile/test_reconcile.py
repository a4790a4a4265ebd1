"""`gpucost reconcile slurm` on both databases, from sacct output in a file: every verdict, the
exit status an operator's cron reads, the three formats, requeued jobs, the period's edges, and
one line for each mistake. (The same command against a real Slurm is in test_slurm_e2e.py.)"""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli import cli
from app.cli.reconcile import DIFFERENCES_EXIT
from app.reconcile.sacct import SACCT_FIELDS, parse_sacct
from tests.support import CLUSTER, entry, report

Auth = dict[str, dict[str, str]]
HEADER = "|".join(SACCT_FIELDS)
TEN = "2025-01-06T10:00:00"
PERIOD = ("--cluster", CLUSTER, "--from", "2025-01-06", "--to", "2025-01-07")


def sacct_line(job: str, state: str, start: str, end: str, elapsed: int, tres: str) -> str:
    """A record in SACCT_FIELDS' order (JobName last)."""
    return "|".join((job, state, start, end, str(elapsed), tres, "train"))


def write_sacct(path: Path, *lines: str) -> Path:
    path.write_text("\n".join((HEADER, *lines)) + "\n")
    return path


def gpucost(url: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli, ["reconcile", "slurm", *args], env={"GPUCOST_DATABASE_URL": url}
    )
    return result.exit_code, result.stdout, result.stderr


def post(client: TestClient, auth: Auth, seq: int, start: str, end: str, *gpus: dict) -> None:
    body = report(seq, start=start, end=end, gpus=list(gpus))
    assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201


@pytest.fixture
def measured(client: TestClient, auth: Auth) -> None:
    """Jobs 100 (2 GPUs, 120 s), 101 (60 s), 102 (60 s, Slurm never heard of it), and 108
    whose usage began before the period; each GPU 97.5 % busy."""
    post(client, auth, 1, "2025-01-06T10:00:00Z", "2025-01-06T10:01:00Z",
         entry(0, job_id="100"), entry(1, job_id="100"), entry(2, job_id="101"),
         entry(3, job_id="102"))  # fmt: skip
    post(client, auth, 2, "2025-01-05T23:59:30Z", "2025-01-06T00:00:30Z", entry(5, job_id="108"))


def test_every_verdict_and_the_exit_status(db_url: str, measured: None, tmp_path: Path) -> None:
    just_ended = (datetime.now(UTC) - timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%S")
    sacct = write_sacct(
        tmp_path / "sacct.txt",
        sacct_line("100", "COMPLETED", "2025-01-06T09:59:59", "2025-01-06T10:01:01", 62,
                   "billing=2,cpu=2,gres/gpu=2,gres/gpu:h800=2,node=1"),
        "100.batch|COMPLETED|2025-01-06T09:59:59|2025-01-06T10:01:01|62|cpu=2,gres/gpu=2|batch",
        sacct_line("101", "FAILED", TEN, "2025-01-06T10:01:40", 100, "cpu=1,gres/gpu=1"),
        sacct_line("104", "CANCELLED by 0", "2025-01-06T10:50:00", "2025-01-06T11:00:00", 600,
                   "cpu=4,gres/gpu=4"),
        sacct_line("105", "RUNNING", "2025-01-06T23:00:00", "Unknown", 500, "gres/gpu=1"),
        sacct_line("106", "COMPLETED", TEN, "2025-01-06T10:05:00", 300, "cpu=1,mem=1G,node=1"),
        sacct_line("109", "COMPLETED", "2025-01-06T23:55:00", just_ended, 300, "gres/gpu=1"),
        sacct_line("110", "CANCELLED", "None", TEN, 0, "gres/gpu=8"),
        sacct_line("111", "COMPLETED", TEN, "2025-01-06T10:00:05", 5, "gres/gpu=1"),
    )  # fmt: skip
    code, out, err = gpucost(db_url, *PERIOD, "--sacct-file", str(sacct), "--format", "json")
    assert code == DIFFERENCES_EXIT, err
    assert err.strip() == "8 jobs with GPU time, 3 beyond tolerance (15 s per GPU)"
    got = {
        line["job_id"]: (line["gpus"], line["slurm_gpu_seconds"], line["gpucost_gpu_seconds"],
                         line["busy_gpu_seconds"], line["difference"], line["verdict"],
                         line["fails"])
        for line in json.loads(out)
    }  # fmt: skip
    assert got == {
        "100": (2, "124", "120", "117", "-4", "match", False),
        "101": (1, "100", "60", "58.5", "-40", "differs beyond tolerance", True),
        "102": (None, None, "60", "58.5", "60", "unknown to Slurm", True),
        "104": (4, "2400", None, None, "-2400", "unknown to gpucost", True),
        "105": (1, "500", None, None, "-500", "still running", False),
        "108": (None, None, "60", "58.5", "60", "outside the period", False),
        "109": (1, "300", None, None, "-300", "not yet reported", False),
        # Too short for any sample to have seen it: within the tolerance.
        "111": (1, "5", None, None, "-5", "unknown to gpucost", False),
        # No GPU time on either side for 106 (no GPU) and 110 (never started); 100.batch is
        # a step of 100.
    }
    assert list(got) == ["100", "101", "102", "104", "105", "108", "109", "111"]

    # A looser tolerance forgives 101; the CSV says the same as the JSON.
    code, out, _ = gpucost(db_url, *PERIOD, "--sacct-file", str(sacct), "--format", "csv",
                           "--tolerance", "40")  # fmt: skip
    assert code == DIFFERENCES_EXIT
    rows = out.splitlines()
    assert rows[0] == (
        "job,name,state,gpus,slurm_gpu_seconds,gpucost_gpu_seconds,busy_gpu_seconds,"
        "difference,verdict,fails"
    )
    assert "101,train,FAILED,1,100,60,58.5,-40,match,no" in rows
    assert "104,train,CANCELLED,4,2400,,,-2400,unknown to gpucost,yes" in rows


def test_a_clean_period_exits_zero(db_url: str, measured: None, tmp_path: Path) -> None:
    sacct = write_sacct(
        tmp_path / "sacct.txt",
        sacct_line("100", "COMPLETED", TEN, "2025-01-06T10:01:00", 60, "gres/gpu=2"),
        sacct_line("101", "COMPLETED", TEN, "2025-01-06T10:01:00", 60, "gres/gpu=1"),
        sacct_line("102", "COMPLETED", TEN, "2025-01-06T10:01:05", 65, "gres/gpu=1"),
    )
    code, out, err = gpucost(db_url, *PERIOD, "--sacct-file", str(sacct))
    assert code == 0, err
    assert "GPU-seconds: Slurm's allocation, gpucost's measurement" in out
    assert err.strip() == "4 jobs with GPU time, 0 beyond tolerance (15 s per GPU)"  # and 108


def test_requeued_runs_add_up_and_jobs_past_the_period_are_read_whole(
    db_url: str, client: TestClient, auth: Auth, tmp_path: Path
) -> None:
    """Job 300 ran twice (requeued): sacct --duplicates has a record per run. Job 400 was
    queued in the period and ran after it: sacct lists it, its usage is read all the same."""
    post(client, auth, 1, "2025-01-06T10:00:00Z", "2025-01-06T10:01:00Z", entry(0, job_id="300"))
    post(client, auth, 2, "2025-01-06T11:00:00Z", "2025-01-06T11:01:00Z", entry(0, job_id="300"))
    post(client, auth, 3, "2025-01-06T20:00:00Z", "2025-01-06T20:01:00Z", entry(1, job_id="400"))
    sacct = write_sacct(
        tmp_path / "sacct.txt",
        sacct_line("300", "REQUEUED", TEN, "2025-01-06T10:01:00", 60, "gres/gpu=1"),
        sacct_line("300", "COMPLETED", "2025-01-06T11:00:00", "2025-01-06T11:01:10", 70,
                   "gres/gpu=1"),
        sacct_line("400", "COMPLETED", "2025-01-06T20:00:00", "2025-01-06T20:01:00", 60,
                   "gres/gpu=1"),
    )  # fmt: skip
    code, out, err = gpucost(db_url, "--cluster", CLUSTER, "--from", "2025-01-06T09:00:00",
                             "--to", "2025-01-06T12:00:00", "--sacct-file", str(sacct),
                             "--format", "json", "--tolerance", "5")  # fmt: skip
    assert code == 0, out + err
    lines = {line["job_id"]: line for line in json.loads(out)}
    assert (lines["300"]["slurm_gpu_seconds"], lines["300"]["gpucost_gpu_seconds"]) == (
        "130",
        "120",
    )
    assert (lines["300"]["state"], lines["300"]["verdict"]) == ("COMPLETED", "match")
    assert (lines["400"]["gpucost_gpu_seconds"], lines["400"]["verdict"]) == ("60", "match")


def test_a_pipe_in_a_job_name_stays_in_the_name(tmp_path: Path) -> None:
    jobs = parse_sacct(
        text=f"{HEADER}\n7|COMPLETED|1700000000|1700000060|60|gres/gpu=1|a|COMPLETED|x|9|gres/gpu=9\n"
    )
    assert [(j.job_id, j.name, j.gpu_seconds) for j in jobs] == [
        ("7", "a|COMPLETED|x|9|gres/gpu=9", 60)
    ]


def test_only_the_clusters_jobs_count(db_url: str, measured: None, tmp_path: Path) -> None:
    sacct = write_sacct(tmp_path / "sacct.txt")
    code, out, err = gpucost(db_url, *PERIOD[2:], "--cluster", "other", "--sacct-file",
                             str(sacct), "--format", "json")  # fmt: skip
    assert (code, json.loads(out)) == (0, [])
    code, out, _ = gpucost(db_url, *PERIOD, "--sacct-file", str(sacct), "--format", "json")
    assert code == DIFFERENCES_EXIT
    assert {line["job_id"] for line in json.loads(out)} == {"100", "101", "102", "108"}


def test_gpus_not_tracked_by_slurm_is_said_plainly(
    db_url: str, measured: None, tmp_path: Path
) -> None:
    sacct = write_sacct(
        tmp_path / "sacct.txt", sacct_line("100", "COMPLETED", TEN, TEN, 60, "cpu=2,node=1")
    )
    code, out, err = gpucost(db_url, *PERIOD, "--sacct-file", str(sacct))
    assert (code, out) == (1, "")
    assert "AccountingStorageTRES=gres/gpu" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("JobIDRaw|State\n1|COMPLETED\n", (), "no Start, End, ElapsedRaw, AllocTRES, JobName"),
        ("", (), "the output is empty"),
        (f"{HEADER}\n1|COMPLETED|{TEN}|soon|60|gres/gpu=1|x\n", (), "line 2: End 'soon' is not"),
        (f"{HEADER}\n1|COMPLETED|99999999999999|None|60|gres/gpu=1|x\n", (), "line 2: Start"),
        (f"{HEADER}\n1|COMPLETED\n", (), "line 2 has 2 of 7 fields"),
        (f"{HEADER}\n1|COMPLETED|None|None|ten|gres/gpu=1|x\n", (), "line 2: ElapsedRaw or"),
        (HEADER, ("--to", "2025-01-05"), "--to must be after --from"),
        (HEADER, ("--to", "yesterday"), "--to 'yesterday': not a date or time"),
    ],
)  # fmt: skip
def test_mistakes_are_one_line(
    db_url: str, tmp_path: Path, content: str, args: tuple[str, ...], message: str
) -> None:
    (tmp_path / "sacct.txt").write_text(content)
    code, out, err = gpucost(db_url, "--cluster", CLUSTER, "--from", "2025-01-06",
                             "--sacct-file", str(tmp_path / "sacct.txt"), *args)  # fmt: skip
    assert code == 1 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_bytes_that_are_not_utf8_are_replaced_not_fatal(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "sacct.txt").write_bytes(
        f"{HEADER}\n1|COMPLETED|{TEN}|{TEN}|0|gres/gpu=1|caf\xe9\n".encode("latin-1")
    )
    code, out, err = gpucost(db_url, "--cluster", CLUSTER, "--from", "2025-01-06",
                             "--sacct-file", str(tmp_path / "sacct.txt"))  # fmt: skip
    assert code == 0, err


def test_a_missing_file_or_sacct_is_one_line(db_url: str, tmp_path: Path) -> None:
    code, _, err = gpucost(db_url, "--cluster", CLUSTER, "--from", "2025-01-06",
                           "--sacct-file", str(tmp_path / "none.txt"))  # fmt: skip
    assert code == 1 and "cannot read the sacct file" in err and "No such file" in err
    result = CliRunner().invoke(
        cli, ["reconcile", "slurm", "--cluster", CLUSTER, "--from", "2025-01-06"],
        env={"GPUCOST_DATABASE_URL": db_url, "PATH": str(tmp_path)},
    )  # fmt: skip
    assert result.exit_code == 1 and "cannot run sacct" in result.stderr


def test_typed_gres_is_counted_once_and_steps_are_skipped() -> None:
    jobs = parse_sacct(
        text=f"{HEADER}\n"
        "7|COMPLETED|1700000000|1700000060|60|cpu=1,gres/gpu=2,gres/gpu:h800=2|t\n"
        "7.0|COMPLETED|1700000000|1700000060|60|cpu=1,gres/gpu=2|t\n"
    )
    assert [(j.job_id, j.gpus, j.gpu_seconds, j.start) for j in jobs] == [
        ("7", 2, 120, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC))
    ]
