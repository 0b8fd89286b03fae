"""Machine identity for pytest-benchmark's machine_info: GPU, TensorFlow/Keras build, CPU count."""

from __future__ import annotations

import os

from bench.gpu import describe_gpus


def machine_identity(nvml=None) -> dict:
    from bench.tf_setup import gpu_devices, keras, tf

    build = tf.sysconfig.get_build_info()
    return {
        "gpu": describe_gpus(nvml),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "tf_built_with_cuda": bool(build.get("is_cuda_build", False)),
        "tf_cuda_version": build.get("cuda_version"),
        "tf_cudnn_version": build.get("cudnn_version"),
        "tf_gpus": [d.name for d in gpu_devices()],
        "cpu_count": os.cpu_count(),
    }
