"""Writing CSV that spreadsheets cannot mistake for formulas, a chunk at a time."""

from collections.abc import Iterable, Iterator, Sequence

# OWASP's list: a cell starting with one of these may be run as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CHUNK_ROWS = 1000
_SPECIAL = (",", '"', "\r", "\n")


def text(value: str | None) -> str:
    """A text cell, neutralised the way OWASP recommends (a leading quote before a
    formula), and escaped for CSV."""
    if not value:
        return ""
    return cell("'" + value if value.startswith(FORMULA_STARTS) else value)


def fixed(value: int, places: int) -> str:
    """An integer of 10^-places as a plain decimal: (5328000000000000, 9) -> `5328000`,
    (-5, 9) -> `-0.000000005`."""
    whole, fraction = divmod(abs(value), 10**places)
    sign = "-" if value < 0 else ""
    if not fraction:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:0{places}d}".rstrip("0")


def nano(value: int | None) -> str:
    """Billionths as a plain decimal; empty for none."""
    return "" if value is None else fixed(value, 9)


def micro(value: int) -> str:
    return fixed(value, 6)


def cell(value: str) -> str:
    """One CSV field as RFC 4180 writes it: quoted only when it must be."""
    if any(c in value for c in _SPECIAL):
        return '"' + value.replace('"', '""') + '"'
    return value


def record(cells: Iterable[str]) -> str:
    """One CSV record, fields already escaped with `cell` where they may need it."""
    return ",".join(cells) + "\r\n"


def stream_csv(header: Sequence[str], lines: Iterable[str]) -> Iterator[str]:
    """The header and the rendered records, in chunks so memory stays flat."""
    yield record(cell(name) for name in header)
    batch: list[str] = []
    for rendered in lines:
        batch.append(rendered)
        if len(batch) == CHUNK_ROWS:
            yield "".join(batch)
            batch.clear()
    yield "".join(batch)
