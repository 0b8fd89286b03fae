"""Figure 5: what each batch size and optimizer reached, epoch by epoch."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def learning_curves(runs: pd.DataFrame, finding) -> plt.Figure:
    """Figure 5: accuracy per epoch on the target's split (validation; test in older records), a panel per
    optimizer, colour by batch size."""
    split = finding.split
    rows = [{"optimizer": r["optimizer"], "batch": r["batch_label"], "batch_size": r["batch_size"],
             "epoch": i + 1, f"{split} accuracy": acc}
            for _, r in runs.iterrows() for i, acc in enumerate(r["accuracy_by_epoch"] or [])]
    data = pd.DataFrame(rows).sort_values("batch_size")
    order = list(dict.fromkeys(data["batch"]))
    grid = sns.relplot(data=data, x="epoch", y=f"{split} accuracy", hue="batch", hue_order=order, col="optimizer",
                       col_order=list(dict.fromkeys(runs["optimizer"])),
                       col_wrap=min(4, data["optimizer"].nunique()), kind="line", marker="o", height=2.8,
                       palette="viridis", errorbar=("pi", 100))
    grid.set_axis_labels("epoch", f"{split} accuracy")
    for ax in grid.axes.flat:
        ax.set_xticks(sorted(data["epoch"].unique()))
    grid.figure.suptitle(finding.title(), y=1.02)
    grid.legend.set_title("batch size")
    return grid.figure
