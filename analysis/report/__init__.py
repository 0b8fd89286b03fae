"""REPORT.md, rendered from the findings (analysis.findings): machines, protocol, each figure with its finding,
and the table of runs. The report owns the prose; the findings hold the numbers. The experiments' sections are
worded in their own modules (escape.py, tuning.py, saddle.py)."""

from __future__ import annotations

import math

import pandas as pd

from analysis import metrics
from analysis.escape import EscapeFinding
from analysis.findings import Findings, GridSaddle, Skipped
from analysis.report import saddle as saddle_section
from analysis.report.escape import escape_text
from analysis.report.escape import verdict_rows as escape_verdict_rows
from analysis.report.text import batch as _b
from analysis.report.text import fmt, table
from analysis.report.tuning import speed_vs_stability_text, tuning_text
from analysis.saddle import SaddleBenchmark
from analysis.tuning import TuningFinding

PROTOCOL_COLUMNS = {"experiment": "experiment", "profile": "profile", "train_size": "train size", "epochs": "epochs",
                    "activation": "activation", "dispatch.mode": "mode", "dispatch.backend": "backend"}


def provenance_section(runs: pd.DataFrame, bad_lines: list) -> str:
    """The files whose code version is dirty or unknown (their results cannot be rebuilt from a commit), and the
    records that were skipped."""
    parts = []
    flagged = {}
    for file, why in zip(runs["file"], runs["provenance"]):
        if isinstance(why, str):
            flagged.setdefault(file, set()).add(why)
    if flagged:
        parts.append("**Provenance:** results in " + "; ".join(
            f"`{file}` ({'; '.join(sorted(whys))})" for file, whys in flagged.items())
            + " cannot be rebuilt from a commit: rerun them from a clean tree to make them citable.")
    if bad_lines:
        parts.append(f"**{len(bad_lines)} record(s) skipped** (not a valid record of a known schema): "
                     + "; ".join(bad_lines[:5]) + ("; …" if len(bad_lines) > 5 else "") + ".")
    return "\n\n".join(parts) + "\n" if parts else ""


def machines_section(runs: pd.DataFrame, duplicates: int = 0) -> str:
    """Each result file with its own machine, run count and settings."""
    rows = (runs.groupby(["file", "machine"], observed=True, sort=False)
            .agg(runs=("schema", "size"), modes=("dispatch.mode", lambda s: ", ".join(dict.fromkeys(s))),
                 backend=("dispatch.backend", lambda s: ", ".join(dict.fromkeys(s))),
                 profiles=("profile", lambda s: ", ".join(dict.fromkeys(s))),
                 device=("dispatch.device", "first"), processes=("process", _processes),
                 tensorflow=("tensorflow", "first"),
                 gpu_reason=("gpu.reason", "first"))
            .reset_index())
    rows["gpu_reason"] = rows["gpu_reason"].fillna("")
    repeats = (f"\n{duplicates} run(s) in the files repeat a measurement already counted (same protocol, settings, "
               "cell, seed and machine: a run in both a benchmark JSON and its store, or reruns of an unstable cell); "
               "each cell is counted once, by its most stable attempt.\n" if duplicates else "")
    return "## Machines and files\n\n" + table(rows) + "\n" + repeats


def _processes(values) -> str:
    """Which processes a file's runs trained in (the record's `process`): 'one per round', 'the sweep's', or
    'the sweep's (not recorded)' for records from before the per-round processes."""
    names = {"round": "one per round", "sweep": "the sweep's"}
    return ", ".join(dict.fromkeys(names.get(v, "the sweep's (not recorded)") for v in values))


def protocol_section(runs: pd.DataFrame) -> str:
    keys = list(PROTOCOL_COLUMNS)
    prot = (runs.groupby(keys, observed=True)
            .agg(seeds=("seed", lambda s: ", ".join(map(str, sorted(set(s))))),
                 batch_sizes=("batch_label", lambda s: ", ".join(dict.fromkeys(
                     runs.loc[s.index].sort_values("batch_size")["batch_label"]))),
                 runs=("seed", "size"))
            .reset_index().rename(columns=PROTOCOL_COLUMNS))
    prot["target"] = [f"{t:.2f} {on} accuracy" for t, on in zip(*_targets(runs, keys, prot))]
    lrs = runs.groupby("optimizer", sort=False)["learning_rate"].first().reset_index()
    return ("## Protocol\n\n" + table(prot) + "\n\nLearning rates (fixed hyperparameters):\n\n" + table(lrs)
            + "\n\n" + TIMING_NOTE + "\n")


