"""The NVML sampler: the no-GPU path as it is on this machine, and its aggregation against a scripted NVML."""

import types

import pytest

from bench import gpu


class FakeNVML:
    """Scripted stand-in for pynvml: utilisation, memory and power follow given sequences."""

    class NVMLError(Exception):
        pass

    def __init__(self, util, mem_mib, power_w, energy_mj_step=500, energy=True, count=1):
        self.util, self.mem, self.power = list(util), list(mem_mib), list(power_w)
        self.energy_mj = 0
        self.energy_step = energy_mj_step
        self.energy = energy
        self.count = count
        self.reads = 0

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i):
        return f"handle{i}"

    def nvmlDeviceGetName(self, h):
        return b"Fake GPU 80GB"

    def _next(self, seq):
        return seq[min(self.reads, len(seq) - 1)]

    def nvmlDeviceGetUtilizationRates(self, h):
        return types.SimpleNamespace(gpu=self._next(self.util), memory=0)

    def nvmlDeviceGetMemoryInfo(self, h):
        return types.SimpleNamespace(used=self._next(self.mem) * 2**20, total=81920 * 2**20)

    def nvmlDeviceGetPowerUsage(self, h):
        value = self._next(self.power) * 1000
        self.reads += 1
        return value

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if not self.energy:
            raise self.NVMLError("Not Supported")
        self.energy_mj += self.energy_step
        return self.energy_mj

    def nvmlDeviceGetCudaComputeCapability(self, h):
        return (9, 0)

    def nvmlSystemGetDriverVersion(self):
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self):
        return 12040


def test_no_gpu_here_is_a_result_with_a_reason():
    sampler = gpu.GpuSampler()
    if sampler.available:
        pytest.skip("this machine has an NVIDIA GPU: the no-GPU path is not what it shows")
    with sampler:
        sampler.start_epoch()
        sampler.end_epoch()
    summary = sampler.summary()
    assert summary["available"] is False and summary["samples_per_epoch"] == []
    assert isinstance(summary["reason"], str) and summary["reason"]
    assert all(summary[k] is None for k in ("util_mean_pct", "util_max_pct", "memory_used_max_mib",
                                            "power_mean_w", "energy_j"))
    ident = gpu.describe_gpus()
    assert ident["available"] is False and ident["count"] == 0 and ident["reason"]


def test_no_device_reported_by_nvml():
    sampler = gpu.GpuSampler(nvml=FakeNVML([0], [0], [0], count=0))
    assert not sampler.available
    assert sampler.summary()["reason"] == "NVML found no NVIDIA GPU"


def test_aggregation_of_samples_and_energy():
    nvml = FakeNVML(util=[50, 100, 90, 40], mem_mib=[1000, 3000, 2000, 1500], power_w=[100, 300, 200, 200])
    sampler = gpu.GpuSampler(nvml=nvml)
    sampler.start_epoch()
    for _ in range(4):  # what the background thread does each interval, driven by hand: no sleeping
        sampler.sample_once()
    sampler.end_epoch()
    s = sampler.summary()
    assert s["available"] is True and s["name"] == "Fake GPU 80GB" and s["samples"] == 4
    assert s["samples_per_epoch"] == [4]
    assert s["util_mean_pct"] == 70.0 and s["util_max_pct"] == 100.0
    assert s["memory_used_max_mib"] == 3000.0
    assert s["power_mean_w"] == 200.0
    assert s["energy_j"] == 0.5 and s["energy_source"] == "counter"  # the counter moved 500 mJ across the epoch
    assert "fewer than 10 samples" in s["reason"]


def test_the_compile_epoch_is_not_sampled_and_energy_is_the_counter_difference():
    nvml = FakeNVML(util=[90], mem_mib=[100], power_w=[250], energy_mj_step=700)
    sampler = gpu.GpuSampler(nvml=nvml)
    sampler.start_epoch(steady=False)  # the first epoch: tracing and compilation
    assert sampler.active is False and nvml.energy_mj == 0  # not sampled, the counter not even read
    sampler.end_epoch()
    for _ in range(2):
        sampler.start_epoch()
        for _ in range(12):
            sampler.sample_once()
        sampler.end_epoch()
    s = sampler.summary()
    # two steady epochs, each read at its start and end: 700 mJ apart, summed
    assert s["samples_per_epoch"] == [12, 12] and s["samples"] == 24 and nvml.energy_mj == 4 * 700
    assert s["energy_j"] == 1.4 and s["energy_per_epoch_j"] == 0.7 and s["reason"] is None


