"""Findings, computed once: the tidy runs table in, one typed object out (ratios, knees, verdicts, peaks). The
figures draw the data and take their titles from here; REPORT.md only renders these values."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import claims, metrics, stats
from analysis import escape as E
from analysis import saddle as S
from analysis import tuning as T
from analysis.saddle import SaddleBenchmark
from analysis.stats import Interval
from bench import record

LECTURE_SPEEDUP = 166 / 17  # the lecture's GTX 980: 166 s and 17 s per 50,000-example epoch at batch 1 and 10
CHANCE_LOSS = math.log(10)  # the cross-entropy of a uniform guess over 10 classes


@dataclass
class Skipped:
    """A figure or finding that cannot be made from these files, and why."""

    reason: str


@dataclass
class EpochTime:
    """Figure 1: epoch time against batch size, in each dispatch mode."""

    claims: list  # analysis.claims.Claims per machine x mode
    machines: int

    def title(self) -> str:
        parts = [f"{c.speedup_bs10.text('.2g', 'x')} in {c.label(self.machines)}" for c in self.claims
                 if c.speedup_bs10.n]
        if not parts:
            return f"Epoch time vs batch size (lecture's GTX 980: {LECTURE_SPEEDUP:.1f}x faster at batch 10)"
        return ("An epoch at batch 10 is faster than at batch 1 by " + "; ".join(parts)
                + f"\n(lecture's GTX 980: {LECTURE_SPEEDUP:.1f}x; 95% intervals, median over optimizers)")


@dataclass
class NoiseScale:
    """The gradient noise scale B_simple the probes measured."""

    where: str
    first: float
    last: float
    low: float
    high: float


@dataclass
class TimePerUpdate:
    """Figure 2 and claims 1-2: time per update against batch size, knees, verdicts per mode."""

    claims: list  # analysis.claims.Claims per machine x mode
    machines: int
    noise: NoiseScale | None = None

    def title(self) -> str:
        def verdicts(attr):
            return ", ".join(f"{getattr(c, attr).outcome} in {c.label(self.machines)}" for c in self.claims
                             if getattr(c, attr) is not None) or "no data"
        return (f"Claim 1 (a batch-10 update costs about as much as a batch-1 update): {verdicts('claim1')}\n"
                f"Claim 2 (flat up to a knee, then time per update grows): {verdicts('claim2')}")


@dataclass
class GridSaddle:
    """Section 4 without the saddle benchmark: the grid's SGD runs after the same number of epochs."""

    optimizer: str
    final_loss: dict  # batch label -> median final training loss
    final_accuracy: dict
    stuck: list  # batch labels that ended within 5 % of ln 10
    has_plateau_records: bool


@dataclass
class SaddleCurves:
    """Figure 4 drawn from the grid's curves: one seed per batch size."""

    optimizer: str
    first: tuple  # (batch label, final training loss)
    last: tuple

    def title(self) -> str:
        return (f"{self.optimizer}: final training loss {self.first[1]:.2f} at batch {self.first[0]} vs "
                f"{self.last[1]:.2f} at batch {self.last[0]}\nshaded: plateaus the runs recorded (loss flat within 1%)")


@dataclass
class LearningCurves:
    """Figure 5: accuracy per epoch on the target's split."""

    final_by_batch: dict  # batch label -> mean final accuracy over optimizers (the split's), in batch-size order
    split: str = "validation"  # the split the curves are read on (test in records from before the validation split)

    def title(self) -> str:
        by_mean = pd.Series(self.final_by_batch).sort_index()  # as groupby orders labels
        return (f"{self.split.capitalize()} accuracy by epoch: batch {by_mean.idxmax()} ends highest "
                f"({by_mean.max():.3f} mean over optimizers), batch {by_mean.idxmin()} lowest ({by_mean.min():.3f})")


@dataclass
class GpuUsage:
    """Figure 6: GPU utilisation and power of the steady epochs, and their energy."""

    busiest_batch: str
    busiest_util_pct: float
    energy_per_epoch_j: dict  # batch label -> median energy of a steady epoch
    energy_to_target_j: dict  # batch label -> median energy to the target (steady epochs)

    def title(self) -> str:
        return f"GPU busiest at batch {self.busiest_batch} ({self.busiest_util_pct:.0f}% utilisation)"


