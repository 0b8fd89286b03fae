"""Fast checks of bench/ and analysis/ (not benchmarks)."""
