"""Measurement half of mnist-mlp-bench: grid, data, model, training harness, GPU sampler and benchmarks."""
