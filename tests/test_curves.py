import json

import numpy as np
import pandas as pd
import pytest

from ssmttm.report import curves


def legend_clear_of_data(fig) -> None:
    """Every legend of ``fig`` lies outside every axes area, so it covers no plotted line's data (checked too,
    in display coordinates), and inside the area ``save_figure`` writes (``bbox_inches="tight"``)."""
    from matplotlib.transforms import Bbox

    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends, "no legend"
    saved = fig.get_tightbbox(r).transformed(fig.dpi_scale_trans)  # inches -> display
    for leg in legends:
        box = leg.get_window_extent(r)
        assert saved.x0 - 1 <= box.x0 and box.x1 <= saved.x1 + 1 and saved.y0 - 1 <= box.y0, "legend cut off"
        for ax in fig.axes:
            if not ax.get_visible():
                continue
            assert not box.overlaps(ax.get_window_extent(r)), f"legend over the axes of {ax.get_title()!r}"
            for line in ax.get_lines():
                xy = np.asarray(line.get_xydata(), dtype=float)
                xy = xy[np.isfinite(xy).all(axis=1)]
                if len(xy):
                    data = Bbox.null()
                    data.update_from_data_xy(ax.transData.transform(xy), ignore=True)
                    assert not box.overlaps(data), f"legend over {line.get_label()!r}"


def capture_figures(monkeypatch, module) -> list:
    """Check every figure ``module`` saves (its ``save_figure``) with :func:`legend_clear_of_data`, then
    save it as usual; returns the list of checked figures."""
    seen, save = [], module.save_figure

    def check_and_save(fig, stem):
        legend_clear_of_data(fig)
        seen.append(fig)
        return save(fig, stem)

    monkeypatch.setattr(module, "save_figure", check_and_save)
    return seen


def test_the_legend_check_catches_a_legend_on_the_data():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="line")
    ax.legend(loc="center")
    with pytest.raises(AssertionError, match="legend over"):
        legend_clear_of_data(fig)
    ax.get_legend().remove()
    curves.legend_below(fig, *ax.get_legend_handles_labels())
    legend_clear_of_data(fig)
    plt.close(fig)


def test_smooth_is_a_trailing_mean():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert np.allclose(curves.smooth(y, 2), [1.0, 1.5, 2.5, 3.5])
    assert np.allclose(curves.smooth(y, 1), y)


def _runs(tmp_path, done=True):
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        steps = np.arange(1, 51)
        pd.DataFrame({"step": steps, "loss": 5 / np.sqrt(steps), "flops_6nd": steps * 1e9}).to_csv(
            d / "log.csv", index=False)
        pd.DataFrame({"step": [25, 50], "val_loss": [1.2, 1.0], "val_loss_smoothed": [1.3, 1.1], "n": [4, 4]}).to_csv(
            d / "val.csv", index=False)
        pd.DataFrame({"step": [25, 50], "flops_6nd": [2.5e10, 5e10]}).to_csv(d / "flops.csv", index=False)
        if done:
            (d / "done.json").write_text(json.dumps({"experiment": name, "variant": "prefix-simba", "seed": 0,
                                                     "recipe": {"label_smoothing": 0.1}}))


def test_plots_per_run_and_overlay(tmp_path, monkeypatch):
    _runs(tmp_path)
    checked = capture_figures(monkeypatch, curves)
    rc = curves.main(["--run", f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}", "--settings", '{"smooth": 5}',
                      "--out-dir", str(tmp_path / "plots")])
    assert rc == 0
    assert len(checked) == 3  # a, b, all: every one with its legend off the data
    assert "mean of 5" in (tmp_path / "plots" / "a.svg").read_text()  # the legend names the window
    for stem in ("a", "b", "all"):
        png = tmp_path / "plots" / f"{stem}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / "plots" / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
    # run by hand: the schema's default window (plots.smooth), or --smooth
    assert curves.main(["--run", f"a={tmp_path / 'a'}", "--run", f"b={tmp_path / 'b'}", "--smooth", "3",
                        "--out-dir", str(tmp_path / "byhand")]) == 0
    assert "mean of 3" in (tmp_path / "byhand" / "a.svg").read_text()


