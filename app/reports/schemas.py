"""The collector report contract (`POST /v1/reports`), validated at the edge."""

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, NotRequired

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from typing_extensions import TypedDict

from app.core.errors import PRINTABLE
from app.core.labels import GPU_UUID_PATTERN, JOB_ID_PATTERN, NAME_PATTERN, WHOLE_GPU_UUID_PATTERN
from app.core.numbers import Number
from app.core.once import once
from app.core.timestamps import UtcInstant
from app.reports._entries import Entry, canonical_order, in_units

# Hard ceiling for the schema; the configured, lower limit is checked by the service.
SCHEMA_MAX_ENTRIES = 100_000
ABSENT_IS_ZERO = "0 when absent."

Name = Annotated[str, Field(min_length=1, max_length=128, pattern=NAME_PATTERN)]
JobId = Annotated[str, Field(min_length=1, max_length=128, pattern=JOB_ID_PATTERN)]


# A TypedDict, not a model: a batch carries thousands of entries, each validated into a plain
# dict at a third of the cost of a model instance.
class GpuUsageIn(TypedDict):
    """One GPU's usage for one job (`job_id` null: idle) over the report's interval."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    uuid: Annotated[
        str, Field(pattern=GPU_UUID_PATTERN, examples=["GPU-5f3a2c1e-0b7d-4e8a-9c6f-1d2e3f4a5b6c"])
    ]
    # A MIG device names the GPU it is carved from; its time is that GPU's (see checks).
    parent_uuid: NotRequired[
        Annotated[
            str,
            Field(
                pattern=WHOLE_GPU_UUID_PATTERN,
                description="Required for a `MIG-` device: the UUID of its GPU.",
            ),
        ]
    ]
    index: Annotated[int, Field(ge=0, le=1023, strict=True)]
    model: Annotated[
        str, Field(min_length=1, max_length=128, pattern=PRINTABLE, examples=["NVIDIA H800"])
    ]
    job_id: JobId | None
    gpu_seconds: Annotated[Decimal, Field(ge=0, le=10**7, allow_inf_nan=False), Number]
    util_pct: NotRequired[
        Annotated[
            Decimal, Field(ge=0, le=100, allow_inf_nan=False, description=ABSENT_IS_ZERO), Number
        ]
    ]
    energy_j: NotRequired[
        Annotated[
            Decimal,
            Field(ge=0, le=10**12, allow_inf_nan=False, description=ABSENT_IS_ZERO),
            Number,
        ]
    ]
    mem_peak_bytes: NotRequired[
        Annotated[int, Field(ge=0, le=2**53, strict=True, description=ABSENT_IS_ZERO)]
    ]


class ReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid", ignored_types=(once,))

    cluster: Name
    node: Name
    # JSON integers only: `true`, `"7"`, `7.0` are refused.
    seq: Annotated[int, Field(ge=0, le=2**63 - 1, strict=True)]
    start: UtcInstant
    end: UtcInstant
    gpus: Annotated[list[GpuUsageIn], Field(max_length=SCHEMA_MAX_ENTRIES)]

    @field_validator("gpus")
    @classmethod
    def _canonical_uuids(cls, gpus: list[GpuUsageIn]) -> list[GpuUsageIn]:
        # NVML prints lower-case hex; one spelling per GPU keeps one row per GPU.
        for gpu in gpus:
            uuid = gpu["uuid"]
            gpu["uuid"] = uuid[:4] + uuid[4:].lower()
            parent = gpu.get("parent_uuid")
            if parent is not None:
                gpu["parent_uuid"] = parent[:4] + parent[4:].lower()
        return gpus

    @field_validator("end")
    @classmethod
    def _after_start(cls, value: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("start")
        if start is not None and value <= start:
            raise ValueError("end must be after start")
        return value

    # Worked out once, on first use: checks and storing read them.
    @once
    def units(self) -> list[Entry]:
        """The entries in exact integer units, in the report's order."""
        return in_units(self)

    @once
    def entries(self) -> list[Entry]:
        """The entries in exact integer units, in a canonical order."""
        return sorted(self.units, key=canonical_order)

    @once
    def parents(self) -> dict[str, str]:
        """Each MIG device's GPU, by UUID."""
        return {g["uuid"]: g["parent_uuid"] for g in self.gpus if "parent_uuid" in g}


class BatchIn(BaseModel):
    # Each report is validated on its own, so that one bad report rejects only itself.
    reports: Annotated[list[dict[str, Any]], Field(min_length=1)]


class ValidBatchIn(BaseModel):
    """A batch whose reports are all valid, read in one pass from its JSON."""

    reports: Annotated[list[ReportIn], Field(min_length=1)]


_COMPONENT = "#/components/schemas/{model}"


def _schemas(model: type[BaseModel]) -> dict[str, Any]:
    """The model's schema and those it refers to, by name, as the API document's components."""
    schema = model.model_json_schema(ref_template=_COMPONENT)
    return {model.__name__: schema, **schema.pop("$defs", {})}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


# Both routes read their bodies themselves (see app.core.numbers.read_body), so they are
# documented here: a report as the `ReportIn` component (added by `BODY_SCHEMAS`), a batch as
# BatchIn inlined (it has no nested model, so its schema has no references to resolve).
REPORT_REQUEST_BODY = _body({"$ref": _COMPONENT.format(model=ReportIn.__name__)})
BATCH_REQUEST_BODY = _body(BatchIn.model_json_schema())
BODY_SCHEMAS = _schemas(ReportIn)


class ReportOutcome(BaseModel):
    status: Literal["accepted", "duplicate"]
    duplicate: bool
    cluster: str
    node: str
    seq: int
    report_id: int


class BatchItemOut(BaseModel):
    index: int
    seq: int | None
    status: Literal["accepted", "duplicate", "rejected"]
    http_status: int
    report_id: int | None = None
    error: dict[str, Any] | None = None


class BatchOut(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[BatchItemOut]
