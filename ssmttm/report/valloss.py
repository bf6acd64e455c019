"""``python -m ssmttm val-loss``: each study's validation loss over training, mean ± 95 % t-interval over seeds.

Input: the training runs' ``done.json`` files (``--run``, exactly the files the rule lists; each run's
``val.csv`` and ``flops.csv`` are written beside it by the same job) and the config's ``studies``
(:class:`ssmttm.report.options.TablesSettings`: which experiments each study compares).

The validation loss is the trainer's ``val_loss``: token-weighted cross-entropy on the held-out split,
without label smoothing (``ssmttm.train.loop.Trainer.validate``). At each checkpoint step an experiment's
seeds give the mean, the sample sd and a two-sided 95 % Student t-interval,
``mean ± t(0.975, n - 1) · sd / √n``: with three seeds a t-interval is the standard choice (a bootstrap
of three values cannot reach past their range). One seed gives no interval. Two experiments are compared
by the difference of their means with a Welch t-interval (unequal variances, Welch-Satterthwaite
degrees of freedom): seeds of different experiments are treated as independent samples.

Outputs:

- ``--plots``: ``<dir>/<study>.{png,svg}`` per study (the rule lists them; every study has both):
  the validation loss against training steps (left) and against training FLOPs (6ND, right), one
  line (mean over seeds) and band (95 % t-interval) per experiment, single seeds as dots; the legend,
  which names the statistic, sits under the axes;
- ``--csv``: the points of those curves (study, experiment, variant, step, flops_6nd, n_seeds, seeds,
  mean, sd, ci_low, ci_high, interval);
- ``--json``: per study, every experiment's validation loss at one matched step (the study's ``step``
  when set, else the last step every run of the study validated at) and the difference of every pair
  of experiments (first minus second, in the study's order) with its interval.
  ``python -m ssmttm docs-results`` writes it into README.md and docs/results.md.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ssmttm import io, logs, settings
from ssmttm.report.curves import LOSS_UNIT, X_LABELS, legend_below, read_run, run_recipe, save_figure
from ssmttm.report.options import TablesSettings
from ssmttm.report.tables import with_defaults

log = logging.getLogger("ssmttm.report.valloss")

LEVEL = 0.95
STATISTIC = "mean ± 95 % Student t-interval over seeds (t(0.975, n-1) · sd / √n)"
DIFFERENCE = "difference of means, 95 % Welch t-interval (unequal variances, Welch-Satterthwaite df)"
VAL_LOSS = "validation loss (held-out split, cross-entropy without label smoothing)"
LEGEND_TITLE = "line: mean over seeds; band: 95 % Student t-interval over seeds, mean ± t(0.975, n−1)·sd/√n"
CURVE_COLUMNS = ("study", "experiment", "variant", "step", "flops_6nd", "n_seeds", "seeds", "mean", "sd", "ci_low",
                 "ci_high", "interval")


# --- statistics --------------------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes §6.4)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`;
    no scipy in the report stages' environment)."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    """Mean of n values with its sample sd and two-sided t-interval (NaN bounds with one value)."""

    n: int
    mean: float
    sd: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0


def t_interval(values, level: float = LEVEL) -> Interval:
    """``mean ± t((1 + level) / 2, n - 1) · sd / √n`` over the finite ``values``."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(float(x))], dtype=float)
    n = len(v)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(v.mean())
    if n == 1:
        return Interval(1, mean, math.nan, math.nan, math.nan)
    sd = float(v.std(ddof=1))
    half = t_quantile((1.0 + level) / 2.0, n - 1) * sd / math.sqrt(n)
    return Interval(n, mean, sd, mean - half, mean + half)


def welch_interval(a, b, level: float = LEVEL) -> tuple[float, float, float, float]:
    """(mean(a) - mean(b), low, high, df): Welch's t-interval for a difference of means; NaN bounds
    when either side has fewer than two values (no variance estimate). Equal values on both sides
    (zero variance) give a zero-width interval."""
    ia, ib = t_interval(a, level), t_interval(b, level)
    diff = ia.mean - ib.mean
    if ia.n < 2 or ib.n < 2:
        return diff, math.nan, math.nan, math.nan
    va, vb = ia.sd ** 2 / ia.n, ib.sd ** 2 / ib.n
    se = math.sqrt(va + vb)
    if se == 0.0:
        return diff, diff, diff, math.inf
    df = (va + vb) ** 2 / (va ** 2 / (ia.n - 1) + vb ** 2 / (ib.n - 1))
    half = t_quantile((1.0 + level) / 2.0, df) * se
    return diff, diff - half, diff + half, df


# --- runs --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One training run's validation losses: ``val`` has columns step, val_loss, flops_6nd."""

    experiment: str
    variant: str | None
    seed: int | str
    val: pd.DataFrame


