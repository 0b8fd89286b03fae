"""GPU measurement through NVML (nvidia-ml-py): device identity and a background sampler of the timed epochs.

No GPU, no driver or no `pynvml` module is a normal case: everything here then reports
`available: False` with the reason instead of failing.
"""

from __future__ import annotations

import os
import statistics
import threading

NULL_SUMMARY = {
    "samples": 0,
    "name": None,
    "util_mean_pct": None,
    "util_max_pct": None,
    "memory_used_max_mib": None,
    "power_mean_w": None,
    "energy_j": None,
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
    """Samples one GPU every `interval_s` on a background thread, counting only while `active`.

    Training callbacks switch `active` on at each epoch's start and off at its end, so evaluation
    and set-up are excluded; the energy counter is read at the same two moments.
    """

    def __init__(self, interval_s: float = 0.05, nvml=None, index: int | None = None):
        self.interval_s = interval_s
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
        self._energy_mj = 0.0
        self._energy_ok = self.handle is not None
        self._energy_start = None
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

    def _energy(self):
        try:
            return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except self.nvml.NVMLError:
            self._energy_ok = False  # not supported before Volta
            return None

    def start_epoch(self):
        if self.available and self._energy_ok:
            self._energy_start = self._energy()
        self.active = True

    def end_epoch(self):
        self.active = False
        if self.available and self._energy_ok and self._energy_start is not None:
            end = self._energy()
            if end is not None:
                self._energy_mj += end - self._energy_start

    def summary(self) -> dict:
        """The run record's `gpu` entry."""
        if not self.available:
            return {"available": False, "reason": self.reason, **NULL_SUMMARY}
        out = {"available": True, "reason": None, **NULL_SUMMARY, "name": self.name, "samples": len(self._util)}
        if self._util:
            out["util_mean_pct"] = round(statistics.fmean(self._util), 2)
            out["util_max_pct"] = float(max(self._util))
        if self._mem:
            out["memory_used_max_mib"] = round(max(self._mem), 1)
        if self._power:
            out["power_mean_w"] = round(statistics.fmean(self._power), 2)
        if self._energy_ok:
            out["energy_j"] = round(self._energy_mj / 1000.0, 3)
        if self._errors:
            out["reason"] = f"{self._errors} NVML sample(s) failed mid-run: {self._last_error}"
        elif not self._util:
            out["reason"] = f"no sample taken (epochs shorter than the {self.interval_s * 1000:.0f} ms interval)"
        return out
