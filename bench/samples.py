"""What can explain a slow timing sample, read at each epoch's start and end: the process's CPU time (all its
threads), the time Python's garbage collector ran (gc.callbacks), and from /proc/stat the host's steal time and the
CPU time every process of the machine used (others' = that less this process's). Where /proc/stat does not exist
(not Linux) the host's numbers are None."""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class _GcClock:
    """Accumulates the wall time of every collection (installed once per process in gc.callbacks)."""

    def __init__(self):
        self.total = 0.0
        self._started = None

    def __call__(self, phase, info):
        if phase == "start":
            self._started = time.perf_counter()
        elif phase == "stop" and self._started is not None:
            self.total += time.perf_counter() - self._started
            self._started = None


_GC: _GcClock | None = None


def gc_seconds() -> float:
    """Seconds Python's garbage collector has run since the first call."""
    global _GC
    if _GC is None:
        _GC = _GcClock()
        gc.callbacks.append(_GC)
    return _GC.total


def host_ticks() -> tuple[int, int] | None:
    """(busy, steal) clock ticks of all CPUs since boot from /proc/stat's first line (busy: user, nice, system, irq
    and softirq, which count every process of the guest; steal: time the hypervisor gave the CPUs to others)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
    return user + nice + system + irq + softirq, steal


@dataclass(frozen=True)
class Reading:
    cpu: float
    gc: float
    host: tuple[int, int] | None


def read() -> Reading:
    return Reading(time.process_time(), gc_seconds(), host_ticks())


def between(a: Reading, b: Reading) -> dict:
    """{cpu_s, gc_s, steal_s, others_s} from reading `a` to reading `b`."""
    cpu = b.cpu - a.cpu
    out = {"cpu_s": round(cpu, 6), "gc_s": round(b.gc - a.gc, 6), "steal_s": None, "others_s": None}
    if a.host is not None and b.host is not None:
        busy = (b.host[0] - a.host[0]) / _TICK
        out["steal_s"] = round((b.host[1] - a.host[1]) / _TICK, 4)
        out["others_s"] = round(max(0.0, busy - cpu), 4)  # ticks are 10 ms coarse: small negatives are rounding
    return out