TIMING_NOTE = (
    "Every timing rests on independent repeats of its cell (each a fresh model instance, run in its own round of the "
    "sweep so that a slow spell of the host lands on different cells' repeats, each round in a fresh process of its "
    "own where *Machines and files* says `one per round`, so that what varies between processes, such as memory "
    "layout and thread placement, varies between repeats too; seeds count as repeats) and on the "
    "steady samples of each repeat: the epochs after the first (the first traces and compiles; its excess over the "
    "estimate is `compile s`), evaluation excluded. Noise on a shared host only adds time, so a repeat's estimate "
    "is its fastest sample, and a cell's estimate the geometric mean of its repeats' estimates, with Student's t "
    "95 % interval over the repeats on a log scale, leaving out a repeat disturbed as a whole (its estimate over "
    f"{metrics.DISTURBED:g} times the cell's fastest: see *Disturbed repeats*) (n = the repeats kept; its coverage "
    "is checked by simulation in "
    "tests/test_evidence.py). Ratios, slopes and knees within a sweep are computed per replicate (the runs of one "
    "seed and repeat, one round) with t over the replicates; between independent cells (two machines, two dispatch "
    "modes), Welch's t on the logs, or draws from each cell's t distribution for a median over optimizers. Where "
    "another sweep of the protocol will put a cell's estimate is the wider replication interval (half-width "
    "t·s·√(1/n + 1/m) for m repeats there; `python -m analysis replicate` holds two sweeps against it): a 95 % "
    "confidence interval holds another sweep's estimate only about 88 % of the time with 5 repeats a side. `time to "
    "target` is steady time: the epochs until the accuracy on the target's split (the validation split, the last "
    "10,000 training images, in every current profile) first reaches the profile's target, at the cell's estimate.")


def _targets(runs, keys, prot) -> tuple[list, list]:
    """Each protocol row's target and its split, as its records state them."""
    first = runs.drop_duplicates(keys).rename(columns=PROTOCOL_COLUMNS)
    merged = prot.merge(first[[PROTOCOL_COLUMNS[k] for k in keys] + ["target_accuracy", "target_on"]],
                        on=[PROTOCOL_COLUMNS[k] for k in keys], how="left")
    return list(merged["target_accuracy"]), list(merged["target_on"])


def verdicts_section(f: Findings) -> str:
    """Each claim's verdict in each machine and dispatch mode, and the interval that decided it."""
    rows = []
    for c in f.claims:
        for key, name, v in (("1", "1: a batch-10 update costs about as much as a batch-1 update", c.claim1),
                             ("2", "2: flat up to a knee, then time per update grows with the batch", c.claim2)):
            if v is not None:
                at = c.sensitivity.get(key, {})
                rows.append({"claim": name, "setting": f"{c.machine} ({c.device}), {c.backend}, {c.mode}",
                             "verdict": f"**{v.outcome}**" + (" (on a CPU: the claim is about a GPU)"
                                                             if c.device == "CPU" else ""),
                             "decided by (95% interval)": v.decided_by(),
                             "at half / double the threshold": " / ".join(f"{o} ({t:g})" for t, o in at.items())})
    if isinstance(f.escape, EscapeFinding):
        rows += escape_verdict_rows(f.escape)
    if not rows:
        return ""
    modes = "; ".join(f"`{c.mode}` measures {c.measures}" for c in {c.mode: c for c in f.claims}.values())
    return ("## Verdicts\n\n" + table(pd.DataFrame(rows).fillna("")) + "\n\nA claim is supported when the whole "
            "interval lies on its side of the threshold, contradicted when it lies on the other side, not determined "
            "when it straddles it or there is no interval (fewer than two independent repeats). Claim 2 tests both "
            "halves: the slope between the two smallest batch sizes must lie below the knee's slope (flat) and the "
            "steepest slope above it (growth); a cost growing from the smallest batch on contradicts it. Each verdict "
            "is repeated at half and at double its threshold (claim 1: half and double the 0.5 excess over 1)."
            + (f" Timings are judged per setting (machine, backend, dispatch mode): {modes}." if modes else "")
            + "\n")


