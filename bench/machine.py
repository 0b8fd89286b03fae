"""Machine identity for pytest-benchmark's machine_info: GPU, Keras/backend build, CPU count."""

from __future__ import annotations

import os
import re

from bench.gpu import describe_gpus


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
    from bench.backend import build_info, gpu_devices

    return {
        "gpu": describe_gpus(nvml),
        **build_info(),
        "backend_gpus": gpu_devices(),
        "cpu_count": os.cpu_count(),
    }


def reset_peak_host_memory() -> bool:
    """Reset the kernel's high-water mark of this process's resident memory (Linux: /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_host_memory_mib(since_reset: bool = True) -> dict:
    """{'peak_mib', 'source'}: the process's peak resident memory (VmHWM since the last reset, else ru_maxrss:
    the whole process's peak)."""
    if since_reset:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return {"peak_mib": round(int(line.split()[1]) / 1024, 1), "source": "VmHWM since run start"}
        except OSError:
            pass
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"peak_mib": round(rss / (2**20 if sys.platform == "darwin" else 1024), 1),
            "source": "ru_maxrss (process peak)"}