def test_per_run_labels_say_what_each_curve_is(tmp_path, monkeypatch):
    """Axis labels name the loss and its unit and the x unit; the title the run and its variant; the legend
    which curve is training (with its label smoothing) and which validation (with and without)."""
    _runs(tmp_path)
    checked = capture_figures(monkeypatch, curves)
    curves.plot_runs({"a": tmp_path / "a"}, tmp_path / "plots", 5)
    ax = checked[0].axes[0]
    assert ax.get_title() == "a (prefix-simba): training and validation loss"
    assert ax.get_xlabel() == "training step (optimizer updates)"
    assert ax.get_ylabel() == "cross-entropy per token (nats)"
    labels = checked[0].legends[0].get_texts()
    assert [t.get_text() for t in labels] == [
        "training loss (label smoothing 0.1), as logged",
        "training loss (label smoothing 0.1), trailing mean of 5 logged values",
        "validation loss (no label smoothing)",
        "validation loss (label smoothing 0.1, as training)",
    ]
    overlay = checked[-1].axes[0]
    assert overlay.get_title() == "training loss (label smoothing 0.1) of every run, trailing mean of 5 logged values"
    # against FLOPs: the validation points sit at their checkpoint's FLOPs (flops.csv), not at their step
    checked.clear()
    curves.plot_runs({"a": tmp_path / "a"}, tmp_path / "flops", 5, x="flops_6nd")
    ax = checked[0].axes[0]
    assert ax.get_xlabel().startswith("training FLOPs (6ND")
    val = next(line for line in ax.get_lines() if line.get_label() == "validation loss (no label smoothing)")
    assert list(val.get_xdata()) == [2.5e10, 5e10]


def test_val_flops_fall_back_to_the_log(tmp_path):
    _runs(tmp_path)
    (tmp_path / "a" / "flops.csv").unlink()
    _, val = curves.read_run(tmp_path / "a")
    assert list(val["flops_6nd"]) == [25e9, 50e9]  # log.csv's rows of the same steps


def test_loss_label_says_the_runs_label_smoothing(tmp_path):
    from ssmttm.report.curves import loss_label

    assert loss_label(tmp_path) == "training loss"  # no done.json: say nothing it does not know
    (tmp_path / "done.json").write_text(json.dumps({"recipe": {"label_smoothing": 0.2}}))
    assert loss_label(tmp_path) == "training loss (label smoothing 0.2)"
    (tmp_path / "done.json").write_text(json.dumps({"recipe": {"label_smoothing": 0.0}}))
    assert loss_label(tmp_path) == "training loss (no label smoothing)"


@pytest.mark.parametrize("axis", ["steps", "flops"])
def test_evaluation_curves_keep_their_legend_off_the_panels(tmp_path, monkeypatch, axis):
    """The curve study's figure: one legend for every panel, under them; a pipeline-check panel says so in
    its title."""
    from ssmttm.eval.evaluate import PIPELINE_CHECK
    from ssmttm.report import evalcurves, tables

    rows = []
    for exp, variant in (("simba_k1", "prefix-simba"), ("transformer_k1", "cross-transformer")):
        for seed in (0, 1, 2):
            for step in (50, 100, 200):
                for metric, status, lower in (("fd_logmel", "score", True), ("kl_passt", PIPELINE_CHECK, True)):
                    rows.append(dict(system_kind="generated", experiment=exp, variant=variant, preset="tiny", kappa=1,
                                     seed=seed, step=step, flops_6nd=step * 3e8, metric=metric, status=status,
                                     value=400 - step / 10 + seed, lower_is_better=lower, score_file="x"))
    for metric in ("fd_logmel", "kl_passt"):
        rows.append(dict(system_kind="ground_truth", experiment=None, metric=metric, value=150.0, status="score",
                         lower_is_better=True, score_file="x"))
    df = pd.DataFrame(rows)
    for c in tables.ROW_KEYS:
        if c not in df.columns:
            df[c] = None
    study = tables.study_table(tables.aggregate(df), "curves",
                               {"kind": "curve", "experiments": ["simba_k1", "transformer_k1"], "published": True,
                                "step": None})
    checked = capture_figures(monkeypatch, evalcurves)
    evalcurves.plot_axis(study, "curves", "Curves", axis, tmp_path / f"curves_vs_{axis}")
    fig = checked[0]
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert any(t.startswith("KL (PaSST)") and t.endswith("†") for t in titles)
    assert any(t.startswith("FD (log-mel)") and not t.endswith("†") for t in titles)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "simba_k1" in labels and "ground truth" in labels and len(labels) == len(set(labels))
