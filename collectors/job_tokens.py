"""Setting the tokens a job processed (`gpucost-collector job-tokens`), as the node's collector.

The count goes as `PUT /v1/jobs/{cluster}/{job}` with `tokens` alone: the service sets the
fields given and keeps the others, so the model, phase, team and labels that the collector or
an admin set stay as they are. A job the service does not know yet is created: the epilog
that sends a job's count usually runs before the collector's last report of the job arrives.
The count replaces the job's count (a PUT: sending it twice stores it once), so a job
requeued under the same id reports its whole work across its runs, as docs/slurm.md says.

Retries follow the sender's: a connection that fails, a timeout, a 5xx, 408, 425 or 429 is
tried again after the same back-off (1 s doubling, with jitter), until a deadline. A refusal
(a bad token, a job id or count the service rejects, a wrong URL) is final at once: nobody
is waiting on a node to fix it, and the epilog must not hold the node.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from collectors.attribution import JOB_ID
from collectors.clock import NS_PER_S, Clock
from collectors.sender import Backoff, transient

# The service's bound on a job's count (app/jobs/schemas.py); checked here too, so that a
# mistake is named before anything is sent.
MAX_TOKENS = 10**18
_DIGITS = re.compile(r"[0-9]+")


class TokensError(Exception):
    """Why a count was not stored, as one line."""


def parse_tokens(text: str) -> int:
    """A count as a job reports it: plain digits, 0 to 10^18."""
    if not _DIGITS.fullmatch(text):
        raise TokensError(
            f"--tokens: {text!r} is not a whole number of tokens written in plain digits"
        )
    # Python refuses to convert more than 4300 digits (a traceback): a count that long is
    # out of bounds whatever its digits, and is named by its length.
    significant = text.lstrip("0")
    if len(significant) > len(str(MAX_TOKENS)):
        raise TokensError(f"--tokens: a {len(significant)}-digit number is more than 10^18")
    count = int(text)
    if count > MAX_TOKENS:
        raise TokensError(f"--tokens: {count} is more than {MAX_TOKENS} (10^18)")
    return count


def check_job_id(job_id: str) -> str:
    """A scheduler job id as the collector reports one (letters, digits, `._:@+-`)."""
    if not JOB_ID.fullmatch(job_id):
        raise TokensError(
            f"--job: {job_id!r} is not a job id (letters, digits and ._:@+-, at most 128)"
        )
    return job_id


@dataclass(frozen=True)
class Stored:
    """What the service answered: the job's count as stored, and whether the job is new."""

    tokens: str
    created: bool


def _detail(response: httpx.Response) -> str:
    """The service's `detail`, or the start of whatever else answered (a proxy's page)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    text = str(body["detail"]) if isinstance(body, dict) and body.get("detail") else response.text
    # One line, whatever answered: the epilog logs it, and keeps only the last line.
    return " ".join(text.split())[:200] or response.reason_phrase


def put_tokens(
    *,
    client: httpx.Client,
    server: str,
    token: str,
    cluster: str,
    job_id: str,
    tokens: int,
    clock: Clock,
    backoff: Backoff,
    give_up_after: float,
    http_timeout: float,
) -> Stored:
    """Store the job's count, retrying what may pass until `give_up_after` seconds."""
    url = f"{server.rstrip('/')}/v1/jobs/{quote(cluster, safe='')}/{quote(job_id, safe='')}"
    headers = {"Authorization": f"Bearer {token}"}
    deadline = clock.monotonic_ns() + int(give_up_after * NS_PER_S)
    never = threading.Event()
    while True:
        left = (deadline - clock.monotonic_ns()) / NS_PER_S
        try:
            response = client.put(
                url,
                json={"tokens": tokens},
                headers=headers,
                timeout=max(0.1, min(http_timeout, left)),
            )
        except httpx.HTTPError as error:
            why = f"cannot reach {server}: {str(error) or type(error).__name__}"
        else:
            if response.is_success:
                try:
                    stored = response.json()["tokens"]
                except (ValueError, KeyError, TypeError):
                    why = f"unreadable answer from {server}: {_detail(response)}"
                    raise TokensError(why) from None
                # A 2xx from something else than the service (a proxy's page, an old
                # service without tokens) is not a stored count.
                if str(stored) != str(tokens):
                    held = " ".join(str(stored).split())[:40]
                    raise TokensError(
                        f"the service answered {response.status_code} but holds {held} "
                        f"tokens for job {job_id}, not {tokens}"
                    )
                return Stored(tokens=str(stored), created=response.status_code == 201)
            why = f"the service answered {response.status_code}: {_detail(response)}"
            if not transient(response.status_code):
                raise TokensError(why)
        delay = backoff.next_delay()
        if clock.monotonic_ns() + int(delay * NS_PER_S) >= deadline:
            raise TokensError(f"{why} (gave up after {backoff.failures} tries)")
        clock.wait(delay, never)
