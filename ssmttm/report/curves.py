"""``python -m ssmttm loss-curves``: training-loss plots from the runs' log.csv files.

One figure per run (training loss with the run's label smoothing, raw and smoothed, plus the
validation loss at checkpoints, without label smoothing and, when the run used it, with it) and one
overlay of every run, each as PNG and SVG. Runs are given as ``--run NAME=RUN_DIR ...`` (RUN_DIR holds
the trainer's log.csv, val.csv, flops.csv and done.json). The smoothing window is the config's
``plots.smooth`` (:class:`ssmttm.report.options.LossCurvesSettings`; ``--settings`` JSON from the rule,
``--smooth`` by hand).

Every figure of the report package puts its legend under the axes (:func:`legend_below`), never on
the data; the validation-loss figures of the studies are :mod:`ssmttm.report.valloss`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from ssmttm import io, logs, settings
from ssmttm.report.options import LossCurvesSettings

# x axes of the loss figures: log.csv column -> axis label with its unit
X_LABELS = {
    "step": "training step (optimizer updates)",
    "flops_6nd": "training FLOPs (6ND: N non-embedding parameters, D tokens seen)",
}
LOSS_UNIT = "cross-entropy per token (nats)"


def read_run(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(log.csv, val.csv) of a run; val.csv gains the ``flops_6nd`` of its step (flops.csv, written at
    the same checkpoints, else log.csv's row of that step) and is empty when the run had no validation."""
    run_dir = Path(run_dir)
    log = pd.read_csv(run_dir / "log.csv")
    for need in ("step", "loss"):
        if need not in log.columns:
            raise ValueError(f"{run_dir / 'log.csv'}: no {need!r} column")
    val_path = run_dir / "val.csv"
    val = pd.read_csv(val_path) if val_path.exists() and val_path.stat().st_size else pd.DataFrame()
    if len(val) and "val_loss" in val.columns and "flops_6nd" not in val.columns:
        flops_path = run_dir / "flops.csv"
        flops = pd.read_csv(flops_path) if flops_path.exists() and flops_path.stat().st_size else pd.DataFrame()
        if not {"step", "flops_6nd"} <= set(flops.columns):
            flops = log
        if "flops_6nd" in flops.columns:
            by_step = flops.drop_duplicates("step", keep="last").set_index("step")["flops_6nd"]
            val["flops_6nd"] = val["step"].map(by_step)
        else:
            val["flops_6nd"] = np.nan
    return log, val


def run_recipe(run_dir: str | Path) -> dict:
    """What a run's done.json says about it (experiment, variant, seed, the training recipe); {} without one."""
    done = Path(run_dir) / "done.json"
    return io.read_json(done) if done.is_file() else {}


