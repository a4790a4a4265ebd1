"""Writing CSV that spreadsheets cannot mistake for formulas, a chunk at a time."""

import csv
import io
from collections.abc import Iterable, Iterator, Sequence

# OWASP's list: a cell starting with one of these may be run as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CHUNK_ROWS = 1000


def text(value: str | None) -> str:
    """A text cell, neutralised the way OWASP recommends: a leading quote before a formula."""
    if not value:
        return ""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def nano(value: int | None) -> str:
    """Billionths as a plain decimal: 5328000000000000 -> `5328000`, -5 -> `-0.000000005`."""
    if value is None:
        return ""
    whole, fraction = divmod(abs(value), 1_000_000_000)
    sign = "-" if value < 0 else ""
    return f"{sign}{whole}.{fraction:09d}".rstrip("0").rstrip(".") if fraction else f"{sign}{whole}"


def micro(value: int) -> str:
    whole, fraction = divmod(value, 1_000_000)
    return f"{whole}.{fraction:06d}".rstrip("0").rstrip(".") if fraction else str(whole)


def stream_csv(header: Sequence[str], rows: Iterable[Sequence[str]]) -> Iterator[str]:
    """The header and rows as CSV text, yielded in chunks so memory stays flat."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    pending = 0
    for row in rows:
        writer.writerow(row)
        pending += 1
        if pending == CHUNK_ROWS:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue()
