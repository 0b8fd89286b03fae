"""REPORT.md, rendered from the findings (analysis.findings): machines, protocol, each figure with its finding,
and the table of runs. Nothing is computed here that a figure or another section also needs."""

from __future__ import annotations

import math

import pandas as pd

from analysis import metrics
from analysis import saddle as S
from analysis.findings import Findings, GridSaddle, SaddleBenchmark, Skipped


def fmt(x, spec=".3g", none="–"):
    return none if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False)


def machines_section(runs: pd.DataFrame) -> str:
    rows = (runs.groupby("machine", observed=True)
            .agg(file=("file", "first"), tensorflow=("tensorflow", "first"), runs=("schema", "size"),
                 device=("dispatch.device", "first"), jit_compile=("dispatch.jit_compile", "first"),
                 gpu_reason=("gpu.reason", "first"))
            .reset_index())
    rows["gpu_reason"] = rows["gpu_reason"].fillna("")
    return "## Machines\n\n" + table(rows) + "\n"


def protocol_section(runs: pd.DataFrame) -> str:
    prot = (runs.groupby(["profile", "train_size", "epochs", "activation"], observed=True)
            .agg(seeds=("seed", lambda s: ", ".join(map(str, sorted(set(s))))),
                 batch_sizes=("batch_label", lambda s: ", ".join(dict.fromkeys(
                     runs.loc[s.index].sort_values("batch_size")["batch_label"]))),
                 runs=("seed", "size"))
            .reset_index())
    prot["target_accuracy"] = prot["profile"].map(metrics.target_for)
    lrs = runs.groupby("optimizer", sort=False)["learning_rate"].first().reset_index()
    return ("## Protocol\n\n" + table(prot) + "\n\nLearning rates (fixed hyperparameters):\n\n" + table(lrs)
            + "\n\nTimes are steady-state: the median of every epoch after the first (which includes "
              "tracing); evaluation is excluded. `time to target` is the cumulative training time to the "
              "end of the first epoch whose test accuracy reaches the profile's target.\n")


def epoch_time_text(f) -> str:
    return (f"Median over optimizers, an epoch at batch 10 is **{fmt(f.speedup_bs10, '.1f')}x** faster than at batch "
            f"1 here (the lecture's GTX 980: 166 s / 17 s = 9.8x). Speed-up over batch 1 by batch size: "
            + ", ".join(f"{b}: {fmt(s, '.1f')}x" for b, s in f.speedups.items()) + ".")


def time_per_update_text(f) -> str:
    knees = ", ".join(f"{o} {k:,}" for o, k in f.knees) if f.knees else "none within the grid"
    out = (f"One update at batch 10 costs **{fmt(f.cost_bs10, '.2f')}x** one at batch 1, at batch 100 "
           f"**{fmt(f.cost_bs100, '.2f')}x** (medians over optimizers). Claim 1 (a batch of 10 costs about as much "
           f"as a batch of 1) {'holds' if f.claim1_holds else 'does not hold'} on this hardware. Knee (smallest "
           f"batch after which time per update grows at least as the square root of the batch): {knees}.")
    n = f.noise
    if n:
        out += (f" Gradient noise scale B_simple (McCandlish et al., on the probe set; {n.where}): median "
                f"{n.first:.3g} at the first probe, {n.last:.3g} at the last, {n.low:.3g} to {n.high:.3g} over "
                "training; their published value for MNIST is about 900. B_simple is the batch size beyond which a "
                "bigger batch stops saving updates; the knee is where a bigger batch stops being free on this "
                "hardware: below both, growing the batch is pure gain.")
    return out


def speed_vs_stability_text(f) -> str:
    if f.fastest:
        opt, batch, seconds = f.fastest
        reach = (f"{f.reached} of {f.cells} cells reached the target test accuracy ({f.targets}); fastest: "
                 f"{opt} at batch {batch} in {seconds:.1f} s.")
    else:
        reach = f"No cell reached the target test accuracy ({f.targets})."
    spread = (f" Largest spread of final accuracy over seeds: {f.max_spread:.3f}." if f.max_seeds > 1
              else " One seed per cell: run with `--seeds 0,1,2` to measure the spread.")
    return (f"Highest final test accuracy: {f.best_optimizer} at batch {f.best_batch}, {f.best_accuracy:.3f} after "
            f"{f.best_train_time_s:.1f} s of training. " + reach + spread)


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
        return "From the saddle benchmark (bench/test_saddle.py). " + f.text
    return grid_saddle_text(f[0])


def machines_text(f) -> str:
    return (f"Epoch time relative to {f.baseline} (median over optimizers, below 1 = faster): "
            + "; ".join(f"{m}: " + ", ".join(f"batch {b:,} {r:.2f}x" for b, r in ratio.items())
                        for m, ratio in f.ratios.items()) + ".")


