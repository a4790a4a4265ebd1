"""Writing rows as Parquet a row group at a time, so memory stays flat however long the file.

Columns are typed from `(name, type)` pairs as the FOCUS rows declare them: exact decimals
(`decimal128`, never a float), instants (`timestamp[ms, UTC]`), and strings. Text is written as
it is: Parquet has no formulas to guard against.
"""

import io
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# Rows a row group holds, and the server holds while writing one.
ROW_GROUP_ROWS = 10_000
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_UTC_MILLIS = pa.timestamp("ms", tz="UTC")  # what Parquet keeps of whole seconds


def _arrow_type(kind: str) -> pa.DataType:
    if kind.startswith("decimal:"):
        return pa.decimal128(38, int(kind.split(":")[1]))
    return _UTC_MILLIS if kind == "time" else pa.string()


def _array(values: Sequence[str | None], kind: str) -> pa.Array:
    strings = pa.array(values, pa.string())
    if kind == "time":
        return pc.strptime(strings, format=_TIME_FORMAT, unit="s").cast(_UTC_MILLIS)
    return strings.cast(_arrow_type(kind))  # decimals read from their exact text


class _Chunks(io.RawIOBase):
    """A write-only file whose bytes are taken out as they come."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._parts.append(bytes(data))
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def take(self) -> bytes:
        taken, self._parts = b"".join(self._parts), []
        return taken


def stream_parquet(
    fields: Sequence[tuple[str, str]], rows: Iterable[Sequence[str | None]]
) -> Iterator[bytes]:
    """A Parquet file of `rows` (values as text, None for null), in chunks of a row group."""
    schema = pa.schema([pa.field(name, _arrow_type(kind)) for name, kind in fields])
    kinds = [kind for _, kind in fields]
    sink = _Chunks()
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        remaining = iter(rows)
        while group := list(islice(remaining, ROW_GROUP_ROWS)):
            columns = zip(*group, strict=True)
            arrays = [_array(values, kind) for values, kind in zip(columns, kinds, strict=True)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            yield sink.take()
    yield sink.take()