def unstable_section(f: Findings) -> str:
    u = f.unstable
    if u is None or u.empty:
        return ""
    rows = u.assign(mode=u["dispatch.mode"], backend=u["dispatch.backend"], slow=u["slow_causes"].fillna("–"))[
        ["machine", "backend", "mode", "optimizer", "batch_label", "slow", "unstable_reason"]]
    counts = {}
    for text in u["slow_causes"].dropna():
        for part in text.split(", "):
            n, cause = part.split(" ", 1)
            counts[cause] = counts.get(cause, 0) + int(n)
    causes = ", ".join(f"{n} {c}" for c, n in counts.items()) or "none measured"
    return (f"## Unstable timings ({len(u)} of {len(f.by_mode)} cells)\n\nA repeat is unstable when its steady "
            "samples spread more than 10 % around their median (1.4826 x median absolute deviation / median: one slow "
            "sample among five does not move it), when it has fewer than 5 of them, or when its estimate is slower "
            "than its compile epoch. Each sample more than 10 % above its repeat's estimate is attributed from its own "
            "measurements: `gc` (Python's garbage collector ran for at least half the excess), `host` (the host's "
            "steal time or other processes' CPU time covers half of it), `process` (this process spent that much "
            "more CPU time: its own or the framework's extra work) or `unexplained`. The slow samples of these "
            f"cells: {causes}. Drawn hollow in the figures; measure them again with `--rerun-unstable N`, or by node "
            "id.\n\n" + table(rows.rename(columns={"batch_label": "batch", "slow": "slow samples",
                                                    "unstable_reason": "why"})) + "\n")


def disturbed_section(f: Findings) -> str:
    """The runs left out as disturbed as a whole (metrics.DISTURBED), per cell."""
    cells = f.by_mode
    if cells is None or "disturbed_runs" not in cells or not cells["disturbed_runs"].sum():
        return ""
    d = cells[cells["disturbed_runs"] > 0]
    rows = d.assign(mode=d["dispatch.mode"], backend=d["dispatch.backend"],
                    runs=[f"{k} of {len(a)}: {', '.join(f'{x:.4g}' for x in a if x)} s" for k, a in
                          zip(d["disturbed_runs"], d["all_epoch_s"])])[
        ["machine", "backend", "mode", "optimizer", "batch_label", "runs"]]
    return (f"## Disturbed repeats ({int(d['disturbed_runs'].sum())} runs of {len(d)} of {len(cells)} cells)\n\n"
            f"A repeat whose estimate is more than {metrics.DISTURBED:g} times its cell's fastest repeat was disturbed "
            "as a whole (on these shared VMs whole repeats ran up to 5 times slower, the process's own CPU time inflated "
            "in step, with no steal and no other process: a neighbour on the host), so no sample of it is a "
            "measurement. It is left out of its cell's estimate and interval (n counts the rest) and out of its round "
            "in the statistics per replicate.\n\n"
            + table(rows.rename(columns={"batch_label": "batch", "runs": "disturbed: the repeats' estimates"}))
            + "\n")


def epoch_time_text(f) -> str:
    parts = []
    for c in f.claims:
        speedups = ", ".join(f"{b}: {i.text('.2g', 'x')}" for b, i in c.speedups.items() if b != "1")
        if not c.speedups:
            parts.append(f"In {c.label(f.machines)} no batch-1 cell ran: no speed-up over batch 1 to show.")
            continue
        parts.append(f"In {c.label(f.machines)} ({c.measures}) an epoch at batch 10 is "
                     f"**{c.speedup_bs10.text('.2g', 'x')}** faster than at batch 1 (median over optimizers); by "
                     f"batch size: {speedups}.")
    return "\n\n".join(parts) + "\n\nThe lecture's GTX 980: 166 s / 17 s = 9.8x."


def _knees(c) -> str:
    def one(opt, k, lo, hi):
        spread = "" if (lo, hi) == (None, None) else f" (replicates: {_b(lo)} to {_b(hi)})"
        return f"{opt} {_b(k) if k is not None else 'none in the grid'}{spread}"

    return ", ".join(one(*k) for k in c.knees) or "none"


