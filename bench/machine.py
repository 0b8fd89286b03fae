"""Machine identity for pytest-benchmark's machine_info: GPU, Keras/backend build, CPU count."""

from __future__ import annotations

import os
import re

from bench.gpu import describe_gpus
from bench.record import DIRTY, Machine


def short_label(gpu: dict, cpu_brand: str | None, cpu_count: int | None) -> str:
    """A short human label: `H100-80GB` for a GPU machine, `EPYC-2c` for a CPU-only one."""
    if gpu.get("available") and gpu.get("name"):
        words = []
        for w in gpu["name"].replace("NVIDIA", "").replace("GeForce", "").replace("Tesla", "").split():
            if re.fullmatch(r"\d+GB|PCIe|SXM\d*|HBM\d*e?|NVL", w):
                break  # memory and form factor: the memory is appended below
            words.append(w.split("-")[0])
        mem = (gpu.get("devices") or [{}])[0].get("memory_total_mib")
        label = "-".join(words[:2] or ["GPU"]) + (f"-{round(mem / 1024)}GB" if mem else "")
        return f"{gpu['count']}x{label}" if gpu.get("count", 1) > 1 else label
    noise = {"amd", "intel", "core", "cpu", "processor"}
    brand = re.sub(r"\((R|TM)\)", "", cpu_brand or "CPU", flags=re.I).split("@")[0]
    words = [w for w in brand.split() if w.lower() not in noise]
    return "-".join(words[:2] or ["CPU"]) + (f"-{cpu_count}c" if cpu_count else "")


def machine_identity(nvml=None) -> dict:
    """GPU (NVML), framework build (Keras, backend, TensorFlow or JAX, CUDA/cuDNN built with), CPU count."""
    from bench.backends import current

    backend = current()
    return {
        "gpu": describe_gpus(nvml),
        **backend.build_info(),
        "backend_gpus": backend.gpu_devices(),
        "cpu_count": os.cpu_count(),
    }


def store_machine(label: str | None = None) -> Machine:
    """What a store line says of its machine: enough to label it and to match it on --resume."""
    import platform

    import cpuinfo

    gpu = describe_gpus()
    cpu = cpuinfo.get_cpu_info().get("brand_raw")
    return Machine(node=platform.node(), cpu=cpu, cpu_count=os.cpu_count(), gpu_name=gpu.get("name"),
                   gpu_count=gpu.get("count", 0), label=label or short_label(gpu, cpu, os.cpu_count()))


def code_version() -> str:
    """The installed package version, plus the git commit when run from a checkout, plus DIRTY when the working
    tree differs from that commit (modified, staged or new files that git does not ignore): such results cannot be
    rebuilt from the commit they name."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    try:
        v = version("mnist-mlp-bench")
    except PackageNotFoundError:
        v = "unknown"
    here = Path(__file__).parent

    def git(*args) -> str | None:
        try:
            proc = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=here)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return v
    dirty = git("status", "--porcelain")
    return f"{v}+{commit}" + (DIRTY if dirty or dirty is None else "")



def _status_mib(key: str) -> float | None:
    """A /proc/self/status entry (VmRSS, VmHWM) in MiB; None where there is none (not Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def reset_peak_host_memory() -> float | None:
    """Reset the kernel's high-water mark of this process's resident memory (Linux: /proc/self/clear_refs) and
    return the resident memory at that moment (MiB), the base a run's own peak is measured from; None where
    the mark cannot be reset."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _status_mib("VmRSS")


def peak_host_memory_mib(start_mib: float | None = None) -> dict:
    """{'peak_mib', 'run_mib', 'source'}: the process's peak resident memory since reset_peak_host_memory()
    (VmHWM), and the run's own share of it (peak minus the resident memory at the reset); without a reset, the
    whole process's peak (ru_maxrss) and no share of the run."""
    peak = _status_mib("VmHWM") if start_mib is not None else None
    if peak is not None:
        return {"peak_mib": peak, "run_mib": round(max(0.0, peak - start_mib), 1), "source": "VmHWM since run start"}
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"peak_mib": round(rss / (2**20 if sys.platform == "darwin" else 1024), 1), "run_mib": None,
            "source": "ru_maxrss (process peak)"}