@dataclass
class Machines:
    """Figure 7: each machine's epoch time relative to the first."""

    baseline: str
    ratios: dict  # setting -> {batch size: Interval of its epoch time / the baseline's, median over optimizers}
    cells: pd.DataFrame  # the summary with `machine` relabelled as the setting compared (machine, backend)

    def title(self) -> str:
        other = list(self.ratios)[0]
        r = self.ratios[other]
        sizes = sorted(r)
        return (f"{other}: {r[sizes[0]].text('.2g', 'x')} the epoch time of {self.baseline} at batch "
                f"{sizes[0]:,},\n{r[sizes[-1]].text('.2g', 'x')} at {sizes[-1]:,} (95% intervals, median over "
                "optimizers)")


@dataclass
class Efficiency:
    """Figure 8: achieved share of the measured matmul peak."""

    peak_gflops: float  # median measured peak over the primary mode's cells
    pct: dict  # batch size -> median % of peak (the primary mode)
    memory_mib: dict  # batch size -> the largest of the runs' own peak host memory (over optimizers)
    process_peak_mib: float | None  # the process's peak over the sweep (earlier runs' memory included)
    gflops: dict  # batch size -> median achieved GFLOP/s
    pct_by_mode: dict | None  # mode -> {batch size: median %}, when both modes carry a calibration
    drawn_peak_gflops: float  # the peak over what figure 8 draws (both modes' cells when it draws both)

    def title(self) -> str:
        if self.pct_by_mode:
            big = max(b for pct in self.pct_by_mode.values() for b in pct)
            return (f"At batch {big:,}: {self.pct_by_mode['default'][big]:.0f}% (default) and "
                    f"{self.pct_by_mode['fast'][big]:.0f}% (fast) of the measured {self.drawn_peak_gflops:.0f} "
                    "GFLOP/s matmul peak\n(model FLOPs: forward + backward matmuls; median over optimizers)")
        big, small = max(self.pct), min(self.pct)
        return (f"{self.pct[big]:.0f}% of the measured {self.peak_gflops:.0f} GFLOP/s matmul peak at batch {big:,} "
                f"({self.gflops[big]:.0f} GFLOP/s), {self.pct[small]:.2g}% at batch {small:,}\n(model FLOPs: "
                "forward + backward matmuls; median over optimizers)")


@dataclass
class Dispatch:
    """Figure 9: default against fast dispatch."""

    ratio: dict  # batch size -> Interval of default / fast time per update, median over optimizers
    ms: dict  # batch size -> (default ms, fast ms)
    fast_pct: dict  # batch size -> fast's median % of the matmul peak
    fast_memory_mib: float | None

    def title(self) -> str:
        sizes = list(self.ratio)
        return (f"Per-step dispatch: default costs {self.ratio[sizes[0]].text('.2g', 'x')} fast at batch "
                f"{sizes[0]:,},\n{self.ratio[sizes[-1]].text('.2g', 'x')} at {sizes[-1]:,} (95% intervals; fast = "
                "one compiled call per epoch; median over optimizers)")


@dataclass
class Findings:
    """Everything REPORT.md says and every figure title, from one set of result files."""

    runs: pd.DataFrame  # every run (saddle benchmark's included), with the per-run metrics
    summary: pd.DataFrame | None  # grid cells of the primary dispatch mode, medians over seeds
    by_mode: pd.DataFrame | None  # grid cells of every mode
    knees: pd.DataFrame | None
    saddle_runs: pd.DataFrame
    primary_mode: str | None
    epoch_time: EpochTime | Skipped = None
    time_per_update: TimePerUpdate | Skipped = None
    speed_vs_stability: object = None  # the tuning experiment's finding (figure 3 from its tuned runs) or Skipped
    saddle: object = None  # SaddleBenchmark, (GridSaddle, SaddleCurves | Skipped) or Skipped
    learning_curves: LearningCurves | Skipped = None
    gpu: GpuUsage | Skipped = None
    machines: Machines | Skipped = None
    efficiency: Efficiency | Skipped = None
    dispatch: Dispatch | Skipped = None
    claims: list = field(default_factory=list)  # analysis.claims.Claims per machine x dispatch mode
    unstable: pd.DataFrame | None = None  # grid cells whose timing is unstable, with the reason
    duplicates: int = 0  # runs set aside as repeats of a measurement already counted (analysis.load)
    escape: object = None  # analysis.escape.EscapeFinding or Skipped
    escape_runs: pd.DataFrame | None = None
    tuning: object = None  # analysis.tuning.TuningFinding or Skipped
    other_runs: pd.DataFrame | None = None  # runs of experiments this report has no section for
    bad_lines: list = field(default_factory=list)  # file:line (or file:benchmarks[i]) and why, of skipped records


