"""REPORT.md: machines, protocol, each figure with a finding computed from the data, and the table of runs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import metrics


def _fmt(x, spec=".3g", none="–"):
    return none if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _table(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False)


def machines_section(runs: pd.DataFrame) -> str:
    rows = (runs.groupby("machine", observed=True)
            .agg(file=("file", "first"), tensorflow=("tensorflow", "first"), runs=("schema", "size"),
                 device=("dispatch.device", "first"), jit_compile=("dispatch.jit_compile", "first"),
                 gpu_reason=("gpu.reason", "first"))
            .reset_index())
    rows["gpu_reason"] = rows["gpu_reason"].fillna("")
    return "## Machines\n\n" + _table(rows) + "\n"


def protocol_section(runs: pd.DataFrame) -> str:
    prot = (runs.groupby(["profile", "train_size", "epochs", "activation"], observed=True)
            .agg(seeds=("seed", lambda s: ", ".join(map(str, sorted(set(s))))),
                 batch_sizes=("batch_label", lambda s: ", ".join(dict.fromkeys(
                     runs.loc[s.index].sort_values("batch_size")["batch_label"]))),
                 runs=("seed", "size"))
            .reset_index())
    prot["target_accuracy"] = prot["profile"].map(metrics.target_for)
    lrs = runs.groupby("optimizer", sort=False)["learning_rate"].first().reset_index()
    return ("## Protocol\n\n" + _table(prot) + "\n\nLearning rates (fixed hyperparameters):\n\n" + _table(lrs)
            + "\n\nTimes are steady-state: the median of every epoch after the first (which includes "
              "tracing); evaluation is excluded. `time to target` is the cumulative training time to the "
              "end of the first epoch whose test accuracy reaches the profile's target.\n")


def findings(runs: pd.DataFrame, summary: pd.DataFrame, knee_table: pd.DataFrame) -> dict:
    """One short paragraph per figure, numbers filled in from the data."""
    out = {}
    runs = runs[runs["budget"].isna()]  # the saddle benchmark's runs have their own finding
    modes = list(dict.fromkeys(runs["dispatch.mode"]))
    runs = runs[runs["dispatch.mode"] == ("default" if "default" in modes else modes[0])]
    sp10 = metrics.median_at(summary, "epoch_speedup_vs_bs1", 10)
    sp_all = summary.groupby("batch_label", sort=False)["epoch_speedup_vs_bs1"].median()
    order = summary.sort_values("batch_size")["batch_label"].unique()
    out["epoch_time"] = (
        f"Median over optimizers, an epoch at batch 10 is **{_fmt(sp10, '.1f')}x** faster than at batch 1 here "
        f"(the lecture's GTX 980: 166 s / 17 s = 9.8x). Speed-up over batch 1 by batch size: "
        + ", ".join(f"{b}: {_fmt(sp_all.get(b), '.1f')}x" for b in order) + ".")
    c10, c100 = metrics.median_at(summary, "update_cost_vs_bs1", 10), metrics.median_at(summary, "update_cost_vs_bs1", 100)
    kn = knee_table.dropna(subset=["knee_batch_size"])
    knee_text = (", ".join(f"{r.optimizer} {int(r.knee_batch_size):,}" for r in kn.itertuples())
                 if len(kn) else "none within the grid")
    out["time_per_update"] = (
        f"One update at batch 10 costs **{_fmt(c10, '.2f')}x** one at batch 1, at batch 100 "
        f"**{_fmt(c100, '.2f')}x** (medians over optimizers). Claim 1 (a batch of 10 costs about as much as "
        f"a batch of 1) {'holds' if c10 < 1.5 else 'does not hold'} on this hardware. Knee (smallest batch "
        f"after which time per update grows at least as the square root of the batch): {knee_text}.")
    best = summary.loc[summary["test_accuracy"].idxmax()]
    reached = summary.dropna(subset=["time_to_target_s"])
    target = ", ".join(f"{p} {metrics.target_for(p):.2f}" for p in summary["profile"].unique())
    if len(reached):
        fastest = reached.loc[reached["time_to_target_s"].idxmin()]
        reach = (f"{len(reached)} of {len(summary)} cells reached the target test accuracy ({target}); fastest: "
                 f"{fastest['optimizer']} at batch {fastest['batch_label']} in {fastest['time_to_target_s']:.1f} s.")
    else:
        reach = f"No cell reached the target test accuracy ({target})."
    spread = summary["test_accuracy_max"] - summary["test_accuracy_min"]
    spread_text = (f" Largest spread of final accuracy over seeds: {spread.max():.3f}." if summary["seeds"].max() > 1
                   else " One seed per cell: run with `--seeds 0,1,2` to measure the spread.")
    out["speed_vs_stability"] = (
        f"Highest final test accuracy: {best['optimizer']} at batch {best['batch_label']}, "
        f"{best['test_accuracy']:.3f} after {best['train_time_s']:.1f} s of training. " + reach + spread_text)
    plain = runs[runs["optimizer"] == ("sgd" if "sgd" in set(runs["optimizer"]) else runs["optimizer"].iloc[0])]
    by_b = plain.groupby("batch_label", sort=False)["train_loss"].median()
    acc_b = plain.groupby("batch_label", sort=False)["test_accuracy"].median()
    chance_loss = math.log(10)  # the cross-entropy of a uniform guess over 10 classes
    stuck = [b for b in order if b in by_b.index and abs(by_b[b] - chance_loss) / chance_loss < 0.05]
    out["saddle"] = (
        f"{plain['optimizer'].iloc[0]} after the same number of epochs: final training loss "
        + ", ".join(f"batch {b} {_fmt(by_b.get(b), '.3f')} (test accuracy {_fmt(acc_b.get(b), '.3f')})"
                    for b in order if b in by_b.index)
        + ". " + (f"Batch {', '.join(stuck)} ended within 5% of ln 10 = {chance_loss:.2f}, the loss of a uniform "
                  "guess: still on the initial plateau. " if stuck else "No batch size ended on the initial "
                  f"plateau (loss ln 10 = {chance_loss:.2f}). ")
        + ("" if runs["plateaus"].map(bool).any() else
           "Whether a plateau is a saddle or a minimum needs the curvature probes, which these records do not hold."))
    saddle = summary.attrs.get("saddle")
    if saddle is not None and len(saddle):
        out["saddle"] = "From the saddle benchmark (bench/test_saddle.py). " + saddle_findings(saddle)
    source, where = runs, "these runs"
    if not any(vs for vs in runs["noise_scale_by_epoch"]) and saddle is not None and len(saddle):
        source, where = saddle[saddle["status"] == "ok"], "the saddle benchmark's runs"
    series = [[v for v in vs if v is not None] for vs in source["noise_scale_by_epoch"] if vs]
    series = [vs for vs in series if vs]
    if series:
        allv = [v for vs in series for v in vs]
        out["time_per_update"] += (
            f" Gradient noise scale B_simple (McCandlish et al., on the probe set; {where}): median "
            f"{np.median([vs[0] for vs in series]):.3g} at the first probe, {np.median([vs[-1] for vs in series]):.3g} "
            f"at the last, {np.min(allv):.3g} to {np.max(allv):.3g} over training; their published value for MNIST "
            "is about 900. B_simple is the batch size beyond which a bigger batch stops saving updates; the knee "
            "is where a bigger batch stops being free on this hardware: below both, growing the batch is "
            "pure gain.")
    machines = [m for m in dict.fromkeys(summary["machine"])]
    if len(machines) > 1:
        base = summary[summary["machine"] == machines[0]].set_index(["optimizer", "batch_size"])["epoch_time_s"]
        parts = []
        for m in machines[1:]:
            mine = summary[summary["machine"] == m].set_index(["optimizer", "batch_size"])["epoch_time_s"]
            ratio = (mine / base).dropna().groupby(level="batch_size").median()
            parts.append(f"{m}: " + ", ".join(f"batch {b:,} {r:.2f}x" for b, r in ratio.items()))
        out["machines"] = (f"Epoch time relative to {machines[0]} (median over optimizers, below 1 = faster): "
                           + "; ".join(parts) + ".")
    eff = summary.dropna(subset=["peak_fraction"])
    if len(eff):
        pct = eff.groupby("batch_size")["peak_fraction"].median() * 100
        mem = summary.groupby("batch_size")["host_memory_peak_mib"].max()
        peak = float((eff["achieved_gflops"] / eff["peak_fraction"]).median())
        out["efficiency"] = (
            f"Measured matmul peak: {peak:.0f} GFLOP/s (float32, the device the runs trained on). Achieved share "
            "of it by batch size (median over optimizers): " + ", ".join(f"{b:,}: {p:.2g}%" for b, p in pct.items())
            + ". Peak host memory of a run by batch size (max over optimizers): "
            + ", ".join(f"{b:,}: {m:,.0f} MiB" for b, m in mem.dropna().items()) + ".")
    both = summary.attrs.get("by_dispatch")
    if both is not None and {"default", "fast"} <= set(both["dispatch.mode"]):
        wide = both.pivot_table(index=["machine", "optimizer", "batch_size"], columns="dispatch.mode",
                                values="time_per_update_s", observed=True).dropna()
        ratio = (wide["default"] / wide["fast"]).groupby(level="batch_size").median()
        ms = (wide * 1000).groupby(level="batch_size").median()
        out["dispatch"] = ("Time per update, default vs fast (median over optimizers): " + ", ".join(
            f"batch {b:,}: {ms.loc[b, 'default']:.3g} vs {ms.loc[b, 'fast']:.3g} ms ({r:.2f}x)"
            for b, r in ratio.items()) + ". The difference is Keras' per-step host work (dispatch, the data "
            "iterator, callbacks' bookkeeping) that `fast` removes.")
        fast = both[both["dispatch.mode"] == "fast"].dropna(subset=["peak_fraction"])
        if len(fast):
            pct = fast.groupby("batch_size")["peak_fraction"].median() * 100
            mem = fast.groupby("batch_size")["host_memory_peak_mib"].max()
            out["dispatch"] += (" With `fast`, the achieved share of the matmul peak (median over optimizers) is "
                                + ", ".join(f"{b:,}: {p:.2g}%" for b, p in pct.items())
                                + f"; peak host memory up to {mem.max():,.0f} MiB.")
    fin = runs.groupby("batch_label", sort=False)["test_accuracy"].mean()
    out["learning_curves"] = ("Mean final test accuracy over optimizers by batch size: "
                              + ", ".join(f"{b}: {_fmt(fin.get(b), '.3f')}" for b in order if b in fin.index) + ".")
    return out


def runs_table(runs: pd.DataFrame) -> str:
    cols = {"machine": "machine", "optimizer": "optimizer", "batch_label": "batch", "seed": "seed",
            "status": "status", "epoch_time_s": "epoch s", "time_per_update_s": "s/update",
            "examples_per_s": "examples/s", "test_accuracy": "test acc", "time_to_target_s": "time to target s",
            "loss_noise": "loss noise"}
    t = runs.sort_values(["machine", "optimizer", "batch_size", "seed"])[list(cols)].rename(columns=cols)
    for c in ("epoch s", "s/update", "examples/s", "test acc", "time to target s", "loss noise"):
        t[c] = t[c].map(lambda v: _fmt(v, ".4g"))
    return _table(t)


def saddle_findings(saddle: pd.DataFrame) -> str:
    """What the saddle benchmark found, per budget and batch size, and whether it supports the lecture's claim."""
    ok = saddle[saddle["status"] == "ok"]
    if ok.empty:
        return "No saddle-benchmark run finished."
    parts = []
    verdict = {}
    for budget in ("epochs", "updates"):
        sel = ok[ok["budget"] == budget]
        if sel.empty:
            continue
        rows = []
        for bs, g in sel.groupby("batch_size"):
            label = g["batch_label"].iloc[0]
            plats = [p for ps in g["plateaus"] for p in (ps or [])]
            kinds = [p["kind"] for p in plats if p.get("kind")]
            lmins = [p["lambda_min"] for p in plats if p.get("lambda_min") is not None]
            end_min, end_max = g["hessian.lambda_min"].median(), g["hessian.lambda_max"].median()
            ns = [v for vs in g["noise_scale_by_epoch"] for v in (vs or []) if v is not None]
            stuck_end = sum(1 for ps, n in zip(g["plateaus"], g["updates"])
                            for p in (ps or []) if p.get("kind") == "saddle" and p["end_update"] >= 0.9 * n)
            verdict[(budget, label)] = stuck_end / len(g)
            text = (f"batch {label}: final loss {g['train_loss'].median():.3f}, {len(plats)} plateau(s) over "
                    f"{len(g)} seed(s)" + (f" ({', '.join(f'{kinds.count(k)} {k}' for k in sorted(set(kinds)))})"
                                           if kinds else ""))
            if lmins:
                text += f", λ_min at plateaus {min(lmins):.3g} to {max(lmins):.3g}"
            text += f"; at the end λ_min {end_min:.3g}, λ_max {end_max:.3g}"
            if ns:
                text += f"; B_simple {np.median(ns):.3g} (median over probes)"
            rows.append(text)
        parts.append(f"**Same {budget}:** " + "; ".join(rows) + ".")
    upd = ok[ok["budget"] == "updates"].groupby("batch_label")["train_loss"].median()
    if "full" in upd.index and len(upd) > 1:
        best_mini = upd.drop("full").min()
        parts.append(f"With the same number of updates the full batch ends at training loss {upd['full']:.3f}, "
                     + ("as low as or lower than" if upd["full"] <= 1.1 * best_mini else "above")
                     + f" the best minibatch ({best_mini:.3f}, batch {upd.drop('full').idxmin()}): where the full "
                     "batch stalls after the same epochs, it is because it made fewer updates.")
    full = [v for (b, lab), v in verdict.items() if lab == "full"]
    small = [v for (b, lab), v in verdict.items() if lab in ("1", "10")]
    if full and small:
        if max(full) > 0 and max(small) == 0:
            parts.append("The full batch ends on a saddle plateau in some seeds while batches of 1 and 10 do "
                         "not: these records **support** the lecture's claim.")
        elif max(full) == 0:
            parts.append("No full-batch run ended on a plateau classified as a saddle (λ_min < 0 beyond the "
                         "tolerance): these records **do not support** the lecture's claim that the full batch "
                         "gets stuck at saddle points; see the numbers above for where it did stall.")
        else:
            parts.append("Small batches also ended on saddle plateaus: the records **do not separate** full "
                         "batch from minibatches as the lecture claims.")
    return "\n\n".join(parts)