def read_runs(done_files: list[str | Path]) -> list[Run]:
    """Every run named by a done.json (experiment, variant and seed from it); a run without
    validation losses is kept with an empty table and a warning."""
    runs = []
    for path in done_files:
        path = Path(path)
        done = run_recipe(path.parent)
        if not done.get("experiment"):
            raise ValueError(f"{path}: no 'experiment' (not a training run's done.json)")
        _, val = read_run(path.parent)
        if not len(val) or "val_loss" not in val.columns:
            log.warning("%s: no validation loss logged (val.csv empty or missing)", path.parent)
            val = pd.DataFrame(columns=["step", "val_loss", "flops_6nd"])
        val = val[["step", "val_loss", "flops_6nd"]].dropna(subset=["val_loss"])
        seed = done.get("seed", done.get("recipe", {}).get("seed"))
        runs.append(Run(str(done["experiment"]), done.get("variant"), seed, val.reset_index(drop=True)))
    return runs


def study_runs(runs: list[Run], name: str, spec: dict) -> dict[str, list[Run]]:
    """{experiment: its runs} for the experiments of one study, in the study's order (an experiment
    without runs is left out with a warning)."""
    out = {}
    for exp in spec["experiments"]:
        mine = [r for r in runs if r.experiment == exp and len(r.val)]
        if mine:
            out[exp] = mine
        else:
            log.warning("study %s: no validation loss of experiment %s among the runs given", name, exp)
    return out


def _variant(runs: list[Run]) -> str | None:
    return next((r.variant for r in runs if r.variant), None)


def curve_points(runs: list[Run], studies: dict[str, dict]) -> pd.DataFrame:
    """One row per study x experiment x validated step: the statistics over the seeds that logged it."""
    rows = []
    for name, spec in studies.items():
        for exp, rs in study_runs(runs, name, spec).items():
            long = pd.concat([r.val.assign(seed=r.seed) for r in rs], ignore_index=True)
            for step, g in long.groupby("step", sort=True):
                iv = t_interval(g["val_loss"])
                flops = pd.to_numeric(g["flops_6nd"], errors="coerce")
                rows.append({"study": name, "experiment": exp, "variant": _variant(rs), "step": int(step),
                             "flops_6nd": float(flops.mean()) if flops.notna().any() else math.nan,
                             "n_seeds": iv.n, "seeds": " ".join(map(str, g["seed"])), "mean": iv.mean, "sd": iv.sd,
                             "ci_low": iv.low, "ci_high": iv.high, "interval": "t95" if iv.n >= 2 else ""})
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def matched_step(rs_by_exp: dict[str, list[Run]], spec: dict) -> int | None:
    """The study's ``step`` when set; else the last step every run of every experiment validated at."""
    if spec.get("step") is not None:
        return int(spec["step"])
    common = None
    for rs in rs_by_exp.values():
        for r in rs:
            steps = set(int(s) for s in r.val["step"])
            common = steps if common is None else common & steps
    return max(common) if common else None


def final_summary(runs: list[Run], studies: dict[str, dict]) -> dict:
    """Per study: each experiment's validation loss at the matched step and the pairwise differences
    (see the module docstring); the JSON ``--json`` writes."""
    out = {"level": LEVEL, "statistic": STATISTIC, "difference": DIFFERENCE, "quantity": VAL_LOSS, "studies": {}}
    for name, spec in studies.items():
        rs_by_exp = study_runs(runs, name, spec)
        step = matched_step(rs_by_exp, spec)
        exps, values = [], {}
        for exp, rs in rs_by_exp.items():
            at = [(r.seed, r.val.loc[r.val["step"] == step]) for r in rs] if step is not None else []
            at = [(seed, v.iloc[-1]) for seed, v in at if len(v)]
            if not at:
                log.warning("study %s: experiment %s has no validation loss at step %s", name, exp, step)
                continue
            values[exp] = [float(v["val_loss"]) for _, v in at]
            iv = t_interval(values[exp])
            flops = pd.to_numeric(pd.Series([v["flops_6nd"] for _, v in at]), errors="coerce")
            exps.append({"experiment": exp, "variant": _variant(rs), "step": step, "n_seeds": iv.n,
                         "seeds": [seed for seed, _ in at], "values": values[exp], "mean": iv.mean,
                         "sd": _num(iv.sd), "ci_low": _num(iv.low), "ci_high": _num(iv.high),
                         "half_width": _num(iv.half_width), "flops_6nd": _num(float(flops.mean()))})
        diffs = []
        for a, b in itertools.combinations(values, 2):
            d, lo, hi, df = welch_interval(values[a], values[b])
            diffs.append({"a": a, "b": b, "diff": d, "ci_low": _num(lo), "ci_high": _num(hi), "df": _num(df)})
        out["studies"][name] = {"title": spec.get("title") or name, "step": step, "experiments": exps,
                                "differences": diffs}
    return out


