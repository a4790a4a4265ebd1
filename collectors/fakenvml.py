"""A faithful fake of the `pynvml` functions the collector calls, driven by a `Scenario`.

Same function names and signatures as `pynvml` (nvidia-ml-py), the same return types (the
real ctypes structures, `nvmlFriendlyObject` process entries, `str` names and UUIDs) and the
real `NVMLError` classes, so the collector's code runs on it unchanged. Selected by
configuration (`--nvml fake:SCENARIO`), never by editing code.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import pynvml

from collectors.clock import NS_PER_S, Clock
from collectors.node_script import GpuSpec, MigSpec, Scenario

_INIT_ERRORS = {
    "library_not_found": pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
    "driver_not_loaded": pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
    "no_permission": pynvml.NVML_ERROR_NO_PERMISSION,
}
_NO_INSTANCE = 0xFFFFFFFF


@dataclass(frozen=True)
class FakeDeviceHandle:
    """Stands for `c_nvmlDevice_t`: a whole GPU, or one MIG device of it."""

    index: int
    mig_uuid: str | None = None


class FakeNvml:
    """Module-like object: `FakeNvml(scenario, clock).nvmlDeviceGetCount()` and so on."""

    def __init__(self, scenario: Scenario, clock: Clock, *, origin_ns: int = 0) -> None:
        """Scenario time 0 is `origin_ns` on the clock's monotonic time."""
        self._scenario = scenario
        self._clock = clock
        self._origin_ns = origin_ns
        self._initialized = 0

    # -- helpers ---------------------------------------------------------------------------
    def _now(self) -> Fraction:
        return Fraction(self._clock.monotonic_ns() - self._origin_ns, NS_PER_S)

    def _check_init(self) -> None:
        if self._initialized <= 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle: Any) -> GpuSpec:
        self._check_init()
        if not isinstance(handle, FakeDeviceHandle):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self._scenario.gpus[handle.index]
        if gpu.lost_at is not None and self._now() >= gpu.lost_at:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return gpu

    def _mig(self, handle: FakeDeviceHandle) -> MigSpec:
        gpu = self._gpu(handle)
        for instance in gpu.mig or ():
            if instance.uuid == handle.mig_uuid:
                return instance
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def _whole_gpu(self, handle: Any) -> GpuSpec:
        """Calls that MIG device handles do not support."""
        gpu = self._gpu(handle)
        if handle.mig_uuid is not None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def _processes(self, handle: FakeDeviceHandle) -> list[Any]:
        gpu = self._gpu(handle)
        now = self._now()
        slot = {m.uuid: i for i, m in enumerate(gpu.mig or ())}
        return [
            p
            for p in self._scenario.processes
            if p.gpu == gpu.index
            and p.alive(now)
            and (handle.mig_uuid is None or p.mig == handle.mig_uuid)
            and (gpu.mig is None or p.mig in slot)
        ]

    # -- the pynvml API --------------------------------------------------------------------
    def nvmlInit(self) -> None:
        if self._scenario.init_error is not None:
            raise pynvml.NVMLError(_INIT_ERRORS[self._scenario.init_error])
        self._initialized += 1

    def nvmlShutdown(self) -> None:
        self._check_init()
        self._initialized -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check_init()
        return "550.90.07"

    def nvmlDeviceGetCount(self) -> int:
        self._check_init()
        return len(self._scenario.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDeviceHandle:
        self._check_init()
        if not 0 <= index < len(self._scenario.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        handle = FakeDeviceHandle(index)
        self._gpu(handle)
        return handle

    def nvmlDeviceGetUUID(self, handle: FakeDeviceHandle) -> str:
        if handle.mig_uuid is not None:
            return self._mig(handle).uuid
        return self._gpu(handle).uuid

    def nvmlDeviceGetName(self, handle: FakeDeviceHandle) -> str:
        gpu = self._gpu(handle)
        if handle.mig_uuid is not None:
            mig = self._mig(handle)
            return f"{gpu.name} MIG {mig.gi_slices}g.{mig.memory_total // 1024**3}gb"
        return gpu.name

    def nvmlDeviceGetIndex(self, handle: FakeDeviceHandle) -> int:
        return self._whole_gpu(handle).index

    def nvmlDeviceGetMigMode(self, device: FakeDeviceHandle) -> list[int]:
        gpu = self._whole_gpu(device)
        mode = pynvml.NVML_DEVICE_MIG_DISABLE if gpu.mig is None else pynvml.NVML_DEVICE_MIG_ENABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, device: FakeDeviceHandle) -> int:
        return 0 if self._whole_gpu(device).mig is None else 7

    def nvmlDeviceGetMigDeviceHandleByIndex(
        self, device: FakeDeviceHandle, index: int
    ) -> FakeDeviceHandle:
        gpu = self._whole_gpu(device)
        instances = gpu.mig or ()
        if not 0 <= index < len(instances):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return FakeDeviceHandle(gpu.index, instances[index].uuid)

    def nvmlDeviceIsMigDeviceHandle(self, device: FakeDeviceHandle) -> ctypes.c_uint:
        self._gpu(device)
        return ctypes.c_uint(int(device.mig_uuid is not None))  # pynvml returns the c_uint

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(
        self, migDevice: FakeDeviceHandle
    ) -> FakeDeviceHandle:
        self._mig(migDevice)
        return FakeDeviceHandle(migDevice.index)

    def nvmlDeviceGetAttributes(self, device: FakeDeviceHandle) -> pynvml.c_nvmlDeviceAttributes:
        if device.mig_uuid is None:
            self._gpu(device)
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        mig = self._mig(device)
        attributes = pynvml.c_nvmlDeviceAttributes()
        attributes.gpuInstanceSliceCount = mig.gi_slices
        attributes.computeInstanceSliceCount = mig.ci_slices
        attributes.multiprocessorCount = 16 * mig.ci_slices
        attributes.memorySizeMB = mig.memory_total // 1024**2
        return attributes

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeDeviceHandle) -> list[Any]:
        gpu = self._gpu(handle)
        slot = {m.uuid: i for i, m in enumerate(gpu.mig or ())}
        return [
            pynvml.nvmlFriendlyObject(
                {
                    "pid": p.pid,
                    "usedGpuMemory": p.used_memory,
                    "gpuInstanceId": _NO_INSTANCE if p.mig is None else slot[p.mig],
                    "computeInstanceId": _NO_INSTANCE if p.mig is None else 0,
                }
            )
            for p in self._processes(handle)
        ]

    def nvmlDeviceGetUtilizationRates(self, handle: FakeDeviceHandle) -> pynvml.c_nvmlUtilization_t:
        gpu = self._whole_gpu(handle)
        if gpu.mig is not None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        rates = pynvml.c_nvmlUtilization_t()
        rates.gpu = gpu.util.at(self._now())
        rates.memory = rates.gpu // 2
        return rates

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDeviceHandle, version: Any = None) -> Any:
        gpu = self._gpu(handle)
        memory = pynvml.c_nvmlMemory_t()
        used = sum(p.used_memory for p in self._processes(handle))
        if handle.mig_uuid is None:
            memory.total = gpu.memory_total
            used += gpu.mem_used.at(self._now())
        else:
            memory.total = self._mig(handle).memory_total
        memory.used = min(used, memory.total)
        memory.free = memory.total - memory.used
        return memory

    def nvmlDeviceGetPowerUsage(self, handle: FakeDeviceHandle) -> int:
        return self._whole_gpu(handle).power_mw.at(self._now())

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeDeviceHandle) -> int:
        gpu = self._whole_gpu(handle)
        if not gpu.energy_supported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu.energy_mj(self._now())


def _with_faults(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: FakeNvml, handle: Any, *args: Any, **kwargs: Any) -> Any:
        self._check_init()
        if isinstance(handle, FakeDeviceHandle) and handle.index < len(self._scenario.gpus):
            now = self._now()
            for fault in self._scenario.gpus[handle.index].faults:
                if fault.active(name, now):
                    raise pynvml.NVMLError(getattr(pynvml, fault.error))
        return method(self, handle, *args, **kwargs)

    return call


# Scripted faults apply to every per-device call.
for _name, _method in list(vars(FakeNvml).items()):
    if _name.startswith("nvmlDevice") and _name not in ("nvmlDeviceGetCount",):
        setattr(FakeNvml, _name, _with_faults(_name, _method))

# The real error classes and constants, so `nvml.NVMLError_GPUIsLost` works on either module.
for _name in dir(pynvml):
    if _name.startswith(("NVMLError", "NVML_")):
        setattr(FakeNvml, _name, getattr(pynvml, _name))