def time_per_update_text(f) -> str:
    parts = []
    for c in f.claims:
        text = (f"**{c.label(f.machines)}** ({c.measures}): one update at batch 10 costs "
                f"{c.cost_bs10.text('.3g', 'x')} one at batch 1, at batch 100 {c.cost_bs100.text('.3g', 'x')} "
                "(median over optimizers).")
        if c.claim1 is not None:
            text += f" Claim 1 is {c.claim1.text()}."
        if c.claim2 is not None:
            text += f" Claim 2 is {c.claim2.text()}."
        parts.append(text + " Knee (smallest batch after which time per update grows at least as the square root "
                            f"of the batch): {_knees(c)}.")
    out = "\n\n".join(parts)
    n = f.noise
    if n:
        out += (f"\n\nGradient noise scale B_simple (McCandlish et al., on the probe set; {n.where}): median "
                f"{n.first:.3g} at the first probe, {n.last:.3g} at the last, {n.low:.3g} to {n.high:.3g} over "
                "training; their published value for MNIST is about 900. B_simple is the batch size beyond which a "
                "bigger batch stops saving updates; the knee is where a bigger batch stops being free on this "
                "hardware: below both, growing the batch is pure gain.")
    return out


def grid_saddle_text(f: GridSaddle) -> str:
    stuck = (f"Batch {', '.join(f.stuck)} ended within 5% of ln 10 = {math.log(10):.2f}, the loss of a uniform "
             "guess: still on the initial plateau. " if f.stuck else
             f"No batch size ended on the initial plateau (loss ln 10 = {math.log(10):.2f}). ")
    return (f"{f.optimizer} after the same number of epochs: final training loss "
            + ", ".join(f"batch {b} {fmt(loss, '.3f')} (test accuracy {fmt(f.final_accuracy.get(b), '.3f')})"
                        for b, loss in f.final_loss.items())
            + ". " + stuck
            + ("" if f.has_plateau_records else
               "Whether a plateau is a saddle or a minimum needs the curvature probes, which these records do not hold."))


def saddle_text(f) -> str:
    if isinstance(f, SaddleBenchmark):
        return "From the saddle benchmark (bench/experiments/saddle.py). " + saddle_section.text(f)
    return grid_saddle_text(f[0])


def gpu_text(f) -> str:
    energy = ", ".join(f"batch {b}: {j:.3g} J" for b, j in f.energy_per_epoch_j.items()) or "not measured"
    target = ", ".join(f"batch {b}: {j:.3g} J" for b, j in f.energy_to_target_j.items()) or "no cell reached it"
    return (f"Sampled during the steady epochs only. Energy of a steady epoch (median over optimizers): {energy}. "
            f"Energy to the target accuracy (steady epochs): {target}.")


def machines_text(f) -> str:
    return (f"Epoch time relative to {f.baseline} (median over optimizers, 95% interval, below 1 = faster): "
            + "; ".join(f"{m}: " + ", ".join(f"batch {b:,} {r.text('.3g', 'x')}" for b, r in ratio.items())
                        for m, ratio in f.ratios.items()) + ".")


def efficiency_text(f) -> str:
    process = f" (the process's own peak over the sweep: {f.process_peak_mib:,.0f} MiB)" if f.process_peak_mib else ""
    memory = ", ".join(f"{b:,}: {m:,.0f} MiB" for b, m in f.memory_mib.items()) or "not measured"
    return (f"Measured matmul peak: {f.peak_gflops:.0f} GFLOP/s (float32, the device the runs trained on). Achieved "
            "share of it by batch size (median over optimizers): " + ", ".join(f"{b:,}: {p:.2g}%" for b, p in f.pct.items())
            + f". A run's own peak host memory above what the process held when it started, by batch size (max over "
              f"optimizers): {memory}{process}.")


def dispatch_text(f) -> str:
    out = ("Time per update, default vs fast (median over optimizers, 95% interval of the ratio): " + ", ".join(
        f"batch {b:,}: {f.ms[b][0]:.3g} vs {f.ms[b][1]:.3g} ms ({r.text('.3g', 'x')})" for b, r in f.ratio.items())
        + ". The difference is Keras' per-step host work (dispatch, the data iterator, callbacks' bookkeeping) that "
        "`fast` removes.")
    if f.fast_pct:
        out += (" With `fast`, the achieved share of the matmul peak (median over optimizers) is "
                + ", ".join(f"{b:,}: {p:.2g}%" for b, p in f.fast_pct.items())
                + (f"; a run's own peak host memory up to {f.fast_memory_mib:,.0f} MiB" if f.fast_memory_mib else "")
                + ".")
    return out


