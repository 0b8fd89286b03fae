"""`python -m analysis report FILE... --out DIR`: result files in, figures (PNG, SVG) and REPORT.md out.
`python -m analysis compare FILE... --out DIR`: several machines' result files in, a ratio table (printed
and in COMPARE.md, compare.csv) and figures out.
`python -m analysis provenance FILE...`: the files whose results cannot be rebuilt from a commit (dirty or unknown
code version), one line each; exit status 1 when there is any.
`python -m analysis replicate A B`: two sweeps of one protocol compared: verdicts, knees, and each cell's estimate
against the other's interval. The only module that writes files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.record import StoreError, check_writable, write_atomic

FIGURES = ("epoch_time", "time_per_update", "speed_vs_stability", "saddle", "learning_curves", "gpu", "machines",
           "efficiency", "dispatch", "escape", "steps_to_target", "sensitivity")
COMPARE_FIGURES = ("epoch_time", "time_per_update", "speedup", "time_to_target")


def draw(f) -> dict:
    """{figure key: Figure, or findings.Skipped with the reason} for a Findings."""
    from analysis.figures import hardware, saddle, speed, stability, tuning
    from analysis.findings import Skipped
    from analysis.saddle import SaddleBenchmark
    from bench.record import GRID

    def made(finding, fn, *data):
        return finding if isinstance(finding, Skipped) else fn(*data, finding)

    if isinstance(f.saddle, SaddleBenchmark):
        figure4 = saddle.saddle_benchmark(f.saddle_runs, f.saddle) or Skipped("no saddle-benchmark run finished")
    elif isinstance(f.saddle, Skipped):
        figure4 = f.saddle
    else:
        figure4 = made(f.saddle[1], saddle.saddle_curves, f.runs[(f.runs["status"] == "ok")
                                                               & (f.runs["experiment"] == GRID)
                                                               & (f.runs["dispatch.mode"] == f.primary_mode)])
    figure3 = made(f.speed_vs_stability, tuning.speed_vs_stability, getattr(f.speed_vs_stability, "stability", None))
    experiments = {"saddle": figure4, "escape": made(f.escape, saddle.escape, f.escape_runs),
                   "speed_vs_stability": figure3,
                   "steps_to_target": made(f.tuning, tuning.steps_to_target, getattr(f.tuning, "steps", None)),
                   "sensitivity": made(f.tuning, tuning.sensitivity, getattr(f.tuning, "trials", None))}
    if f.summary is None:
        return {key: experiments.get(key, getattr(f, key, None)) for key in FIGURES}
    ok = f.runs[(f.runs["status"] == "ok") & (f.runs["experiment"] == GRID) & (f.runs["dispatch.mode"] == f.primary_mode)]
    return {
        "epoch_time": made(f.epoch_time, speed.epoch_time, f.by_mode),
        "time_per_update": made(f.time_per_update, speed.time_per_update, f.by_mode, f.knees),
        "speed_vs_stability": figure3,
        "learning_curves": made(f.learning_curves, stability.learning_curves, ok),
        "gpu": made(f.gpu, hardware.gpu_usage, f.summary),
        "machines": made(f.machines, hardware.machines_relative, getattr(f.machines, "cells", None)),
        "efficiency": made(f.efficiency, speed.efficiency, f.summary, f.by_mode),
        "dispatch": made(f.dispatch, speed.dispatch_gap, f.by_mode),
        **experiments,
    }


def build(runs):
    """Findings and figures of a set of runs (analysis.load.load_runs): (Findings, {key: Figure or Skipped})."""
    from analysis import findings

    f = findings.compute(runs)
    return f, draw(f)


def save(fig, out: Path, stem: str) -> list[Path]:
    import io

    import matplotlib.pyplot as plt

    written = []
    for ext in ("png", "svg"):
        # no timestamp in the files: regenerating from the same results gives the same bytes
        meta = {"Date": None} if ext == "svg" else {"Software": None}
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, dpi=120, bbox_inches="tight", metadata=meta)
        write_atomic(out / f"{stem}.{ext}", buffer.getvalue())
        written.append(out / f"{stem}.{ext}")
    plt.close(fig)
    return written


def output_folder(out: Path, option: str = "--out") -> Path:
    """`out` checked by writing in it (or, when it does not exist yet, by making it and removing it again), before
    any work: a LoadError in one line when it cannot be written."""
    from analysis.load import LoadError

    if str(out).strip() in ("", "."):
        raise LoadError(f"{option}: {str(out)!r} would write into the current folder; name an output folder")
    try:
        if out.exists():
            check_writable(out, option, folder=True)
        else:
            check_writable(out / ".write-check", option)
    except StoreError as exc:
        raise LoadError(str(exc)) from None
    return out


def report(paths, out: Path) -> list[Path]:
    from analysis import report as R
    from analysis.findings import Skipped
    from analysis.load import load_runs

    output_folder(out)
    f, figs = build(load_runs(paths))
    out.mkdir(parents=True, exist_ok=True)
    written, names = [], {}
    for i, key in enumerate(FIGURES, start=1):
        if isinstance(figs[key], Skipped):
            names[key] = figs[key]
            continue
        written += save(figs[key], out, f"fig{i}_{key}")
        names[key] = f"fig{i}_{key}.png"
    write_atomic(out / "REPORT.md", R.render(f, names).encode("utf-8"))
    return written + [out / "REPORT.md"]


def compare_figures(cmp, found=None) -> dict:
    from analysis import compare as C
    from analysis.figures import machines as M

    found = found or C.findings(cmp)
    note = cmp.mismatch_note()
    return {
        "epoch_time": M.compare_times(cmp.table, found, "epoch_time_s", note=note),
        "time_per_update": M.compare_times(cmp.table, found, "time_per_update_s", note=note),
        "speedup": M.compare_speedup(cmp.table, found, note=note),
        "time_to_target": M.compare_time_to_target(cmp.table, found, note=note),
    }


def compare(paths, out: Path, baseline=None, allow_mismatch=False, echo=print) -> list[Path]:
    from analysis import compare as C
    from analysis.load import load_runs

    output_folder(out)
    cmp = C.compare(load_runs(paths), baseline=baseline, allow_mismatch=allow_mismatch)
    rep = C.report(cmp)
    for line in rep.terminal():
        echo(line)
    out.mkdir(parents=True, exist_ok=True)
    written, names = [], {}
    for i, (key, fig) in enumerate(compare_figures(cmp).items(), start=1):
        written += save(fig, out, f"cmp{i}_{key}")
        names[key] = f"cmp{i}_{key}.png"
    csv = cmp.table.drop(columns=[c for c in cmp.table if c.startswith("baseline_") or c.endswith("samples_s")
                                  or c in ("run_epoch_s", "all_epoch_s", "replicates")])
    write_atomic(out / "compare.csv", csv.to_csv(index=False, float_format="%.6g").encode("utf-8"))
    files = ", ".join(f"`{Path(p).name}`" for p in paths)
    write_atomic(out / "COMPARE.md", rep.markdown(cmp.machines, files, names).encode("utf-8"))
    return written + [out / "compare.csv", out / "COMPARE.md"]


def provenance(paths) -> int:
    """Print each file whose runs cannot be rebuilt from a commit, with why; 1 if any, else 0."""
    from analysis.load import load_runs

    flagged = 0
    for path in paths:
        runs = load_runs([path])
        whys = sorted({w for w in runs["provenance"] if isinstance(w, str)})
        if whys:
            flagged += 1
            print(f"{path}: {'; '.join(whys)}")
    return 1 if flagged else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description="mnist-mlp-bench analysis")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="figures and REPORT.md from result files")
    rep.add_argument("files", nargs="+",
                     help="`pytest bench --benchmark-json` files or *.jsonl run stores (--bench-store)")
    rep.add_argument("--out", default="results/report",
                     help="output folder (default: results/report; the committed reports/ are regenerated by "
                          "scripts/regenerate-reports.sh)")
    cmp = sub.add_parser("compare", help="machines side by side: ratio table (printed), COMPARE.md, figures")
    cmp.add_argument("files", nargs="+", help="result files of two or more machines (JSON or *.jsonl)")
    cmp.add_argument("--out", default="results/compare", help="output folder (default: results/compare)")
    cmp.add_argument("--baseline", metavar="LABEL",
                     help="machine the others are measured against (default: the first file's)")
    cmp.add_argument("--allow-mismatch", action="store_true",
                     help="compare runs whose protocols differ (the fields are named in the table and figures)")
    prov = sub.add_parser("provenance", help="name the files whose code version is dirty or unknown")
    prov.add_argument("files", nargs="+", help="result files (JSON or *.jsonl)")
    rep2 = sub.add_parser("replicate", help="two sweeps of one protocol: the same verdicts, knees and estimates?")
    rep2.add_argument("first", help="the first sweep's result file")
    rep2.add_argument("second", help="the second sweep's result file")
    args = parser.parse_args(argv)

    from analysis.load import LoadError

    try:
        if args.command == "provenance":
            return provenance(args.files)
        if args.command == "replicate":
            from analysis import replication
            from analysis.load import load_runs

            if Path(args.first).resolve() == Path(args.second).resolve():
                raise LoadError(f"{args.first}: the same file twice; replication needs two sweeps")
            try:
                found = replication.compare(load_runs([args.first]), load_runs([args.second]))
            except replication.NothingToCompare as exc:
                raise LoadError(str(exc)) from None
            for line in found.lines():
                print(line)
            return 0
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
