"""``python -m ssmttm loss-curves``: training-loss plots from the runs' log.csv files.

One figure per run (training loss, smoothed, plus validation loss at checkpoints) and one overlay
of every run, each as PNG and SVG. Runs are given as ``--run NAME=RUN_DIR ...`` (RUN_DIR holds the
trainer's log.csv and val.csv). The smoothing window is the config's ``plots.smooth``
(:class:`ssmttm.report.options.LossCurvesSettings`; ``--settings`` JSON from the rule, ``--smooth`` by hand).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from ssmttm import io, logs, settings
from ssmttm.report.options import LossCurvesSettings


def read_run(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    run_dir = Path(run_dir)
    log = pd.read_csv(run_dir / "log.csv")
    val_path = run_dir / "val.csv"
    val = pd.read_csv(val_path) if val_path.exists() and val_path.stat().st_size else pd.DataFrame()
    for need in ("step", "loss"):
        if need not in log.columns:
            raise ValueError(f"{run_dir / 'log.csv'}: no {need!r} column")
    return log, val


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


def loss_label(run_dir: str | Path) -> str:
    """The y label of a run's training loss: what it is, from the run's done.json recipe when present."""
    done = Path(run_dir) / "done.json"
    recipe = io.read_json(done).get("recipe", {}) if done.is_file() else {}
    ls = recipe.get("label_smoothing")
    if ls is None:
        return "training loss"
    return f"cross-entropy (label smoothing {ls:g}; validation: none)" if ls else "cross-entropy"


def plot_runs(runs: dict[str, Path], out_dir: Path, smooth_window: int, x: str = "step") -> list[Path]:
    """Write ``<out_dir>/<name>.{png,svg}`` per run and ``<out_dir>/all.{png,svg}``; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    data = {name: read_run(d) for name, d in runs.items()}
    for name, (log, val) in data.items():
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(log[x], log["loss"], color="0.8", lw=0.8, label="train (raw)")
        ax.plot(log[x], smooth(log["loss"].to_numpy(), smooth_window), lw=1.5, label=f"train (mean of {smooth_window})")
        if len(val) and "val_loss" in val.columns:
            ax.plot(val[x] if x in val.columns else val["step"], val["val_loss"], "o-", ms=4, label="validation")
        ax.set(xlabel=x, ylabel=loss_label(runs[name]), title=name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        written += save_figure(fig, out_dir / name)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (log, _) in data.items():
        ax.plot(log[x], smooth(log["loss"].to_numpy(), smooth_window), lw=1.3, label=name)
    ax.set(xlabel=x, ylabel="training loss (smoothed)", title="all runs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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