def _order(summary) -> list:
    return list(summary.sort_values("batch_size")["batch_label"].unique())


def noise_scale(runs, saddle) -> NoiseScale | None:
    source, where = runs, "these runs"
    if not any(vs for vs in runs["noise_scale_by_epoch"]) and saddle is not None and len(saddle):
        source, where = saddle[saddle["status"] == "ok"], "the saddle benchmark's runs"
    series = [[v for v in vs if v is not None] for vs in source["noise_scale_by_epoch"] if vs]
    series = [vs for vs in series if vs]
    if not series:
        return None
    allv = [v for vs in series for v in vs]
    return NoiseScale(where, float(np.median([vs[0] for vs in series])), float(np.median([vs[-1] for vs in series])),
                      float(np.min(allv)), float(np.max(allv)))


def speed_stability(tuning):
    """Figure 3 comes from the tuned runs: speed (time to target) and stability (seeds that reached it, divergences,
    the spread of final validation accuracy) at rates tuned per batch size. The grid's runs, at pinned rates after a
    fixed number of epochs, measure the update budget rather than stability."""
    if isinstance(tuning, T.TuningFinding) and len(tuning.stability):
        return tuning
    return Skipped("speed and stability are judged at rates tuned per batch size: the tuning experiment's runs "
                   "(pytest bench --experiment tuning) are not in these files")


def grid_saddle(runs, order) -> GridSaddle:
    plain = runs[runs["optimizer"] == ("sgd" if "sgd" in set(runs["optimizer"]) else runs["optimizer"].iloc[0])]
    by_b = plain.groupby("batch_label", sort=False)["train_loss"].median()
    acc_b = plain.groupby("batch_label", sort=False)["test_accuracy"].median()
    stuck = [b for b in order if b in by_b.index and abs(by_b[b] - CHANCE_LOSS) / CHANCE_LOSS < 0.05]
    return GridSaddle(plain["optimizer"].iloc[0], {b: by_b.get(b) for b in order if b in by_b.index},
                      {b: acc_b.get(b) for b in order if b in by_b.index}, stuck,
                      bool(runs["plateaus"].map(bool).any()))


def saddle_curves(ok) -> SaddleCurves | Skipped:
    """The runs figure 4 draws from the grid (one seed per batch size) and its title."""
    with_curves = ok[ok["loss_curve"].map(bool)]
    if with_curves.empty:
        return Skipped("no run recorded loss curves (records from before the curve recorder, or runs that ended "
                       "before their first recorded update)")
    optimizer = "sgd" if "sgd" in set(with_curves["optimizer"]) else with_curves["optimizer"].iloc[0]
    sel = curve_selection(with_curves, optimizer)
    final = sel.set_index("batch_label")["train_loss"]
    return SaddleCurves(optimizer, (final.index[0], final.iloc[0]), (final.index[-1], final.iloc[-1]))


def curve_selection(runs, optimizer) -> pd.DataFrame:
    """One seed per batch size (and machine) of `optimizer`'s runs with curves: what figure 4 draws."""
    sel = runs[(runs["optimizer"] == optimizer) & runs["loss_curve"].map(bool)].sort_values(["batch_size", "seed"])
    return sel.drop_duplicates(["machine", "batch_size"])


def learning_curves(runs, order) -> LearningCurves:
    final = runs.assign(_final=[c[-1] if c else np.nan for c in runs["accuracy_by_epoch"]])
    fin = final.groupby("batch_label", sort=False)["_final"].mean()
    splits = list(dict.fromkeys(runs["target_on"]))
    return LearningCurves({b: fin.get(b) for b in order if b in fin.index}, "/".join(splits) or "validation")


def gpu(summary, runs) -> GpuUsage | Skipped:
    data = summary.dropna(subset=["gpu_util_mean_pct"])
    if data.empty:
        return Skipped("no run had a GPU (" + "; ".join(sorted(set(runs["gpu.reason"].dropna().astype(str)))) + ")")
    top = data.loc[data["gpu_util_mean_pct"].idxmax()]
    order = _order(summary)

    def by_batch(column):
        med = data.groupby("batch_label")[column].median().dropna()
        return {b: float(med[b]) for b in order if b in med.index}

    return GpuUsage(top["batch_label"], float(top["gpu_util_mean_pct"]), by_batch("gpu_energy_per_epoch_j"),
                    by_batch("energy_to_target_j"))


