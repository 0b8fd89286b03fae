"""How numbers are written in the reports: formats and tables."""

from __future__ import annotations

import math

import pandas as pd


def fmt(x, spec=".3g", none="–"):
    return none if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False)


def batch(x) -> str:
    """A batch size for a sentence: 'none' for None."""
    return "none" if x is None else f"{x:,}"
