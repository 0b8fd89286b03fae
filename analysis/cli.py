"""`python -m analysis report FILE... --out DIR`: result files in, figures (PNG, SVG) and REPORT.md out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FIGURES = ("epoch_time", "time_per_update", "speed_vs_stability", "saddle", "learning_curves", "gpu", "machines")


def build(runs):
    """All derived tables and figures for `runs`: (runs, summary, knees, {key: Figure or reason})."""
    from analysis import figures as F
    from analysis import metrics

    runs = metrics.add_run_metrics(runs)
    summary = metrics.cell_summary(runs)
    summary = summary.join(runs.groupby(metrics.CELL, observed=True)["train_size"].first(), on=metrics.CELL)
    knee_table = metrics.knees(summary)
    ok = runs[runs["status"] == "ok"]
    figs = {
        "epoch_time": F.epoch_time(summary),
        "time_per_update": F.time_per_update(summary, knee_table),
        "speed_vs_stability": F.speed_vs_stability(summary),
        "saddle": F.saddle_curves(ok),
        "learning_curves": F.learning_curves(ok),
        "gpu": F.gpu_usage(summary) or "no run had a GPU ("
               + "; ".join(sorted(set(runs["gpu.reason"].dropna().astype(str)))) + ")",
        "machines": F.machines_relative(summary) or "the result files come from one machine",
    }
    return runs, summary, knee_table, figs


def report(paths, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from analysis import report as R
    from analysis.load import load_runs

    runs, summary, knee_table, figs = build(load_runs(paths))
    out.mkdir(parents=True, exist_ok=True)
    written, names = [], {}
    for i, key in enumerate(FIGURES, start=1):
        fig = figs[key]
        if isinstance(fig, str):
            names[key] = fig
            continue
        stem = f"fig{i}_{key}"
        for ext in ("png", "svg"):
            # no timestamp in the files: regenerating from the same results gives the same bytes
            meta = {"Date": None} if ext == "svg" else {"Software": None}
            fig.savefig(out / f"{stem}.{ext}", dpi=120, bbox_inches="tight", metadata=meta)
            written.append(out / f"{stem}.{ext}")
        plt.close(fig)
        names[key] = f"{stem}.png"
    (out / "REPORT.md").write_text(R.render(runs, summary, knee_table, names), encoding="utf-8")
    written.append(out / "REPORT.md")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description="mnist-mlp-bench analysis")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="figures and REPORT.md from result files")
    rep.add_argument("files", nargs="+", help="`pytest bench --benchmark-json` files or *.jsonl run stores (--bench-store)")
    rep.add_argument("--out", default="reports", help="output folder (default: reports)")
    args = parser.parse_args(argv)

    from analysis.load import LoadError

    try:
        written = report(args.files, Path(args.out))
    except LoadError as exc:
        print(f"python -m analysis: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files to {args.out}/ (REPORT.md and {len(written) - 1} figure files)")
    return 0
