"""Loads the suite's pytest plugin (bench/plugin.py); nothing else."""

pytest_plugins = ["bench.plugin"]
