"""`gpucost reconcile slurm` on both databases, from sacct output in a file: every verdict, the
exit status an operator's cron reads, the three formats, and one line for each mistake. (The
same command against a real Slurm is in test_slurm_e2e.py.)"""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli import cli
from app.cli.reconcile import DIFFERENCES_EXIT
from app.core.errors import InvalidInput
from app.reconcile.slurm import SACCT_FIELDS, parse_sacct
from tests.support import CLUSTER, entry, report

Auth = dict[str, dict[str, str]]
HEADER = "|".join(SACCT_FIELDS)
TEN = "2025-01-06T10:00:00"
PERIOD = ("--cluster", CLUSTER, "--from", "2025-01-06", "--to", "2025-01-07")


def sacct_line(job: str, state: str, start: str, end: str, elapsed: int, tres: str) -> str:
    return "|".join((job, "train", state, start, end, str(elapsed), tres))


def write_sacct(path: Path, *lines: str) -> Path:
    path.write_text("\n".join((HEADER, *lines)) + "\n")
    return path


def gpucost(url: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli, ["reconcile", "slurm", *args], env={"GPUCOST_DATABASE_URL": url}
    )
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def measured(client: TestClient, auth: Auth) -> None:
    """Jobs 100 (2 GPUs, 120 s), 101 (60 s), 102 (60 s, Slurm never heard of it), and 108
    whose usage began before the period."""
    gpus = [entry(0, job_id="100"), entry(1, job_id="100"), entry(2, job_id="101"),
            entry(3, job_id="102")]  # fmt: skip
    early = report(2, start="2025-01-05T23:59:30Z", end="2025-01-06T00:00:30Z",
                   gpus=[entry(5, job_id="108")])  # fmt: skip
    for body in (report(1, gpus=gpus), early):
        assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201