def _ratio_by_batch(cells: pd.DataFrame, other: str, base: str, column: str = "run_epoch_s", key: str = "machine",
                    within: tuple = ()) -> dict:
    """{batch size: Interval of the median over optimizers (and over `within` groups, e.g. protocols) of other's
    estimate / base's}, `other` and `base` being values of `key` (independent cells: two machines, two modes);
    the interval from draws of each cell's t distribution (stats.draws), the point from the cells' estimates."""
    out = {}
    for bs, g in cells.groupby("batch_size"):
        points, drawn, defined = [], [], True
        for i, (_, o) in enumerate(g.groupby([*within, "optimizer"], observed=True, dropna=False)):
            a, b = o[o[key] == other][column], o[o[key] == base][column]
            if len(a) and len(b):
                points.append(stats.repeats(a.iloc[0]).value / stats.repeats(b.iloc[0]).value)
                with np.errstate(divide="ignore", over="ignore"):  # a 2-repeat cell's t(1) draws reach 0 and inf
                    drawn.append(stats.draws(a.iloc[0], seed=2 * i) / stats.draws(b.iloc[0], seed=2 * i + 1))
                defined &= all(sum(x is not None and x > 0 for x in v.iloc[0]) > 1 for v in (a, b))
        if points:
            out[int(bs)] = stats.from_draws(float(np.median(points)), np.median(np.stack(drawn), axis=0),
                                            len(points), defined)
    return out


def machines(summary, runs) -> Machines | Skipped:
    """Each setting's epoch time relative to the first's (in the order of the files): settings differ in machine or
    backend (one dispatch mode: the summary's), each protocol compared within itself."""
    several = {**metrics.varies(summary), "machine": True}
    cells = summary.assign(machine=[metrics.setting_label(r, several, mode=False) for _, r in summary.iterrows()])
    present = set(cells["machine"])
    names = [n for n in dict.fromkeys(metrics.setting_label(r, several, mode=False) for _, r in runs.iterrows())
             if n in present]
    if len(names) < 2:
        return Skipped("the result files come from one machine and one backend")
    protocol = [c for c in record.PROTOCOL if c not in ("dispatch.backend", "dispatch.mode")]
    return Machines(names[0], {m: _ratio_by_batch(cells, m, names[0], within=tuple(protocol))
                               for m in names[1:]}, cells)


def efficiency(summary, by_mode) -> Efficiency | Skipped:
    eff = summary.dropna(subset=["peak_fraction"])
    if eff.empty:
        return Skipped("no run carries a peak fraction (result files from before the calibration, or runs made "
                       "with --no-calibration)")
    scored = by_mode.dropna(subset=["peak_fraction"])
    both = {"default", "fast"} <= set(scored["dispatch.mode"])
    pct_by_mode, drawn = None, eff
    if both:
        drawn = scored[scored["dispatch.mode"].isin(["default", "fast"])]
        pct_by_mode = {m: (g.groupby("batch_size")["peak_fraction"].median() * 100).to_dict()
                       for m, g in drawn.groupby("dispatch.mode")}

    def peak(d):
        return float((d["achieved_gflops"] / d["peak_fraction"]).median())

    process = summary["host_memory_peak_mib"].max()
    return Efficiency(peak(eff), (eff.groupby("batch_size")["peak_fraction"].median() * 100).to_dict(),
                      summary.groupby("batch_size")["host_memory_run_mib"].max().dropna().to_dict(),
                      None if pd.isna(process) else float(process),
                      eff.groupby("batch_size")["achieved_gflops"].median().to_dict(), pct_by_mode, peak(drawn))


def dispatch(by_mode, primary) -> Dispatch | Skipped:
    if not {"default", "fast"} <= set(by_mode["dispatch.mode"]):
        return Skipped(f"all runs used --dispatch {primary}; run the same sweep with --dispatch "
                       + ("fast" if primary == "default" else "default") + " to compare")
    setting = [c for c in metrics.SETTING if c != "dispatch.mode"]
    wide = by_mode.pivot_table(index=[*setting, "optimizer", "batch_size"], columns="dispatch.mode",
                               values="time_per_update_s", observed=True).dropna()
    ms = (wide * 1000).groupby(level="batch_size").median()
    # the same cell's steps per epoch in both modes: the ratio of epoch estimates is the ratio of update costs
    ratio = _ratio_by_batch(by_mode, "default", "fast", key="dispatch.mode", within=tuple(setting))
    fast = by_mode[by_mode["dispatch.mode"] == "fast"].dropna(subset=["peak_fraction"])
    pct = (fast.groupby("batch_size")["peak_fraction"].median() * 100).to_dict() if len(fast) else {}
    memory = float(fast["host_memory_run_mib"].max()) if len(fast) and fast["host_memory_run_mib"].notna().any() else None
    return Dispatch(ratio, {b: (ms.loc[b, "default"], ms.loc[b, "fast"]) for b in ratio}, pct, memory)


