"""The fake NVML is faithful to `pynvml` in what the collector uses of it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pynvml
import pytest

import collectors.sampling
from collectors.clock import FakeClock
from collectors.fakenvml import FakeNvml
from collectors.node_script import parse_scenario
from tests.collectors.helpers import gpu, process

FAKE_FUNCTIONS = sorted(n for n in vars(FakeNvml) if n.startswith("nvml"))


def make(scenario: dict) -> tuple[FakeNvml, FakeClock]:
    parsed = parse_scenario(scenario)
    clock = FakeClock(start_wall_ns=parsed.start_wall_ns)
    return FakeNvml(parsed, clock), clock


def test_every_nvml_call_of_the_collector_exists_in_pynvml_and_in_the_fake():
    source = Path(collectors.sampling.__file__).read_text()
    called = set(re.findall(r"nvml\.(nvml\w+)", source))
    assert called and called <= set(FAKE_FUNCTIONS)
    assert all(hasattr(pynvml, name) for name in FAKE_FUNCTIONS)


@pytest.mark.parametrize("name", FAKE_FUNCTIONS)
def test_fake_functions_take_the_real_parameters(name):
    real = list(inspect.signature(getattr(pynvml, name)).parameters)
    fake = list(inspect.signature(getattr(FakeNvml, name)).parameters)[1:]
    assert fake == real


def test_fake_returns_the_real_types_and_raises_the_real_errors():
    nvml, clock = make(
        {
            "gpus": [
                gpu(0, util=[{"at": 0, "value": 55}], lost_at=30),
                gpu(1, mig=[{"uuid": "MIG-x", "gi_slices": 3, "ci_slices": 2}]),
            ],
            "processes": [process(7, 0, used_memory=123), process(8, 1, mig="MIG-x")],
        }
    )
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetCount()
    nvml.nvmlInit()
    assert nvml.nvmlDeviceGetCount() == 2
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    assert isinstance(nvml.nvmlDeviceGetUUID(handle), str)
    assert nvml.nvmlDeviceGetName(handle) == "NVIDIA H800"
    rates = nvml.nvmlDeviceGetUtilizationRates(handle)
    assert isinstance(rates, pynvml.c_nvmlUtilization_t) and rates.gpu == 55
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    assert isinstance(memory, pynvml.c_nvmlMemory_t) and memory.used == 123
    [proc] = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
    assert isinstance(proc, pynvml.nvmlFriendlyObject)
    assert (proc.pid, proc.usedGpuMemory) == (7, 123)
    assert nvml.nvmlDeviceGetMigMode(handle) == [0, 0]

    parent = nvml.nvmlDeviceGetHandleByIndex(1)
    assert nvml.nvmlDeviceGetMigMode(parent) == [1, 1]
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nvml.nvmlDeviceGetUtilizationRates(parent)
    mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, 0)
    assert nvml.nvmlDeviceGetUUID(mig) == "MIG-x"
    attributes = nvml.nvmlDeviceGetAttributes(mig)
    assert isinstance(attributes, pynvml.c_nvmlDeviceAttributes)
    assert attributes.computeInstanceSliceCount == 2
    with pytest.raises(pynvml.NVMLError_NotFound):
        nvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, 1)
    assert [p.pid for p in nvml.nvmlDeviceGetComputeRunningProcesses(mig)] == [8]

    clock.advance(30)
    with pytest.raises(pynvml.NVMLError_GpuIsLost) as lost:
        nvml.nvmlDeviceGetMemoryInfo(handle)
    assert lost.value.value == pynvml.NVML_ERROR_GPU_IS_LOST
    assert nvml.NVMLError_GpuIsLost is pynvml.NVMLError_GpuIsLost
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetMemoryInfo(object())


def test_energy_counter_integrates_power_and_restarts_at_a_reset():
    nvml, clock = make(
        {
            "gpus": [
                gpu(
                    0,
                    power_mw=[{"at": 0, "value": 100_000}, {"at": 10, "value": 300_000}],
                    energy_start_mj=7,
                    energy_resets=[40],
                )
            ]
        }
    )
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    readings = []
    for _ in range(6):
        readings.append(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        clock.advance(10)
    assert readings == [7, 7 + 1_000_000, 7 + 4_000_000, 7 + 7_000_000, 0, 3_000_000]


def test_init_errors_are_the_real_ones():
    nvml, _ = make({"init_error": "library_not_found"})
    with pytest.raises(pynvml.NVMLError_LibraryNotFound):
        nvml.nvmlInit()
