"""GPU measurement through NVML (nvidia-ml-py): device identity and a background sampler of the timed epochs.

No GPU, no driver or no `pynvml` module is a normal case: everything here then reports
`available: False` with the reason instead of failing.
"""

from __future__ import annotations

import os
import statistics
import threading
import time

NULL_SUMMARY = {
    "samples": 0,
    "samples_per_epoch": [],
    "name": None,
    "util_mean_pct": None,
    "util_max_pct": None,
    "memory_used_max_mib": None,
    "power_mean_w": None,
    "energy_j": None,
    "energy_per_epoch_j": None,
    "energy_source": None,
}


def load_nvml():
    """(pynvml module initialised, None) or (None, reason it is unavailable)."""
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py (module pynvml) is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return None, f"NVML unavailable: {exc} (no NVIDIA driver on this machine)"
    except OSError as exc:
        return None, f"NVML unavailable: {exc}"
    return pynvml, None


def device_index() -> int:
    """The NVML index of the GPU TensorFlow uses first (CUDA_VISIBLE_DEVICES, when numeric, remaps it)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(visible) if visible.isdigit() else 0


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def describe_gpus(nvml=None) -> dict:
    """Identity of the machine's NVIDIA GPUs for machine_info: name, count, memory, driver, CUDA."""
    reason = None
    if nvml is None:
        nvml, reason = load_nvml()
    if nvml is None:
        return {"available": False, "reason": reason, "count": 0, "devices": []}
    try:
        count = nvml.nvmlDeviceGetCount()
        devices = []
        for i in range(count):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            try:
                major, minor = nvml.nvmlDeviceGetCudaComputeCapability(h)
                capability = f"{major}.{minor}"
            except (nvml.NVMLError, AttributeError):
                capability = None
            devices.append({
                "index": i,
                "name": _text(nvml.nvmlDeviceGetName(h)),
                "memory_total_mib": round(nvml.nvmlDeviceGetMemoryInfo(h).total / 2**20),
                "compute_capability": capability,
            })
        cuda = nvml.nvmlSystemGetCudaDriverVersion()
        info = {
            "available": count > 0,
            "reason": None if count else "NVML found no NVIDIA GPU",
            "count": count,
            "devices": devices,
            "name": devices[0]["name"] if devices else None,
            "driver_version": _text(nvml.nvmlSystemGetDriverVersion()),
            "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}",
        }
    except nvml.NVMLError as exc:
        return {"available": False, "reason": f"NVML query failed: {exc}", "count": 0, "devices": []}
    return info