KNOWN = (record.GRID, S.NAME, E.NAME, T.NAME)  # the experiments this report has sections for


def compute(runs: pd.DataFrame) -> Findings:
    """All findings of a set of runs (analysis.load.load_runs), each experiment's from its own runs: every record
    names its experiment."""
    duplicates = runs.attrs.get("duplicates", 0)
    bad = runs.attrs.get("bad_lines", [])
    runs = metrics.add_run_metrics(runs)
    grid_runs = runs[runs["experiment"] == record.GRID]
    saddle = runs[runs["experiment"] == S.NAME]  # the saddle benchmark's: figure 4 and its text
    escape_runs = runs[runs["experiment"] == E.NAME]  # section and figure 10, claim 3's verdict
    tuning_runs = runs[runs["experiment"] == T.NAME]  # section and figures 11-12
    others = runs[~runs["experiment"].isin(KNOWN)]  # experiments this report has no section for: listed
    found_escape = E.finding(escape_runs) or Skipped("no escape experiment in these files (pytest bench "
                                                     "--experiment escape)")
    found_tuning = T.finding(tuning_runs) or Skipped("no tuning experiment in these files (pytest bench "
                                                     "--experiment tuning)")
    if not (grid_runs["status"] == "ok").any():  # no grid run, or none finished: nothing of the grid is timed
        experiments = pd.concat([grid_runs, saddle, escape_runs, tuning_runs, others])
        f = Findings(experiments, None, None, None, saddle, None, duplicates=duplicates, escape=found_escape,
                     escape_runs=escape_runs, tuning=found_tuning, other_runs=others, bad_lines=bad)
        statuses = ", ".join(f"{n} {s}" for s, n in grid_runs["status"].value_counts().items())
        why = Skipped(f"no run of the grid finished ({len(grid_runs)} run(s): {statuses})" if len(grid_runs) else
                      "the files hold only the experiments' runs (" + ", ".join(
                          dict.fromkeys(experiments["experiment"])) + ")")
        for key in ("epoch_time", "time_per_update", "learning_curves", "gpu", "machines", "efficiency", "dispatch"):
            setattr(f, key, why)
        f.speed_vs_stability = speed_stability(found_tuning)
        f.saddle = S.benchmark_finding(saddle) or Skipped("no saddle-benchmark run in these files")
        return f
    # runs of both dispatch modes: figure 9 compares them; the others show one mode (default if present)
    modes = list(dict.fromkeys(grid_runs["dispatch.mode"]))
    primary = "default" if "default" in modes else modes[0]
    by_mode = metrics.cell_summary(grid_runs)
    mine = grid_runs[grid_runs["dispatch.mode"] == primary]
    summary = by_mode[by_mode["dispatch.mode"] == primary].reset_index(drop=True)
    knee_table = metrics.knees(by_mode)
    ok = mine[mine["status"] == "ok"]
    order = _order(summary)
    all_runs = pd.concat([grid_runs, saddle, escape_runs, tuning_runs, others])
    f = Findings(all_runs, summary, by_mode, knee_table, saddle, primary, duplicates=duplicates, escape=found_escape,
                 escape_runs=escape_runs, tuning=found_tuning, other_runs=others, bad_lines=bad)
    f.claims = claims.per_setting(by_mode, knee_table)
    n_machines = by_mode["machine"].nunique()
    f.epoch_time = EpochTime(f.claims, n_machines)
    f.time_per_update = TimePerUpdate(f.claims, n_machines, noise_scale(mine, saddle))
    f.unstable = by_mode[by_mode["unstable"]]
    f.speed_vs_stability = speed_stability(found_tuning)
    bench = S.benchmark_finding(saddle)
    f.saddle = bench if bench is not None else (grid_saddle(mine, order), saddle_curves(ok))
    f.learning_curves = learning_curves(mine, order)
    f.gpu = gpu(summary, mine)
    f.machines = machines(summary, mine)
    f.efficiency = efficiency(summary, by_mode)
    f.dispatch = dispatch(by_mode, primary)
    return f
