"""Two sweeps of one protocol, side by side: do they give the same verdicts, the same knees, and does each cell's
estimate fall inside the other sweep's interval? What `python -m analysis replicate A B` prints (DESIGN.md:
replication decides)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis import findings, metrics, stats


@dataclass
class Replication:
    verdicts: list  # (setting label, claim, outcome in A, outcome in B)
    knees: list  # (setting label, optimizer, knee in A, knee in B)
    cells: int  # cells in both
    inside: int  # of them, estimates of each inside the other's replication interval (counted once per direction)
    checked: int  # directions checked (2 per cell where both have intervals)
    inside_ci: int = 0  # estimates inside the other's confidence interval
    expected_ci: float = float("nan")  # the share of those expected of exact intervals (stats.capture, mean)

    @property
    def same_verdicts(self) -> int:
        return sum(a == b for _, _, a, b in self.verdicts)

    @property
    def same_knees(self) -> int:
        return sum(a == b for _, _, a, b in self.knees)

    def lines(self) -> list[str]:
        out = [f"verdicts: {self.same_verdicts} of {len(self.verdicts)} the same"]
        out += [f"  {s}: claim {c}: {a} / {b}" for s, c, a, b in self.verdicts]
        out.append(f"knees: {self.same_knees} of {len(self.knees)} the same")
        out += [f"  {s} {o}: {_b(a)} / {_b(b)}" for s, o, a, b in self.knees if a != b]
        share = self.inside / self.checked if self.checked else float("nan")
        out.append(f"cell estimates inside the other sweep's 95% replication interval: {self.inside} of "
                   f"{self.checked} ({share:.0%}; exact intervals: 95%), {self.cells} cells in both")
        share = self.inside_ci / self.checked if self.checked else float("nan")
        out.append(f"  inside its 95% confidence interval: {self.inside_ci} of {self.checked} ({share:.0%}; exact "
                   f"intervals: {self.expected_ci:.0%}, as a confidence interval leaves out the other sweep's own "
                   "error)")
        return out


def _b(x) -> str:
    return "none" if x is None else f"{x:,}"


def _setting(row) -> str:
    """'EPYC-2c: quick 500x6 sigmoid, tensorflow default': the machine and the whole protocol."""
    return f"{row['machine']}: {metrics.protocol_label(row)}"


class NothingToCompare(ValueError):
    """Two result sets with no setting in common, or not two sweeps; the message says which, in one line."""


def compare(a: pd.DataFrame, b: pd.DataFrame) -> Replication:
    """The agreement of two sweeps' runs (analysis.load.load_runs of each); NothingToCompare when they are one sweep,
    or share no finished grid setting."""
    sweeps = set(a["sweep"].dropna()) & set(b["sweep"].dropna())
    if sweeps:
        raise NothingToCompare(f"both hold runs of sweep {sorted(sweeps)[0]}: one sweep is no replication of itself")
    fa, fb = findings.compute(a), findings.compute(b)
    for f, which in ((fa, "first"), (fb, "second")):
        if f.by_mode is None:
            raise NothingToCompare(f"the {which} file holds no finished run of the grid: {f.epoch_time.reason}")
    common = set(map(_setting, fa.by_mode.to_dict("records"))) & set(map(_setting, fb.by_mode.to_dict("records")))
    if not common:
        raise NothingToCompare("the two files share no setting (machine, protocol, backend, mode): "
                               + "; ".join(sorted({_setting(r) for r in fa.by_mode.to_dict("records")}))
                               + " against " + "; ".join(sorted({_setting(r) for r in fb.by_mode.to_dict("records")})))
    claims_b = {(_setting(c.setting)): c for c in fb.claims}
    verdicts = []
    for c in fa.claims:
        other = claims_b.get(_setting(c.setting))
        for name in ("1", "2"):
            mine, theirs = getattr(c, f"claim{name}"), getattr(other, f"claim{name}", None) if other else None
            if mine is not None and theirs is not None:
                verdicts.append((_setting(c.setting), name, mine.outcome, theirs.outcome))
    keys = [*metrics.SETTING, "optimizer"]
    ka = fa.knees.set_index(keys)["knee_batch_size"] if fa.knees is not None else pd.Series(dtype=object)
    kb = fb.knees.set_index(keys)["knee_batch_size"] if fb.knees is not None else pd.Series(dtype=object)
    knees = [(_setting(dict(zip(keys, k))), k[-1], _int(ka[k]), _int(kb[k])) for k in ka.index if k in kb.index]
    ca, cb = (f.by_mode.set_index(metrics.CELL) for f in (fa, fb))
    common = [k for k in ca.index if k in cb.index]
    inside = inside_ci = checked = 0
    expected = []
    for k in common:
        for x, y in ((ca.loc[k], cb.loc[k]), (cb.loc[k], ca.loc[k])):
            if pd.notna(y["epoch_time_again_lo_s"]) and pd.notna(y["epoch_time_again_hi_s"]):
                checked += 1
                inside += bool(y["epoch_time_again_lo_s"] <= x["epoch_time_s"] <= y["epoch_time_again_hi_s"])
                inside_ci += bool(y["epoch_time_lo_s"] <= x["epoch_time_s"] <= y["epoch_time_hi_s"])
                expected.append(stats.capture(stats.repeats(y["run_epoch_s"]).n, stats.repeats(x["run_epoch_s"]).n))
    return Replication(verdicts, knees, len(common), inside, checked, inside_ci,
                       sum(expected) / len(expected) if expected else float("nan"))



def _int(x):
    return None if x is None or pd.isna(x) else int(x)