def legend_below(fig, handles, labels, ncol: int | None = None, title: str | None = None, fontsize: float = 8):
    """One legend for the whole figure, under its axes and their labels, so it never covers data.

    The figure is laid out first (``tight_layout``: axes, tick labels and axis labels inside the figure),
    then the legend hangs from the figure's bottom edge; ``save_figure`` (``bbox_inches="tight"``)
    grows the saved image to hold it.
    """
    fig.tight_layout()
    ncol = ncol or max(1, min(3, len(labels)))
    return fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, fontsize=fontsize,
                      title=title, title_fontsize=fontsize, frameon=False)


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (window clipped at the start), so the curve stays causal."""
    if window <= 1 or len(y) == 0:
        return y
    c = np.cumsum(np.insert(np.asarray(y, dtype=float), 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def save_figure(fig, stem: Path) -> list[Path]:
    """``stem.png`` and ``stem.svg``, each written to a temporary name and renamed into place."""
    out = []
    for ext in ("png", "svg"):
        path = stem.with_suffix(f".{ext}")
        with io.atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=120, bbox_inches="tight")
        out.append(path)
    return out


def label_smoothing(run_dir: str | Path) -> float | None:
    """The label smoothing a run trained with (its done.json recipe); None when the run does not say."""
    ls = run_recipe(run_dir).get("recipe", {}).get("label_smoothing")
    return None if ls is None else float(ls)


def loss_label(run_dir: str | Path) -> str:
    """What a run's training loss is: its label smoothing, from the run's done.json recipe when present
    (validation loss is plain cross-entropy: ssmttm.train.loop.Trainer.validate)."""
    ls = label_smoothing(run_dir)
    if ls is None:
        return "training loss"
    return f"training loss (label smoothing {ls:g})" if ls else "training loss (no label smoothing)"


def run_title(name: str, run_dir: str | Path) -> str:
    """``simba_k1_seed0 (prefix-simba): training and validation loss``."""
    variant = run_recipe(run_dir).get("variant")
    return f"{name}{f' ({variant})' if variant else ''}: training and validation loss"


def plot_runs(runs: dict[str, Path], out_dir: Path, smooth_window: int, x: str = "step") -> list[Path]:
    """Write ``<out_dir>/<name>.{png,svg}`` per run and ``<out_dir>/all.{png,svg}``; return the paths.
    ``x``: a column of :data:`X_LABELS` (log.csv's ``step`` or ``flops_6nd``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    data = {name: read_run(d) for name, d in runs.items()}
    xlabel = X_LABELS.get(x, x)
    mean_of = f"trailing mean of {smooth_window} logged values"
    for name, (log, val) in data.items():
        train, ls = loss_label(runs[name]), label_smoothing(runs[name])
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        ax.plot(log[x], log["loss"], color="0.75", lw=0.8, label=f"{train}, as logged")
        ax.plot(log[x], smooth(log["loss"].to_numpy(), smooth_window), color="C0", lw=1.5, label=f"{train}, {mean_of}")
        if len(val) and "val_loss" in val.columns and x in val.columns:
            ax.plot(val[x], val["val_loss"], "o-", color="C1", ms=4, label="validation loss (no label smoothing)")
            if ls and "val_loss_smoothed" in val.columns:
                ax.plot(val[x], val["val_loss_smoothed"], "s--", color="C1", ms=3.5, alpha=0.6,
                        label=f"validation loss (label smoothing {ls:g}, as training)")
        ax.set(xlabel=xlabel, ylabel=LOSS_UNIT, title=run_title(name, runs[name]))
        ax.title.set_fontsize(10)
        ax.grid(alpha=0.3)
        legend_below(fig, *ax.get_legend_handles_labels(), ncol=2)
        written += save_figure(fig, out_dir / name)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (log, _) in data.items():
        ax.plot(log[x], smooth(log["loss"].to_numpy(), smooth_window), lw=1.3, label=name)
    smoothing = {label_smoothing(d) for d in runs.values()}
    what = loss_label(next(iter(runs.values()))) if len(smoothing) == 1 else "training loss (label smoothing per run)"
    ax.set(xlabel=xlabel, ylabel=LOSS_UNIT, title=f"{what} of every run, {mean_of}")
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3)
    legend_below(fig, *ax.get_legend_handles_labels(), ncol=3)
    written += save_figure(fig, out_dir / "all")
    plt.close(fig)
    return written


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ssmttm loss-curves", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="extend", nargs="+", required=True, metavar="NAME=RUN_DIR")
    p.add_argument("--out-dir", type=Path, required=True)
    settings.add_arguments(p, LossCurvesSettings)
    a = p.parse_args(argv)
    s = settings.from_args(p, LossCurvesSettings, a)
    log = logs.setup("ssmttm.report")
    runs = {}
    for item in a.run:
        name, sep, path = item.partition("=")
        if not sep or not name:
            p.error(f"--run {item!r}: expected NAME=RUN_DIR")
        runs[name] = Path(path)
    for path in plot_runs(runs, a.out_dir, s.smooth):
        log.info("wrote %s", path)
    return 0