def test_energy_without_the_counter_is_integrated_power(monkeypatch):
    clock = iter([10.0, 12.0])  # one steady epoch of 2 s
    monkeypatch.setattr(gpu.time, "perf_counter", lambda: next(clock))
    sampler = gpu.GpuSampler(nvml=FakeNVML([10], [10], [150, 250], energy=False))
    sampler.start_epoch()
    sampler.sample_once()
    sampler.sample_once()
    sampler.end_epoch()
    s = sampler.summary()
    assert s["energy_source"] == "integrated power" and s["energy_j"] == 400.0  # 200 W x 2 s


def test_the_interval_follows_the_epoch_length(monkeypatch):
    clock = iter([0.0, 0.024, 1.0, 2.2])
    monkeypatch.setattr(gpu.time, "perf_counter", lambda: next(clock))
    sampler = gpu.GpuSampler(nvml=FakeNVML([10], [10], [10]))
    assert sampler.interval_s == gpu.GpuSampler.MIN_INTERVAL_S  # before any steady epoch: as often as allowed
    sampler.start_epoch()
    sampler.end_epoch()  # 24 ms: 12 intervals of 2 ms
    assert sampler.interval_s == pytest.approx(0.002)
    sampler.start_epoch()
    sampler.end_epoch()  # 1.2 s: capped at 50 ms
    assert sampler.interval_s == gpu.GpuSampler.MAX_INTERVAL_S


def test_background_thread_samples_only_while_active():
    import time

    nvml = FakeNVML(util=[80], mem_mib=[100], power_w=[50])
    with gpu.GpuSampler(interval_s=0.002, nvml=nvml) as sampler:
        time.sleep(0.05)  # inactive: nothing kept
        assert sampler.summary()["samples"] == 0
        sampler.start_epoch()
        time.sleep(0.05)
        sampler.end_epoch()
    s = sampler.summary()
    assert s["samples"] > 0 and s["util_mean_pct"] == 80.0 and s["power_mean_w"] == 50.0


def test_energy_counter_unsupported_and_no_sample_leaves_null():
    sampler = gpu.GpuSampler(nvml=FakeNVML([10], [10], [10], energy=False))
    sampler.start_epoch()
    sampler.end_epoch()
    s = sampler.summary()
    assert s["energy_j"] is None and s["energy_source"] is None and s["samples_per_epoch"] == [0]


def test_describe_gpus_with_nvml():
    ident = gpu.describe_gpus(FakeNVML([0], [0], [0], count=2))
    assert ident["available"] is True and ident["count"] == 2
    assert ident["name"] == "Fake GPU 80GB" and ident["devices"][1]["memory_total_mib"] == 81920
    assert ident["driver_version"] == "550.54.15" and ident["cuda_driver_version"] == "12.4"
    assert ident["devices"][0]["compute_capability"] == "9.0"


@pytest.mark.parametrize("gpu,cpu,cores,label", [
    ({"available": True, "name": "NVIDIA H100 80GB HBM3", "count": 1, "devices": [{"memory_total_mib": 81559}]},
     None, 16, "H100-80GB"),
    ({"available": True, "name": "NVIDIA A100-SXM4-40GB", "count": 2, "devices": [{"memory_total_mib": 40960}]},
     None, 16, "2xA100-40GB"),
    ({"available": False}, "Intel(R) Xeon(R) CPU @ 2.20GHz", 2, "Xeon-2c"),
    ({"available": False}, "AMD EPYC", 2, "EPYC-2c"),
])
def test_short_machine_label(gpu, cpu, cores, label):
    from bench.machine import short_label

    assert short_label(gpu, cpu, cores) == label


def test_nvml_failure_mid_run_keeps_the_run():
    nvml = FakeNVML([50], [100], [80])
    sampler = gpu.GpuSampler(nvml=nvml)
    sampler.sample_once()

    def broken(h):
        raise nvml.NVMLError("GPU is lost")

    nvml.nvmlDeviceGetUtilizationRates = broken
    sampler.sample_once()
    s = sampler.summary()
    assert s["available"] is True and s["samples"] == 1 and "1 NVML sample(s) failed mid-run: GPU is lost" in s["reason"]
