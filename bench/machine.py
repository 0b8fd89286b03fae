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
    from bench.backends import current

    backend = current()
    return {
        "gpu": describe_gpus(nvml),
        **backend.build_info(),
        "backend_gpus": backend.gpu_devices(),
        "cpu_count": os.cpu_count(),
    }


def store_machine(label: str | None = None) -> dict:
    """What a store line says of its machine: enough to label it and to match it on --resume."""
    import platform

    import cpuinfo

    gpu = describe_gpus()
    cpu = cpuinfo.get_cpu_info().get("brand_raw")
    return {"node": platform.node(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "gpu_name": gpu.get("name"), "gpu_count": gpu.get("count", 0),
            "label": label or short_label(gpu, cpu, os.cpu_count())}


def code_version() -> str:
    """The installed package version, plus the git commit when run from a checkout."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    try:
        v = version("mnist-mlp-bench")
    except PackageNotFoundError:
        v = "unknown"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{v}+{commit}" if commit else v


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