def learning_curves_text(f) -> str:
    return (f"Mean final {f.split} accuracy over optimizers by batch size: "
            + ", ".join(f"{b}: {fmt(a, '.3f')}" for b, a in f.final_by_batch.items()) + ".")


RUN_COLUMNS = {"machine": "machine", "dispatch.mode": "mode", "budget": "budget", "optimizer": "optimizer",
               "batch_label": "batch", "learning_rate": "lr", "seed": "seed", "status": "status", "epoch_time_s": "epoch s",
               "spread": "spread", "compile_s": "compile s", "time_per_update_s": "s/update",
               "test_accuracy": "test acc", "time_to_target_s": "time to target s", "loss_noise": "loss noise"}


def runs_table(runs: pd.DataFrame) -> str:
    """Every run, one table per protocol; a timing marked * is unstable."""
    out = []
    runs = runs.assign(budget=runs["budget"].fillna("epochs (grid)"))
    for _, group in runs.groupby([*PROTOCOL_COLUMNS], observed=True, sort=False):
        t = (group.sort_values(["machine", "optimizer", "batch_size", "seed"])[list(RUN_COLUMNS)]
             .rename(columns=RUN_COLUMNS))
        for c in ("epoch s", "compile s", "s/update", "test acc", "time to target s", "loss noise"):
            t[c] = t[c].map(lambda v: fmt(v, ".4g"))
        t["spread"] = t["spread"].map(lambda v: fmt(v, ".0%"))
        t["epoch s"] = [e + (" *" if u else "") for e, u in zip(t["epoch s"], group.sort_values(
            ["machine", "optimizer", "batch_size", "seed"])["unstable"])]
        out.append(f"### {metrics.protocol_label(group.iloc[0])}\n\n" + table(t))
    return ("\n\n".join(out) + "\n\n`*`: unstable timing (see *Unstable timings*); epoch s: the run's estimate, its "
            "fastest steady epoch; spread: its steady samples' 1.4826 x MAD / median.")


SECTIONS = (  # figure key, section title, the finding's text
    ("epoch_time", "1. Epoch time vs batch size (the lecture's speed slide)", epoch_time_text),
    ("time_per_update", "2. Time per update vs batch size", time_per_update_text),
    ("speed_vs_stability", "3. Speed vs stability", speed_vs_stability_text),
    ("saddle", "4. Loss and gradient norm per update (saddle points)", saddle_text),
    ("learning_curves", "5. Learning curves", learning_curves_text),
    ("gpu", "6. GPU utilisation, power and energy", gpu_text),
    ("machines", "7. Machines side by side", machines_text),
    ("efficiency", "8. Efficiency against the machine's own peak", efficiency_text),
    ("dispatch", "9. Framework dispatch: default vs fast", dispatch_text),
    ("escape", "10. Escaping certified saddles (claim 3)", escape_text),
    ("steps_to_target", "11. Tuned learning rates: steps and time to target", tuning_text),
)


def _figure_line(title: str, drawn) -> str:
    return f"![{title}]({drawn})\n" if isinstance(drawn, str) else f"_Not drawn: {drawn.reason}_\n"


