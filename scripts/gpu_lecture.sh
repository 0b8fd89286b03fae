#!/usr/bin/env bash
# The lecture's whole protocol on one GPU in minutes, Keras on JAX (issue 15), in one command of at most
# 9 minutes: the `lecture` profile (50,000 examples, 20 epochs, seven optimizers, batch 1 to 10,000 and the
# full batch, REPEATS independent repeats of every cell, 3 by default: the suite's timing protocol) in
# --dispatch fast (each epoch one jitted device loop); SGD and Adam in the default dispatch for 2 epochs at each
# batch size, once (a comparison: Keras' host loop costs about a millisecond a step there, so the full protocol
# would not fit); and the dispatch table against the hand-written floor (bench.overhead).
# For a lent GPU machine with JAX and CUDA but no TensorFlow and no network: Keras and its small
# dependencies travel as wheels in .whl/, MNIST in .devdata/ (or MNIST_NPZ). Everything goes to $OUT
# (default ./gpu-out): the run store, one benchmark JSON per sweep, overhead.json, environment.txt.
# Each part has a time box (BOX_FAST, BOX_DEFAULT, BOX_OVERHEAD seconds); a sweep cut by its box is stopped
# with SIGINT: the run in progress is recorded as interrupted, every finished run is already stored.
# PRECISION (tf32, the default, or fp32) is the sweeps' --precision; calibration.json holds the matmul peak at
# both precisions (TensorFloat-32 against full float32), so the runs' peak fractions can be read against either.
# The escape experiment is not part of it (it runs on JAX too: pytest bench --experiment escape --escape-profile gpu).
# CPU dry run (the tests): PROFILE=smoke REQUIRE_GPU=0 OPTIMIZERS=sgd BATCHES=10,full OVERHEAD_BATCHES=10 \
#   OVERHEAD_TRAIN=500 OUT=/tmp/dry bash scripts/gpu_lecture.sh
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
PROFILE=${PROFILE:-lecture}; OPTIMIZERS=${OPTIMIZERS:-lecture}; PRECISION=${PRECISION:-tf32}; REPEATS=${REPEATS:-3}
export PYTHONUNBUFFERED=1 KERAS_BACKEND=jax MNIST_NPZ=${MNIST_NPZ:-$PWD/.devdata/mnist.npz}
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
PY=${PYTHON:-python3}
{ command -v nvidia-smi > /dev/null && nvidia-smi
  $PY -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)"; } \
  > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"
if [ "${REQUIRE_GPU:-1}" = 1 ]; then
  $PY -c "import jax; assert jax.devices('gpu')" 2> /dev/null || { echo "JAX sees no GPU (REQUIRE_GPU=0 for a dry run)"; exit 1; }
fi
batches=(); [ -n "${BATCHES:-}" ] && batches=(--batch-sizes "$BATCHES")
sweep() {  # name, time box (s), pytest options...
  local name=$1 box=$2; shift 2
  timeout -s INT "$box" $PY -m pytest bench -q -p no:cacheprovider --bench-store "$OUT/gpu-runs.jsonl" \
    --benchmark-json "$OUT/$name.json" --precision "$PRECISION" "$@" 2>&1 | tail -n 12
}
started=$(date +%s)
timeout -s INT "${BOX_CALIBRATION:-60}" $PY -c '
import json, sys
from bench import backends, calibrate
backend, out = backends.current(), {}
for p in ("tf32", "fp32"):
    backend.set_precision(p)
    out[p] = calibrate.calibrate()
json.dump(out, open(sys.argv[1], "w"), indent=1)
print("calibration:", {p: (c["matmul_precision"], c["matmul_gflops"]) for p, c in out.items()})
' "$OUT/calibration.json"
sweep lecture-fast "${BOX_FAST:-290}" --bench-profile "$PROFILE" --optimizers "$OPTIMIZERS" --dispatch fast \
  --repeats "$REPEATS" "${batches[@]}"
sweep lecture-default-2ep "${BOX_DEFAULT:-140}" --bench-profile "$PROFILE" --epochs 2 --repeats 1 --optimizers sgd,adam \
  "${batches[@]}"
timeout -s INT "${BOX_OVERHEAD:-60}" $PY -m bench.overhead --what dispatch --batch-sizes "${OVERHEAD_BATCHES:-1,10,100,1000,10000}" \
  --train-size "${OVERHEAD_TRAIN:-10000}" --epochs 3 --repeats 2 --json "$OUT/overhead.json" 2>&1 | tail -n 8
echo "gpu_lecture.sh: $(( $(date +%s) - started )) s; results in $OUT/"
ls -la "$OUT"
