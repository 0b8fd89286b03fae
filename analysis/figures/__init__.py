"""Pure plotting functions, one module per family: a DataFrame (and the finding that titles it) in, a matplotlib
Figure out. They compute nothing a title states: analysis.findings does, once.

* speed: epoch time, time per update, efficiency, dispatch (figures 1, 2, 8, 9)
* stability: speed vs stability, learning curves (figures 3, 5)
* saddle: loss and gradient-norm curves, the saddle benchmark (figure 4)
* hardware: GPU utilisation, machines side by side (figures 6, 7)
* machines: `python -m analysis compare`'s four figures
"""

from __future__ import annotations

import math

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # figures are files and tests: never a window
matplotlib.rcParams["svg.hashsalt"] = "mnist-mlp-bench"  # stable SVG ids across regenerations

import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.load import machine_order  # noqa: E402,F401  (the figures' one order of machines)
from analysis.metrics import batch_text  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def two_or_five(v: float) -> bool:
    """Whether a log axis' minor tick at `v` leads with a 2 or a 5 (0.2, 500): the ones worth a label, since
    labelling every minor tick crowds the axis."""
    return v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 5)


def batch_axis(ax, data: pd.DataFrame):
    """A log-scaled batch-size x axis with a labelled tick at each batch size ('full' for the full batch)."""
    sizes = sorted(data["batch_size"].unique())
    labels = dict(zip(data["batch_size"], data["batch_label"]))
    ax.set_xscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([batch_text(s, labels[s]) for s in sizes])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("batch size (examples per update, log scale)")


def machine_style(data):
    """One line style per machine when there are several."""
    return "machine" if data["machine"].nunique() > 1 else None