def efficiency_text(f) -> str:
    return (f"Measured matmul peak: {f.peak_gflops:.0f} GFLOP/s (float32, the device the runs trained on). Achieved "
            "share of it by batch size (median over optimizers): " + ", ".join(f"{b:,}: {p:.2g}%" for b, p in f.pct.items())
            + ". Peak host memory of a run by batch size (max over optimizers): "
            + ", ".join(f"{b:,}: {m:,.0f} MiB" for b, m in f.memory_mib.items()) + ".")


def dispatch_text(f) -> str:
    out = ("Time per update, default vs fast (median over optimizers): " + ", ".join(
        f"batch {b:,}: {f.ms[b][0]:.3g} vs {f.ms[b][1]:.3g} ms ({r:.2f}x)" for b, r in f.ratio.items())
        + ". The difference is Keras' per-step host work (dispatch, the data iterator, callbacks' bookkeeping) that "
        "`fast` removes.")
    if f.fast_pct:
        out += (" With `fast`, the achieved share of the matmul peak (median over optimizers) is "
                + ", ".join(f"{b:,}: {p:.2g}%" for b, p in f.fast_pct.items())
                + f"; peak host memory up to {f.fast_memory_mib:,.0f} MiB.")
    return out


def learning_curves_text(f) -> str:
    return ("Mean final test accuracy over optimizers by batch size: "
            + ", ".join(f"{b}: {fmt(a, '.3f')}" for b, a in f.final_by_batch.items()) + ".")


def runs_table(runs: pd.DataFrame) -> str:
    cols = {"machine": "machine", "optimizer": "optimizer", "batch_label": "batch", "seed": "seed",
            "status": "status", "epoch_time_s": "epoch s", "time_per_update_s": "s/update",
            "examples_per_s": "examples/s", "test_accuracy": "test acc", "time_to_target_s": "time to target s",
            "loss_noise": "loss noise"}
    t = runs.sort_values(["machine", "optimizer", "batch_size", "seed"])[list(cols)].rename(columns=cols)
    for c in ("epoch s", "s/update", "examples/s", "test acc", "time to target s", "loss noise"):
        t[c] = t[c].map(lambda v: fmt(v, ".4g"))
    return table(t)


SECTIONS = (  # figure key, section title, the finding's text
    ("epoch_time", "1. Epoch time vs batch size (the lecture's speed slide)", epoch_time_text),
    ("time_per_update", "2. Time per update vs batch size", time_per_update_text),
    ("speed_vs_stability", "3. Speed vs stability", speed_vs_stability_text),
    ("saddle", "4. Loss and gradient norm per update (saddle points)", saddle_text),
    ("learning_curves", "5. Learning curves", learning_curves_text),
    ("gpu", "6. GPU utilisation and power", None),
    ("machines", "7. Machines side by side", machines_text),
    ("efficiency", "8. Efficiency against the machine's own peak", efficiency_text),
    ("dispatch", "9. Framework dispatch: default vs fast", dispatch_text),
)


def _figure_line(title: str, drawn) -> str:
    return f"![{title}]({drawn})\n" if isinstance(drawn, str) else f"_Not drawn: {drawn.reason}_\n"


def render_saddle_only(f: Findings, figures: dict) -> str:
    saddle = f.saddle
    return "\n".join([
        "# mnist-mlp-bench saddle benchmark\n",
        "Plain SGD from batch 1 to the full batch, for the same number of epochs and for the same number of "
        "updates; each run probed between its intervals (full-batch gradient norm, noise scale) and at each "
        "plateau and its end (Hessian extremes by Lanczos). Generated by `python -m analysis report`.\n",
        machines_section(f.runs),
        "## Saddle points\n",
        f"![Saddle points]({figures['saddle']})\n" if isinstance(figures.get("saddle"), str) else "",
        (saddle.text if isinstance(saddle, SaddleBenchmark) else S.text(f.runs)) + "\n",
        "## All runs\n\n" + runs_table(f.runs) + "\n",
    ])


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
        machines_section(runs),
        protocol_section(runs),
    ]
    if len(failed):
        parts.append("## Runs that did not finish\n\n" + table(failed[["machine", "optimizer", "batch_label", "seed",
                                                                        "status", "error"]]) + "\n")
    for key, title, text in SECTIONS:
        parts.append(f"## {title}\n")
        drawn = figures.get(key)
        parts.append(_figure_line(title, drawn))
        finding = getattr(f, key)
        if isinstance(drawn, str) and text is not None and not isinstance(finding, Skipped):
            parts.append(text(finding) + "\n")
    parts.append("## All runs\n\n" + runs_table(runs) + "\n")
    return "\n".join(parts)