def test_every_verdict_and_the_exit_status(db_url: str, measured: None, tmp_path: Path) -> None:
    just_ended = (datetime.now(UTC) - timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%S")
    sacct = write_sacct(
        tmp_path / "sacct.txt",
        sacct_line("100", "COMPLETED", "2025-01-06T09:59:59", "2025-01-06T10:01:01", 62,
                   "billing=2,cpu=2,gres/gpu=2,gres/gpu:h800=2,node=1"),
        "100.batch|batch|COMPLETED|2025-01-06T09:59:59|2025-01-06T10:01:01|62|cpu=2,gres/gpu=2",
        sacct_line("101", "FAILED", "2025-01-06T10:00:00", "2025-01-06T10:01:40", 100,
                   "cpu=1,gres/gpu=1"),
        sacct_line("104", "CANCELLED by 0", "2025-01-06T10:50:00", "2025-01-06T11:00:00", 600,
                   "cpu=4,gres/gpu=4"),
        sacct_line("105", "RUNNING", "2025-01-06T23:00:00", "Unknown", 500, "gres/gpu=1"),
        sacct_line("106", "COMPLETED", "2025-01-06T10:00:00", "2025-01-06T10:05:00", 300,
                   "cpu=1,mem=1G,node=1"),
        sacct_line("109", "COMPLETED", "2025-01-06T23:55:00", just_ended, 300, "gres/gpu=1"),
        sacct_line("110", "CANCELLED", "None", "2025-01-06T10:00:00", 0, "gres/gpu=8"),
    )  # fmt: skip
    code, out, err = gpucost(db_url, *PERIOD, "--sacct-file", str(sacct), "--format", "json")
    assert code == DIFFERENCES_EXIT, err
    assert err.strip() == "7 jobs with GPU time, 3 beyond tolerance (15 s per GPU)"
    got = {
        line["job_id"]: (line["gpus"], line["slurm_gpu_seconds"], line["gpucost_gpu_seconds"],
                         line["busy_gpu_seconds"], line["difference"], line["verdict"])
        for line in json.loads(out)
    }  # fmt: skip
    assert got == {
        "100": (2, "124", "120", "117", "-4", "match"),
        "101": (1, "100", "60", "58.5", "-40", "differs beyond tolerance"),
        "102": (None, None, "60", "58.5", "60", "unknown to Slurm"),
        "104": (4, "2400", None, None, "-2400", "unknown to gpucost"),
        "105": (1, "500", None, None, "-500", "still running"),
        "108": (None, None, "60", "58.5", "60", "outside the period"),
        "109": (1, "300", None, None, "-300", "not yet reported"),
        # No GPU time on either side for 106 (no GPU) and 110 (never started); 100.batch
        # is a step of 100.
    }
    assert list(got) == ["100", "101", "102", "104", "105", "108", "109"]

    # A looser tolerance forgives 101 alone; the table and CSV say the same.
    code, out, _ = gpucost(db_url, *PERIOD, "--sacct-file", str(sacct), "--format", "csv",
                           "--tolerance", "40")  # fmt: skip
    assert code == DIFFERENCES_EXIT
    rows = out.splitlines()
    assert rows[0] == (
        "job,name,state,gpus,slurm_gpu_seconds,gpucost_gpu_seconds,busy_gpu_seconds,difference,verdict"
    )
    assert "101,train,FAILED,1,100,60,58.5,-40,match" in rows
    assert "104,train,CANCELLED,4,2400,,,-2400,unknown to gpucost" in rows


def test_a_clean_month_exits_zero(db_url: str, measured: None, tmp_path: Path) -> None:
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


def test_only_the_clusters_jobs_count(db_url: str, measured: None, tmp_path: Path) -> None:
    sacct = write_sacct(tmp_path / "sacct.txt")
    code, out, err = gpucost(db_url, *PERIOD[2:], "--cluster", "other", "--sacct-file", str(sacct),
                             "--format", "json")  # fmt: skip
    assert (code, json.loads(out)) == (0, [])
    code, out, _ = gpucost(db_url, *PERIOD, "--sacct-file", str(sacct),
                           "--format", "json")  # fmt: skip
    assert code == DIFFERENCES_EXIT
    assert {line["job_id"] for line in json.loads(out)} == {"100", "101", "102", "108"}


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (
            "JobIDRaw|State\n1|COMPLETED\n",
            (),
            "no JobName, Start, End, ElapsedRaw, AllocTRES column",
        ),
        ("", (), "the output is empty"),
        (
            f"{HEADER}\n1|x|COMPLETED|2025-01-06T10:00:00|soon|60|gres/gpu=1\n",
            (),
            "End 'soon' is not a time",
        ),
        (f"{HEADER}\n1|x|COMPLETED\n", (), "line 2 has 3 of 7 fields"),
        (
            f"{HEADER}\n1|x|COMPLETED|None|None|ten|gres/gpu=1\n",
            (),
            "line 2: ElapsedRaw or AllocTRES",
        ),
        (HEADER, ("--to", "2025-01-05"), "--to must be after --from"),
        (HEADER, ("--to", "yesterday"), "--to 'yesterday': not a date or time"),
    ],
)
def test_mistakes_are_one_line(
    db_url: str, tmp_path: Path, content: str, args: tuple[str, ...], message: str
) -> None:
    (tmp_path / "sacct.txt").write_text(content)
    code, out, err = gpucost(db_url, "--cluster", CLUSTER, "--from", "2025-01-06",
                             "--sacct-file", str(tmp_path / "sacct.txt"), *args)  # fmt: skip
    assert code == 1 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_missing_file_or_sacct_is_one_line(db_url: str, tmp_path: Path) -> None:
    code, _, err = gpucost(db_url, "--cluster", CLUSTER, "--from", "2025-01-06",
                           "--sacct-file", str(tmp_path / "none.txt"))  # fmt: skip
    assert code == 1 and "cannot read" in err and "No such file" in err
    result = CliRunner().invoke(
        cli, ["reconcile", "slurm", "--cluster", CLUSTER, "--from", "2025-01-06"],
        env={"GPUCOST_DATABASE_URL": db_url, "PATH": str(tmp_path)},
    )  # fmt: skip
    assert result.exit_code == 1 and "cannot run sacct" in result.stderr


def test_typed_gres_is_counted_once_and_steps_are_skipped() -> None:
    jobs = parse_sacct(
        f"{HEADER}\n"
        "7|t|COMPLETED|1700000000|1700000060|60|cpu=1,gres/gpu=2,gres/gpu:h800=2\n"
        "7.0|t|COMPLETED|1700000000|1700000060|60|cpu=1,gres/gpu=2\n"
    )
    assert [(j.job_id, j.gpus, j.gpu_seconds, j.start) for j in jobs] == [
        ("7", 2, 120, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC))
    ]
    with pytest.raises(InvalidInput):
        parse_sacct("JobIDRaw\n1\n")
