"""NVML sampling: GPU inventory at start, then one reading per GPU per sample.

`nvml` is the `pynvml` module or anything with the same functions (`FakeNvml`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

from collectors.clock import Clock
from collectors.metrics import CollectorMetrics

logger = logging.getLogger(__name__)

# Compute slices of a whole GPU in MIG mode: 7 on A100/H100/H800/H200, 4 on A30.
_SLICES_BY_MODEL = {"A30": 4}
DEFAULT_MIG_SLICES = 7


@dataclass(frozen=True)
class UnitReading:
    """Something a job can hold: a whole GPU, a MIG device, or a MIG GPU's unpartitioned rest."""

    key: str | None
    fraction: Fraction
    pids: tuple[tuple[int, int | None], ...]
    mem_used_bytes: int


@dataclass(frozen=True)
class GpuReading:
    uuid: str
    index: int
    model: str
    util_pct: int
    mem_used_bytes: int
    energy_mj: int | None
    power_mw: int | None
    units: tuple[UnitReading, ...]


@dataclass(frozen=True)
class Sample:
    mono_ns: int
    wall_ns: int
    gpus: tuple[GpuReading, ...]


@dataclass
class _Device:
    index: int
    handle: Any
    uuid: str
    model: str


def mig_total_slices(model: str) -> int:
    """Compute slices of a whole GPU of this model (the denominator of a MIG fraction)."""
    for marker, slices in _SLICES_BY_MODEL.items():
        if marker in model.split():
            return slices
    return DEFAULT_MIG_SLICES


class Sampler:
    """Reads every GPU; a lost GPU is logged once, counted, and left out from then on."""

    def __init__(self, *, nvml: Any, clock: Clock, metrics: CollectorMetrics) -> None:
        self._nvml = nvml
        self.nvml_error: type[Exception] = nvml.NVMLError
        self._clock = clock
        self._metrics = metrics
        self._devices: list[_Device] = []
        self._previous: dict[int, GpuReading] = {}
        self._warned: set[str] = set()

    def start(self) -> None:
        """nvmlInit and the inventory; NVML errors here propagate to the caller."""
        nvml = self._nvml
        nvml.nvmlInit()
        for index in range(nvml.nvmlDeviceGetCount()):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                device = _Device(
                    index, handle, nvml.nvmlDeviceGetUUID(handle), nvml.nvmlDeviceGetName(handle)
                )
            except nvml.NVMLError as error:
                self._lose(index, f"GPU index {index}", error)
                continue
            self._devices.append(device)
        self._metrics.gpus.set(len(self._devices))

    def shutdown(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError:
            pass

    def _lose(self, index: int, name: str, error: Exception) -> None:
        logger.error("%s is lost (%s); it is reported missing from now on", name, error)
        self._metrics.nvml_errors.labels(error=type(error).__name__).inc()
        self._metrics.gpus_lost.inc()

    def sample(self) -> Sample:
        """One reading of every GPU still present."""
        mono_ns, wall_ns = self._clock.monotonic_ns(), self._clock.wall_ns()
        readings = []
        for device in list(self._devices):
            try:
                reading = self._read(device)
            except self._nvml.NVMLError_GpuIsLost as error:
                self._devices.remove(device)
                self._previous.pop(device.index, None)
                self._lose(device.index, f"GPU {device.index} {device.uuid}", error)
                continue
            except self._nvml.NVMLError as error:
                # A transient failure: carry the last reading, without an energy counter.
                self._metrics.nvml_errors.labels(error=type(error).__name__).inc()
                logger.warning(
                    "GPU %s: NVML error %s; reusing its last reading", device.uuid, error
                )
                previous = self._previous.get(device.index)
                if previous is None:
                    continue
                reading = replace(previous, energy_mj=None)
            self._previous[device.index] = reading
            readings.append(reading)
        self._metrics.samples.inc()
        return Sample(mono_ns, wall_ns, tuple(readings))

    def _optional(self, call: Any, handle: Any) -> Any:
        """A reading that may fail without the GPU's time going unreported: None then.

        Unsupported here (old driver, MIG, container) is expected and silent; any other error
        but a lost GPU is counted, and logged once per call.
        """
        nvml = self._nvml
        try:
            return call(handle)
        except (nvml.NVMLError_GpuIsLost, nvml.NVMLError_Uninitialized):
            raise
        except (nvml.NVMLError_NotSupported, nvml.NVMLError_FunctionNotFound):
            return None
        except nvml.NVMLError as error:
            self._metrics.nvml_errors.labels(error=type(error).__name__).inc()
            if call.__name__ not in self._warned:
                self._warned.add(call.__name__)
                logger.warning("%s failed: %s; reading it as unknown", call.__name__, error)
            return None

    def _read(self, device: _Device) -> GpuReading:
        nvml, handle = self._nvml, device.handle
        # GPUs without MIG support (L40S, V100, ...) answer NOT_SUPPORTED: not in MIG mode.
        mig_mode = self._optional(nvml.nvmlDeviceGetMigMode, handle)
        mig_enabled = mig_mode is not None and mig_mode[0] == nvml.NVML_DEVICE_MIG_ENABLE
        rates = self._optional(nvml.nvmlDeviceGetUtilizationRates, handle)
        memory = self._optional(nvml.nvmlDeviceGetMemoryInfo, handle)
        mem_used = 0 if memory is None else int(memory.used)
        energy = self._optional(nvml.nvmlDeviceGetTotalEnergyConsumption, handle)
        power = self._optional(nvml.nvmlDeviceGetPowerUsage, handle)
        if mig_enabled:
            units = self._mig_units(device)
        else:
            units = (UnitReading(device.uuid, Fraction(1), self._pids(handle), mem_used),)
        return GpuReading(
            uuid=device.uuid,
            index=device.index,
            model=device.model,
            util_pct=0 if rates is None else int(rates.gpu),
            mem_used_bytes=mem_used,
            energy_mj=None if energy is None else int(energy),
            power_mw=None if power is None else int(power),
            units=units,
        )

    def _pids(self, handle: Any) -> tuple[tuple[int, int | None], ...]:
        processes = self._optional(self._nvml.nvmlDeviceGetComputeRunningProcesses, handle)
        return tuple((int(p.pid), p.usedGpuMemory) for p in processes or ())

    def _mig_units(self, device: _Device) -> tuple[UnitReading, ...]:
        nvml = self._nvml
        found = []
        for slot in range(nvml.nvmlDeviceGetMaxMigDeviceCount(device.handle)):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(device.handle, slot)
            except nvml.NVMLError_NotFound:
                continue
            slices = int(nvml.nvmlDeviceGetAttributes(mig).computeInstanceSliceCount)
            memory = self._optional(nvml.nvmlDeviceGetMemoryInfo, mig)
            found.append((nvml.nvmlDeviceGetUUID(mig), slices, mig, getattr(memory, "used", 0)))
        # Never more than the whole GPU, even on a model missing from the slice table.
        total = max(mig_total_slices(device.model), sum(f[1] for f in found))
        units = [
            UnitReading(uuid, Fraction(slices, total), self._pids(mig), int(used))
            for uuid, slices, mig, used in found
        ]
        rest = 1 - sum((u.fraction for u in units), Fraction(0))
        if rest > 0:
            units.append(UnitReading(None, rest, (), 0))
        return tuple(units)