# --- figures -----------------------------------------------------------------------------------------
def draw_study(points: pd.DataFrame, runs: dict[str, list[Run]], title: str):
    """The figure of one study (validation loss vs steps and vs 6ND FLOPs); the caller saves and closes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9), sharey=True)
    handles, labels = [], []
    for i, (exp, g) in enumerate(points.groupby("experiment", sort=False)):
        color = f"C{i % 10}"
        g = g.sort_values("step")
        for ax, x in zip(axes, ("step", "flops_6nd")):
            gx = g.dropna(subset=[x])
            ax.plot(gx[x], gx["mean"], "o-", color=color, ms=4, lw=1.6)
            band = gx.dropna(subset=["ci_low", "ci_high"])
            if len(band):
                ax.fill_between(band[x], band["ci_low"], band["ci_high"], color=color, alpha=0.2, lw=0)
            for r in runs.get(exp, []):
                v = r.val.dropna(subset=[x])
                ax.plot(v[x], v["val_loss"], ".", color=color, ms=3, alpha=0.45)
        n = int(g["n_seeds"].max())
        variant = g["variant"].dropna()
        name = f"{variant.iloc[0]} ({exp})" if len(variant) else exp
        line = Line2D([], [], color=color, marker="o", ms=4, lw=1.6)
        handles.append((Patch(color=color, alpha=0.2, lw=0), line) if n >= 2 else line)
        labels.append(f"{name}, {n} seed{'s' if n != 1 else ''}" + ("" if n >= 2 else ", no interval"))
    if handles:
        handles.append(Line2D([], [], ls="", marker=".", color="0.4", ms=5))
        labels.append("single seeds")
    else:
        for ax in axes:
            ax.text(0.5, 0.5, "no validation loss logged by this study's runs", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9, color="0.4")
    axes[0].set(xlabel=X_LABELS["step"], ylabel=f"validation {LOSS_UNIT}\n(held-out split, no label smoothing)")
    axes[1].set(xlabel=X_LABELS["flops_6nd"])
    for ax, x in zip(axes, ("step", "flops_6nd")):
        xs = pd.to_numeric(points[x], errors="coerce")
        xs = xs[xs > 0]
        if len(xs) and xs.max() / xs.min() > 50:  # a long run (the paper's 5k-400k steps): log axis
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter(sep=""))
        ax.grid(alpha=0.3)
        ax.xaxis.label.set_fontsize(8)
    fig.suptitle(f"{title}: validation loss over training", fontsize=10)
    legend_below(fig, handles, labels, title=LEGEND_TITLE if handles else None)
    return fig


def plot_studies(points: pd.DataFrame, runs: list[Run], studies: dict[str, dict], plots_dir: Path) -> list[Path]:
    """Write ``<plots_dir>/<study>.{png,svg}`` for every study; return the paths."""
    import matplotlib.pyplot as plt

    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, spec in studies.items():
        fig = draw_study(points[points["study"] == name], study_runs(runs, name, spec), spec.get("title") or name)
        written += save_figure(fig, plots_dir / name)
        plt.close(fig)
    return written


def _json_safe(obj):
    """NaN and infinities as null (JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ssmttm val-loss", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", nargs="+", required=True, type=Path, metavar="DONE_JSON",
                   help="the training runs' done.json files (val.csv and flops.csv beside each)")
    p.add_argument("--plots", nargs="+", required=True, type=Path,
                   help="the figures to write, <dir>/<study>.png and .svg for every study (the rule's outputs)")
    p.add_argument("--csv", required=True, type=Path, help="the curve points, e.g. results/tables/val_loss.csv")
    p.add_argument("--json", required=True, type=Path,
                   help="the matched-step summary, e.g. results/tables/val_loss.json")
    settings.add_arguments(p, TablesSettings)
    a = p.parse_args(argv)
    studies = with_defaults(settings.from_args(p, TablesSettings, a).studies)
    log_ = logs.setup("ssmttm.report")
    expected = {f"{s}.{ext}" for s in studies for ext in ("png", "svg")}
    folders = {f.parent for f in a.plots}
    if len(folders) != 1 or {f.name for f in a.plots} != expected:
        p.error(f"--plots: expected {sorted(expected)} in one folder (one PNG and SVG per study), "
                f"got {sorted(map(str, a.plots))}")
    runs = read_runs(a.run)
    points = curve_points(runs, studies)
    io.write_table(a.csv, points)
    summary = final_summary(runs, studies)
    io.write_json(a.json, _json_safe(summary))
    for path in [a.csv, a.json, *plot_studies(points, runs, studies, folders.pop())]:
        log_.info("wrote %s", path)
    for name, s in summary["studies"].items():
        for e in s["experiments"]:
            ci = "no interval" if e["ci_low"] is None else f"95 % t-interval {e['ci_low']:.4f} .. {e['ci_high']:.4f}"
            log_.info("%s, step %s: %s %.4f (%s, %d seeds)", name, s["step"], e["experiment"], e["mean"], ci,
                      e["n_seeds"])
    return 0