class GpuSampler:
    """Samples one GPU on a background thread during the steady epochs only (the compile epoch and everything
    between epochs are not sampled), and reads NVML's energy counter at each steady epoch's start and end.

    The sampling interval follows the epochs: after each steady epoch it is set to give PER_EPOCH samples in
    an epoch of that length, between MIN_INTERVAL_S and MAX_INTERVAL_S; the count of each epoch is recorded.
    Energy is the counter's difference summed over the steady epochs where the GPU has the counter (Volta and
    newer), else mean power times epoch time ("integrated power"); the record says which.
    """

    PER_EPOCH = 10
    MIN_INTERVAL_S = 0.002
    MAX_INTERVAL_S = 0.05

    def __init__(self, interval_s: float | None = None, nvml=None, index: int | None = None):
        self.interval_s = interval_s or self.MIN_INTERVAL_S  # the first steady epoch's length is not known yet
        self.reason = None
        if nvml is None:
            nvml, self.reason = load_nvml()
        self.nvml = nvml
        self.handle = None
        self.name = None
        if nvml is not None:
            try:
                if nvml.nvmlDeviceGetCount() == 0:
                    self.reason = "NVML found no NVIDIA GPU"
                else:
                    self.handle = nvml.nvmlDeviceGetHandleByIndex(device_index() if index is None else index)
                    self.name = _text(nvml.nvmlDeviceGetName(self.handle))
            except nvml.NVMLError as exc:
                self.reason = f"NVML query failed: {exc}"
        self.active = False
        self._util, self._mem, self._power = [], [], []
        self._per_epoch, self._epoch_energy_j, self._epoch_s = [], [], []
        self._counter = self.handle is not None
        self._energy_start = self._epoch_start = None
        self._errors = 0
        self._last_error = None
        self._stop = threading.Event()
        self._thread = None

    @property
    def available(self) -> bool:
        return self.handle is not None

    def __enter__(self):
        if self.available:
            self._thread = threading.Thread(target=self._loop, name="gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self.active = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return False

    def _loop(self):
        while not self._stop.wait(self.interval_s):
            if self.active:
                self.sample_once()

    def sample_once(self):
        nvml, h = self.nvml, self.handle
        try:
            util = nvml.nvmlDeviceGetUtilizationRates(h).gpu
            mem = nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20
            power = nvml.nvmlDeviceGetPowerUsage(h) / 1000.0
        except nvml.NVMLError as exc:  # a failure mid-run loses this sample, not the run
            self._errors += 1
            self._last_error = str(exc)
            return
        self._util.append(util)
        self._mem.append(mem)
        self._power.append(power)

    def _energy_mj(self):
        try:
            return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except self.nvml.NVMLError:
            self._counter = False  # not supported before Volta: integrated power instead
            return None

    def start_epoch(self, steady: bool = True):
        """Start sampling an epoch; the compile epoch (steady=False) is not sampled."""
        if not (self.available and steady):
            return
        self._first_sample = len(self._power)
        self._energy_start = self._energy_mj() if self._counter else None
        self._epoch_start = time.perf_counter()
        self.active = True

    def end_epoch(self):
        if not self.active:
            return
        self.active = False
        seconds = time.perf_counter() - self._epoch_start
        powers = self._power[self._first_sample:]
        end = self._energy_mj() if self._counter and self._energy_start is not None else None
        if end is not None:
            self._epoch_energy_j.append((end - self._energy_start) / 1000.0)
        elif powers:
            self._epoch_energy_j.append(statistics.fmean(powers) * seconds)
        self._per_epoch.append(len(powers))
        self._epoch_s.append(seconds)
        self.interval_s = min(self.MAX_INTERVAL_S, max(self.MIN_INTERVAL_S, seconds / (self.PER_EPOCH + 2)))

    def summary(self) -> dict:
        """The run record's `gpu` entry."""
        if not self.available:
            return {"available": False, "reason": self.reason, **NULL_SUMMARY}
        out = {"available": True, "reason": None, **NULL_SUMMARY, "name": self.name, "samples": len(self._util),
               "samples_per_epoch": list(self._per_epoch)}
        if self._util:
            out["util_mean_pct"] = round(statistics.fmean(self._util), 2)
            out["util_max_pct"] = float(max(self._util))
            out["memory_used_max_mib"] = round(max(self._mem), 1)
            out["power_mean_w"] = round(statistics.fmean(self._power), 2)
        if self._epoch_energy_j and len(self._epoch_energy_j) == len(self._epoch_s):
            out["energy_j"] = round(sum(self._epoch_energy_j), 3)
            out["energy_per_epoch_j"] = round(out["energy_j"] / len(self._epoch_s), 3)
            out["energy_source"] = "counter" if self._counter else "integrated power"
        out["reason"] = self._shortfall()
        return out

    def _shortfall(self) -> str | None:
        if self._errors:
            return f"{self._errors} NVML sample(s) failed mid-run: {self._last_error}"
        if not self._epoch_s:
            return "no steady epoch was sampled"
        few = sum(1 for n in self._per_epoch if n < self.PER_EPOCH)
        if few:
            return (f"{few} of {len(self._per_epoch)} steady epochs had fewer than {self.PER_EPOCH} samples (epochs "
                    f"of {min(self._epoch_s) * 1000:.3g} ms or more; NVML sampled every "
                    f"{self.MIN_INTERVAL_S * 1000:.0f} ms or more)")
        return None