def render_saddle_only(runs: pd.DataFrame, figures: dict) -> str:
    target = figures.get("saddle")
    return "\n".join([
        "# mnist-mlp-bench saddle benchmark\n",
        "Plain SGD from batch 1 to the full batch, for the same number of epochs and for the same number of "
        "updates; each run probed between its intervals (full-batch gradient norm, noise scale) and at each "
        "plateau and its end (Hessian extremes by Lanczos). Generated by `python -m analysis report`.\n",
        machines_section(runs),
        "## Saddle points\n",
        f"![Saddle points]({target})\n" if isinstance(target, str) and target.endswith(".png") else "",
        saddle_findings(runs) + "\n",
        "## All runs\n\n" + runs_table(runs) + "\n",
    ])


def render(runs: pd.DataFrame, summary: pd.DataFrame, knee_table: pd.DataFrame, figures: dict) -> str:
    """The whole REPORT.md; `figures` maps a figure key to its file name, or to None with the reason it is absent."""
    f = findings(runs, summary, knee_table)
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
        parts.append("## Runs that did not finish\n\n" + _table(failed[["machine", "optimizer", "batch_label", "seed",
                                                                         "status", "error"]]) + "\n")
    sections = [
        ("epoch_time", "1. Epoch time vs batch size (the lecture's speed slide)", f["epoch_time"]),
        ("time_per_update", "2. Time per update vs batch size", f["time_per_update"]),
        ("speed_vs_stability", "3. Speed vs stability", f["speed_vs_stability"]),
        ("saddle", "4. Loss and gradient norm per update (saddle points)", f["saddle"]),
        ("learning_curves", "5. Learning curves", f["learning_curves"]),
        ("gpu", "6. GPU utilisation and power", None),
        ("machines", "7. Machines side by side", f.get("machines")),
        ("efficiency", "8. Efficiency against the machine's own peak", f.get("efficiency")),
        ("dispatch", "9. Framework dispatch: default vs fast", f.get("dispatch")),
    ]
    for key, title, text in sections:
        parts.append(f"## {title}\n")
        target = figures.get(key)
        if isinstance(target, str) and target.endswith(".png"):
            parts.append(f"![{title}]({target})\n")
            if text:
                parts.append(text + "\n")
        else:
            parts.append(f"_Not drawn: {target}_\n")
    parts.append("## All runs\n\n" + runs_table(runs) + "\n")
    return "\n".join(parts)
