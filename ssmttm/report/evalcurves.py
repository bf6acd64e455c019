"""Evaluation curves of a curve study: each metric against training steps and training FLOPs.

Input: the long table of one study (:func:`ssmttm.report.tables.study_table`: one row per system x
step x metric, aggregated over seeds). Two figures per study, PNG + SVG, written atomically:
``<plots_dir>/<study>_vs_steps`` and ``<study>_vs_flops`` (x = the evaluated checkpoint's logged
6ND, log scale). One subplot per metric; our experiments as mean over seeds with sd error bars;
the paper's curve points (docs/reference.md §3) as hollow markers with their read-off error,
coloured like our experiment of the same variant; MusicGen-small (paper, released checkpoint),
ground truth and codec re-synthesis as horizontal reference lines. The paper's "FD" (likely
OpenL3, 70-165) is not on our FD scale: it is drawn on a right-hand axis of our first ``fd_*``
subplot (or its own subplot), labelled as the paper's.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from ssmttm.eval.evaluate import PIPELINE_CHECK
from ssmttm.report import published
from ssmttm.report.curves import legend_below, save_figure
from ssmttm.report.labels import metric_label, metric_sort_key

log = logging.getLogger("ssmttm.report.evalcurves")

X_AXES = {"steps": ("step", "training steps", "linear"), "flops": ("flops_6nd", "training FLOPs (6ND)", "log")}
REF_LINES = {  # experiment / system_kind -> (line style, label)
    "ground_truth": ("-", "ground truth"),
    "resynth": ("-.", "codec re-synthesis"),
    "musicgen_small_paper": ("--", "MusicGen-small (paper)"),
    "musicgen_small_released": (":", "MusicGen-small (released ckpt)"),
}


def _panels(study: pd.DataFrame) -> tuple[list[str], str | None]:
    """(metrics with a subplot, the fd_* metric that hosts the paper's FD on a twin axis or None)."""
    ours = study[study["system_kind"] == "generated"]
    metrics = sorted(set(ours["metric"]), key=metric_sort_key)
    has_paper_fd = (study["metric"] == "fd_paper").any()
    host = next((m for m in published.FD_PAPER_COMPARE if m in metrics), None)
    if not metrics:  # nothing measured: show what was published
        metrics = sorted(set(study["metric"]) - {"fd_paper"}, key=metric_sort_key)
    if has_paper_fd and host is None:
        metrics.append("fd_paper")
    return metrics, host if has_paper_fd else None


def _errorbars(ax, g: pd.DataFrame, x: str, **kw) -> None:
    g = g.sort_values(x)
    sd = pd.to_numeric(g["sd"], errors="coerce").fillna(0.0)
    ax.errorbar(g[x].astype(float), g["mean"].astype(float), yerr=sd, capsize=3, **kw)


def _published_points(ax, g: pd.DataFrame, x: str, color, label: str) -> None:
    g = g.sort_values(x)
    v = g["mean"].astype(float)
    err = (pd.to_numeric(g["ci_high"], errors="coerce") - v).fillna(0.0).abs()
    ax.errorbar(g[x].astype(float), v, yerr=err, fmt="o", mfc="none", ms=6, capsize=2, color=color, lw=0.8,
                ls=":", label=label)


def _steps_label(x: float, _pos=None) -> str:
    """Tick text for a step count: 400000 -> 400k, 1000000 -> 1M."""
    if x >= 1e6:
        return f"{x / 1e6:g}M"
    return f"{x / 1e3:g}k" if x >= 1e3 else f"{x:g}"


def _scale(scale: str, xs: list[float]) -> str:
    """A linear axis whose data spans more than 50x (a demo run beside the paper's points) goes log."""
    xs = [x for x in xs if x > 0]
    return "log" if scale == "log" or (xs and max(xs) / min(xs) > 50) else scale


def plot_axis(study: pd.DataFrame, name: str, title: str, axis: str, out_stem: Path) -> list[Path]:
    """One figure (every metric of the study against ``axis``: "steps" or "flops"); PNG + SVG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    xcol, xlabel, scale = X_AXES[axis]
    metrics, host = _panels(study)
    if not metrics:
        log.warning("study %s: no metric to plot", name)
        return []
    ncol = min(3, len(metrics))
    nrow = math.ceil(len(metrics) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.4 * nrow), squeeze=False)
    gen = study[study["system_kind"] == "generated"].copy()
    gen[xcol] = pd.to_numeric(gen[xcol], errors="coerce")
    skipped = gen[xcol].isna()
    if skipped.any():
        log.warning("study %s: %d row(s) without %s left off the %s plot", name, int(skipped.sum()), xcol, axis)
    gen = gen[~skipped]
    exps = list(dict.fromkeys(gen["experiment"]))
    colors = {e: f"C{i % 10}" for i, e in enumerate(exps)}
    variant_color = {v: colors[e] for e, v in zip(gen["experiment"], gen["variant"]) if isinstance(v, str)}
    pub = study[(study["system_kind"] == "published") & study["experiment"].str.startswith("paper_")].copy()
    pub[xcol] = pd.to_numeric(pub[xcol], errors="coerce")
    refs = study[study["system_kind"].isin(["ground_truth", "resynth"]) | study["experiment"].isin(REF_LINES)]
    checks = bool((gen["status"] == PIPELINE_CHECK).any())
    legend: dict[str, object] = {}  # label -> handle, over every panel: one legend under the figure
    for ax, metric in zip(axes.flat, metrics):
        mark = " †" if (gen.loc[gen["metric"] == metric, "status"] == PIPELINE_CHECK).any() else ""
        for e in exps:
            g = gen[(gen["experiment"] == e) & (gen["metric"] == metric)]
            if len(g):
                _errorbars(ax, g, xcol, fmt="o-", ms=4, color=colors[e], label=e)
        for ref_key, (ls, label) in REF_LINES.items():
            r = refs[((refs["system_kind"] == ref_key) | (refs["experiment"] == ref_key)) & (refs["metric"] == metric)]
            for _, row in r.iterrows():
                if pd.notna(row["mean"]):
                    ax.axhline(float(row["mean"]), color="0.35", ls=ls, lw=1, label=label)
        xs = [*gen.loc[gen["metric"] == metric, xcol]]
        targets = [(ax, metric)]
        if metric == host:
            twin = ax.twinx()
            twin.set_ylabel(published.PUBLISHED_LABELS["fd_paper"], fontsize=8)
            targets.append((twin, "fd_paper"))
        for tax, m in targets:
            xs += [*pub.loc[pub["metric"] == m, xcol].dropna()]
            for v, g in pub[pub["metric"] == m].dropna(subset=[xcol]).groupby("variant"):
                _published_points(tax, g, xcol, variant_color.get(v, "0.2"), f"paper: {v} (read off)")
        arrow = {True: " (lower is better)", False: " (higher is better)"}.get(
            published.LOWER_IS_BETTER.get(metric, study.loc[study["metric"] == metric, "lower_is_better"].iloc[0]), "")
        ax.set(xlabel=xlabel, xscale=_scale(scale, xs), title=metric_label(metric) + arrow + mark)
        if axis == "steps":
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_steps_label))
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        for tax, _ in targets:
            for h, lab in zip(*tax.get_legend_handles_labels()):
                legend.setdefault(lab, h)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle(title + ("  (panels marked †: pipeline checks, not scores)" if checks else ""), fontsize=10)
    legend_below(fig, list(legend.values()), list(legend.keys()), ncol=min(4, max(1, len(legend))),
                 title="ours: mean ± sd over seeds; paper: read off its figures")
    written = save_figure(fig, out_stem)
    plt.close(fig)
    return written


def plot_study(study: pd.DataFrame, name: str, title: str, plots_dir: str | Path) -> list[Path]:
    """Write ``<plots_dir>/<name>_vs_steps.{png,svg}`` and ``<name>_vs_flops.{png,svg}``; return the paths."""
    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    for axis in X_AXES:
        out += plot_axis(study, name, title, axis, plots_dir / f"{name}_vs_{axis}")
    return out
