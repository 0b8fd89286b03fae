"""`python -m analysis report FILE... --out DIR`: result files in, figures (PNG, SVG) and REPORT.md out.
`python -m analysis compare FILE... --out DIR`: several machines' result files in, a ratio table (printed
and in COMPARE.md, compare.csv) and figures out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FIGURES = ("epoch_time", "time_per_update", "speed_vs_stability", "saddle", "learning_curves", "gpu", "machines",
           "efficiency", "dispatch")


def build(runs):
    """All derived tables and figures for `runs`: (runs, summary, knees, {key: Figure or reason})."""
    import pandas as pd

    from analysis import figures as F
    from analysis import metrics

    runs = metrics.add_run_metrics(runs)
    saddle = runs[runs["budget"].notna()]  # the saddle benchmark's runs: figure 4 and its text only
    runs = runs[runs["budget"].isna()]
    if runs.empty:
        why = "the files hold only saddle-benchmark runs (bench/test_saddle.py)"
        figs = {k: why for k in FIGURES}
        figs["saddle"] = F.saddle_benchmark(saddle)
        return saddle, None, None, figs
    # runs of both dispatch modes: figure 9 compares them; the others show one mode (default if present)
    modes = list(dict.fromkeys(runs["dispatch.mode"]))
    primary = "default" if "default" in modes else modes[0]
    both = metrics.cell_summary(runs, extra=["dispatch.mode"])
    all_runs, runs = runs, runs[runs["dispatch.mode"] == primary]
    summary = metrics.cell_summary(runs)
    summary = summary.join(runs.groupby(metrics.CELL, observed=True)["train_size"].first(), on=metrics.CELL)
    knee_table = metrics.knees(summary)
    ok = runs[runs["status"] == "ok"]
    figs = {
        "epoch_time": F.epoch_time(summary),
        "time_per_update": F.time_per_update(summary, knee_table),
        "speed_vs_stability": F.speed_vs_stability(summary),
        "saddle": F.saddle_benchmark(saddle) or F.saddle_curves(ok) or "no run recorded loss curves (the recorder is part of the TensorFlow "
                                         "train step; runs on the JAX backend record none)",
        "learning_curves": F.learning_curves(ok),
        "gpu": F.gpu_usage(summary) or "no run had a GPU ("
               + "; ".join(sorted(set(runs["gpu.reason"].dropna().astype(str)))) + ")",
        "machines": F.machines_relative(summary) or "the result files come from one machine",
        "efficiency": F.efficiency(summary, both) or "no run carries a peak fraction (result files from before the "
                                               "calibration, or runs made with --no-calibration)",
        "dispatch": F.dispatch_gap(both) or f"all runs used --dispatch {primary}; run the same sweep with --dispatch "
                                            + ("fast" if primary == "default" else "default") + " to compare",
    }
    summary.attrs["by_dispatch"] = both  # for the report's dispatch finding
    summary.attrs["saddle"] = saddle  # for the report's saddle-point finding
    all_runs = pd.concat([all_runs, saddle]) if len(saddle) else all_runs
    return all_runs, summary, knee_table, figs


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
    text = (R.render(runs, summary, knee_table, names) if summary is not None
            else R.render_saddle_only(runs, names))
    (out / "REPORT.md").write_text(text, encoding="utf-8")
    written.append(out / "REPORT.md")
    return written


def _save(fig, out: Path, stem: str) -> list[Path]:
    import matplotlib.pyplot as plt

    written = []
    for ext in ("png", "svg"):
        # no timestamp in the files: regenerating from the same results gives the same bytes
        meta = {"Date": None} if ext == "svg" else {"Software": None}
        fig.savefig(out / f"{stem}.{ext}", dpi=120, bbox_inches="tight", metadata=meta)
        written.append(out / f"{stem}.{ext}")
    plt.close(fig)
    return written


COMPARE_FIGURES = ("epoch_time", "time_per_update", "speedup", "time_to_target")


def compare_figures(cmp) -> dict:
    from analysis import figures as F

    note = cmp.mismatch_note()
    return {
        "epoch_time": F.compare_times(cmp.table, cmp.baseline, "epoch_time_s", note=note),
        "time_per_update": F.compare_times(cmp.table, cmp.baseline, "time_per_update_s", cmp.knees, note=note),
        "speedup": F.compare_speedup(cmp.table, cmp.baseline, note=note),
        "time_to_target": F.compare_time_to_target(cmp.table, note=note),
    }


def compare(paths, out: Path, baseline=None, allow_mismatch=False, echo=print) -> list[Path]:
    from analysis import compare as C
    from analysis.load import load_runs

    cmp = C.compare(load_runs(paths), baseline=baseline, allow_mismatch=allow_mismatch)
    ratios, knees, targets = C.ratio_table(cmp), C.knee_table(cmp), C.target_table(cmp)
    note = cmp.mismatch_note()
    head = (f"{len(cmp.machines)} machines, baseline {cmp.baseline}; speed = baseline epoch time / machine's "
            "(above 1x = faster); medians over seeds")
    echo(head)
    if note:
        echo("WARNING: " + note)
    echo(ratios.to_markdown(index=False))
    echo("\nSaturation knee (batch size after which time per update grows >= sqrt(batch)):")
    echo(knees.to_markdown(index=False))
    echo("\nTime to target accuracy (fastest batch size per optimizer):")
    echo(targets.to_markdown(index=False))
    if cmp.unmatched:
        echo("not matched (cell on one machine only): "
             + ", ".join(f"{m} {n} cell(s)" for m, n in cmp.unmatched.items()))

    out.mkdir(parents=True, exist_ok=True)
    written = []
    figs = compare_figures(cmp)
    names = {}
    for i, key in enumerate(COMPARE_FIGURES, start=1):
        stem = f"cmp{i}_{key}"
        written += _save(figs[key], out, stem)
        names[key] = f"{stem}.png"
    csv = cmp.table.drop(columns=[c for c in cmp.table if c.startswith("baseline_")])
    csv.to_csv(out / "compare.csv", index=False, float_format="%.6g")
    written.append(out / "compare.csv")
    files = ", ".join(f"`{Path(p).name}`" for p in paths)
    md = [f"# Machines compared: {', '.join(cmp.machines)}", "",
          f"Generated by `python -m analysis compare` from {files}. {head}.", ""]
    if note:
        md += [f"**Warning: {note}.** Differences below include those, not only the hardware.", ""]
    md += ["## Speed per grid cell", "", ratios.to_markdown(index=False), "",
           "## Saturation knee", "", knees.to_markdown(index=False), "",
           "## Time to target accuracy", "", targets.to_markdown(index=False), "",
           "## Figures", ""]
    md += [f"![{key}]({names[key]})" for key in COMPARE_FIGURES]
    if cmp.unmatched:
        md += ["", "Not matched (a cell on one machine only): "
               + ", ".join(f"{m}: {n}" for m, n in cmp.unmatched.items()) + "."]
    (out / "COMPARE.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    written.append(out / "COMPARE.md")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description="mnist-mlp-bench analysis")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="figures and REPORT.md from result files")
    rep.add_argument("files", nargs="+",
                     help="`pytest bench --benchmark-json` files or *.jsonl run stores (--bench-store)")
    rep.add_argument("--out", default="reports", help="output folder (default: reports)")
    cmp = sub.add_parser("compare", help="machines side by side: ratio table (printed), COMPARE.md, figures")
    cmp.add_argument("files", nargs="+", help="result files of two or more machines (JSON or *.jsonl)")
    cmp.add_argument("--out", default="reports/compare", help="output folder (default: reports/compare)")
    cmp.add_argument("--baseline", metavar="LABEL",
                     help="machine the others are measured against (default: the first file's)")
    cmp.add_argument("--allow-mismatch", action="store_true",
                     help="compare runs whose protocols differ (the fields are named in the table and figures)")
    args = parser.parse_args(argv)

    from analysis.load import LoadError

    try:
        if args.command == "report":
            written = report(args.files, Path(args.out))
        else:
            written = compare(args.files, Path(args.out), args.baseline, args.allow_mismatch)
    except LoadError as exc:
        print(f"python -m analysis: {exc}", file=sys.stderr)
        return 2
    what = "REPORT.md" if args.command == "report" else "COMPARE.md, compare.csv"
    print(f"wrote {len(written)} files to {args.out}/ ({what} and figures)")
    return 0
