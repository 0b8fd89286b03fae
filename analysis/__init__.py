"""Analysis half of mnist-mlp-bench: result files in, tidy DataFrame, figures and REPORT.md out."""