def render_saddle_only(f: Findings, figures: dict) -> str:
    """The report of files that hold no finished run of the grid: the experiments' runs (saddle benchmark, escape,
    tuning), or a sweep in which nothing finished (then it says why nothing was timed)."""
    saddle = isinstance(f.escape, EscapeFinding) or isinstance(f.saddle, SaddleBenchmark)
    tuning = isinstance(f.tuning, TuningFinding)
    grid = f.runs[f.runs["experiment"] == "grid"]
    if len(grid):
        return "\n".join(p for p in [
            "# mnist-mlp-bench report\n",
            f"Nothing was timed: {f.epoch_time.reason}. Generated by `python -m analysis report`.\n",
            machines_section(f.runs, f.duplicates), provenance_section(f.runs, f.bad_lines),
            "## Runs that did not finish\n\n" + table(grid[["machine", "optimizer", "batch_label", "seed", "repeat",
                                                              "status", "error"]]) + "\n",
            "## All runs\n\n" + runs_table(f.runs) + "\n"] if p)
    intro = ("Plain SGD and the lecture network (sigmoid), probed between intervals (the probe set's loss and "
             "gradient, Hessian extremes by ARPACK's Lanczos) for the lecture's claim 3: a full batch stalls at "
             "saddle points where minibatch noise escapes them. " if saddle else
             "Learning rates tuned per optimizer and batch size on a validation split, and what tuning changes. "
             if tuning else "The experiments' runs in these files. ")
    parts = [f"# mnist-mlp-bench {'saddle points' if saddle else 'tuning' if tuning else 'experiments'}\n",
             intro + "Generated by `python -m analysis report`.\n",
             machines_section(f.runs, f.duplicates), provenance_section(f.runs, f.bad_lines), verdicts_section(f)]
    if isinstance(f.escape, EscapeFinding):
        parts += ["## The escape experiment\n", _figure_line("Escaping certified saddles", figures.get("escape")),
                  escape_text(f.escape) + "\n"]
    if isinstance(f.tuning, TuningFinding):
        parts += ["## The tuning experiment\n", _figure_line("Steps to target", figures.get("steps_to_target")),
                  tuning_text(f.tuning) + "\n", "## Speed vs stability at tuned rates\n",
                  _figure_line("Speed vs stability", figures.get("speed_vs_stability")),
                  speed_vs_stability_text(f.tuning) + "\n"]
    if isinstance(f.saddle, SaddleBenchmark):
        parts += ["## The saddle benchmark\n", _figure_line("Saddle points", figures.get("saddle")),
                  saddle_section.text(f.saddle) + "\n"]
    parts.append(other_experiments_section(f))
    return "\n".join(p for p in parts + ["## All runs\n\n" + runs_table(f.runs) + "\n"] if p)


def other_experiments_section(f: Findings) -> str:
    """Experiments this report has no section of its own for (a plugin's): what ran, by the records."""
    o = f.other_runs
    if o is None or o.empty:
        return ""
    rows = (o.groupby(["experiment", "profile"], sort=False)
            .agg(runs=("seed", "size"), finished=("status", lambda s: int((s == "ok").sum())),
                 optimizers=("optimizer", lambda s: ", ".join(dict.fromkeys(s))),
                 batch_sizes=("batch_label", lambda s: ", ".join(dict.fromkeys(s))))
            .reset_index())
    return ("## Other experiments\n\nRuns of experiments this report has no section for, as their records state them "
            "(each run is also in *All runs*):\n\n" + table(rows) + "\n")


def render(f: Findings, figures: dict) -> str:
    """The whole REPORT.md; `figures` maps a figure key to its file name, or to a Skipped with the reason."""
    if f.summary is None:
        return render_saddle_only(f, figures)
    runs = f.runs
    failed = runs[runs["status"] != "ok"]
    parts = [
        "# mnist-mlp-bench report\n",
        "How batch size and optimizer trade training speed against stability: the lecture's MLP "
        "(784-500-500-10) on MNIST, measured on the machines below. Generated by `python -m analysis report`; "
        "every number comes from the result files listed.\n",
        machines_section(runs, f.duplicates),
        provenance_section(runs, f.bad_lines),
        protocol_section(runs),
        verdicts_section(f),
        unstable_section(f),
        disturbed_section(f),
    ]
    if len(failed):
        parts.append("## Runs that did not finish\n\n" + table(failed[["machine", "optimizer", "batch_label", "seed",
                                                                        "status", "error"]]) + "\n")
    for key, title, text in SECTIONS:
        parts.append(f"## {title}\n")
        drawn = figures.get(key)
        parts.append(_figure_line(title, drawn))
        finding = getattr(f, {"steps_to_target": "tuning"}.get(key, key))
        if isinstance(drawn, str) and text is not None and not isinstance(finding, Skipped):
            parts.append(text(finding) + "\n")
    parts.append(other_experiments_section(f))
    parts.append("## All runs\n\n" + runs_table(runs) + "\n")
    return "\n".join(p for p in parts if p)
