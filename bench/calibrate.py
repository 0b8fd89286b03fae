"""The machine's own ceilings, measured at session start: dense matmul rate and memory bandwidth, on the
device the backend trains on, in the training dtype and at the matmul precision the runs get (--precision:
TensorFloat-32 on a recent GPU has about 7 times the full-float32 peak). Runs are then scored against them (achieved GFLOP/s
and its fraction of the matmul peak), so a result says how close it came to what this machine can do.
"""

from __future__ import annotations

import time


def _sync(x) -> float:
    """Wait for `x` by reading one element back (cheap: no full copy to the host)."""
    from bench.backends import current

    keras = current().keras

    return float(keras.ops.convert_to_numpy(keras.ops.reshape(x, (-1,))[0]))


def _best_time(fn, repeats: int) -> float:
    fn()  # warm-up: allocation, kernel selection, tracing
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak(n: int, chain: int = 3, repeats: int = 3) -> dict:
    """GFLOP/s of n x n by n x n products (2 n^3 FLOPs each), `chain` per timed block, best block."""
    from bench.backends import current

    keras = current().keras

    dtype = keras.config.floatx()
    a = keras.random.normal((n, n), dtype=dtype, seed=1) / n ** 0.5
    b = keras.random.normal((n, n), dtype=dtype, seed=2) / n ** 0.5

    def block():
        c = a
        for _ in range(chain):
            c = keras.ops.matmul(c, b)
        _sync(c)

    t = _best_time(block, repeats)
    return {"matmul_gflops": round(2 * n ** 3 * chain / t / 1e9, 2), "matmul_n": n}


def bandwidth(n_floats: int, repeats: int = 5) -> dict:
    """GB/s of an element-wise `a * 2` over `n_floats` values (bytes read + bytes written)."""
    from bench.backends import current

    keras = current().keras

    dtype = keras.config.floatx()
    a = keras.ops.ones((n_floats,), dtype=dtype)
    size = keras.ops.convert_to_numpy(keras.ops.zeros((1,), dtype=dtype)).itemsize
    t = _best_time(lambda: _sync(keras.ops.multiply(a, 2.0)), repeats)
    return {"bandwidth_gbs": round(2 * n_floats * size / t / 1e9, 2), "bandwidth_mib": round(n_floats * size / 2 ** 20)}


def calibrate() -> dict:
    """Both ceilings for machine_info: sized for the device (a GPU gets bigger problems), about 1-3 s."""
    from bench.backends import current

    backend = current()
    gpu = bool(backend.gpu_devices())
    started = time.perf_counter()
    out = {"device": "GPU" if gpu else "CPU", "backend": backend.NAME, "dtype": backend.keras.config.floatx(),
           "matmul_precision": backend.precision()[1]}  # the peak at the precision the runs get (--precision)
    out.update(matmul_peak(8192 if gpu else 2048, chain=3 if gpu else 2))
    out.update(bandwidth(2 ** 28 if gpu else 2 ** 25))
    out["seconds"] = round(time.perf_counter() - started, 2)
    return out
