#!/usr/bin/env bash
# The GPU run behind reports/machines/H200-*: a time-boxed `lecture`-protocol subset (every batch size,
# SGD and Adam, 2 epochs of 50,000 examples) and the `quick` profile, on a lent GPU machine that has JAX
# with CUDA but no TensorFlow and no network. Keras (pure Python) and its two small dependencies travel
# as wheels in .whl/, MNIST in .devdata/; results are written to $OUT (default: ./gpu-out).
# Each sweep is stopped with SIGINT at its time box: the run in progress is recorded as interrupted,
# every finished run is already in the store and in the benchmark JSON.
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 KERAS_BACKEND=jax MNIST_NPZ=${MNIST_NPZ:-$PWD/.devdata/mnist.npz}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
{ nvidia-smi; python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)"; } \
  2>&1 | tee "$OUT/environment.txt"
python3 -c "import jax; assert jax.devices('gpu')" || { echo "JAX sees no GPU"; exit 1; }
sweep() {  # name, time box (s), pytest options...
  local name=$1 box=$2; shift 2
  timeout -s INT "$box" python3 -m pytest bench -q -p no:cacheprovider --bench-store "$OUT/gpu-runs.jsonl" \
    --benchmark-json "$OUT/$name.json" "$@" 2>&1 | tail -n 25
}
sweep lecture-sgd-adam "${BOX_LECTURE:-280}" --bench-profile lecture --epochs 2 --optimizers sgd,adam
sweep quick "${BOX_QUICK:-170}" --bench-profile quick
ls -la "$OUT"
