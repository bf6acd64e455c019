"""Validation loss over seeds (ssmttm.report.valloss): the t statistics, the per-study curves and summary
on synthetic runs with known means and intervals, and the figures' legend."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from test_curves import capture_figures

from ssmttm.report import valloss

T975_DF2 = 4.302652729749464  # t(0.975, 2): three seeds
T975_DF1 = math.tan(math.pi * 0.475)  # Cauchy: t(p, 1) = tan(pi (p - 1/2))


@pytest.mark.parametrize(("p", "df", "expected"), [
    (0.975, 1, T975_DF1),
    (0.975, 2, T975_DF2),
    (0.9, 2, (2 * 0.9 - 1) / math.sqrt(2 * 0.9 * 0.1)),  # df 2: (2p - 1) / sqrt(2 p (1 - p))
    (0.975, 30, 2.0422724563012373),
    (0.975, 1e7, 1.959964221767205),  # near the normal quantile, 1.959963985
    (0.025, 2, -T975_DF2),
    (0.5, 3, 0.0),
])
def test_t_quantile_closed_forms_and_tables(p, df, expected):
    assert valloss.t_quantile(p, df) == pytest.approx(expected, rel=1e-8, abs=1e-9)


def test_t_quantile_matches_scipy_at_fractional_df():
    stats = pytest.importorskip("scipy.stats")
    for df in (1.3, 2.94, 7.5, 120.0):
        for p in (0.9, 0.975, 0.995):
            assert valloss.t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)
    with pytest.raises(ValueError):
        valloss.t_quantile(1.0, 2)


def test_t_interval_of_three_seeds():
    iv = valloss.t_interval([1.0, 2.0, 3.0])
    half = T975_DF2 * 1.0 / math.sqrt(3)  # sd 1
    assert (iv.n, iv.mean, iv.sd) == (3, 2.0, 1.0)
    assert (iv.low, iv.high, iv.half_width) == pytest.approx((2 - half, 2 + half, half))
    one = valloss.t_interval([5.0, float("nan")])
    assert one.n == 1 and one.mean == 5.0 and math.isnan(one.low) and math.isnan(one.half_width)


def test_welch_interval():
    a, b = [5.0, 5.1, 5.2], [5.3, 5.5, 5.7]  # sd 0.1 and 0.2
    diff, lo, hi, df = valloss.welch_interval(a, b)
    se = math.sqrt(0.01 / 3 + 0.04 / 3)
    assert diff == pytest.approx(-0.4)
    assert df == pytest.approx(50 / 17)  # Welch-Satterthwaite: (va + vb)^2 / (va^2/2 + vb^2/2)
    assert valloss.t_cdf((hi - diff) / se, df) == pytest.approx(0.975)
    assert (lo + hi) / 2 == pytest.approx(diff)
    assert math.isnan(valloss.welch_interval([1.0], [2.0, 3.0])[1])


# --- synthetic runs -------------------------------------------------------------------------------------
# two experiments x 3 seeds; the final (step 200) losses are a = 5.0/5.1/5.2 and b = 5.3/5.5/5.7
FINAL = {"simba": [5.0, 5.1, 5.2], "transformer": [5.3, 5.5, 5.7]}
VARIANT = {"simba": "prefix-simba", "transformer": "cross-transformer", "mamba": "prefix-mamba"}


def make_run(root, exp, seed, steps, losses, n_params=1000):
    d = root / exp / f"seed{seed}"
    d.mkdir(parents=True)
    tokens = [s * 100 for s in steps]
    flops = [6 * n_params * t for t in tokens]
    pd.DataFrame({"step": steps, "val_loss": losses, "val_loss_smoothed": [x + 0.1 for x in losses],
                  "n": 6, "n_tokens": 1536}).to_csv(d / "val.csv", index=False)
    pd.DataFrame({"step": steps, "tokens_seen": tokens, "flops_6nd": flops}).to_csv(d / "flops.csv", index=False)
    log_steps = list(range(5, max(steps) + 1, 5))
    pd.DataFrame({"step": log_steps, "loss": 6.0, "flops_6nd": [6 * n_params * s * 100 for s in log_steps]}).to_csv(
        d / "log.csv", index=False)
    done = d / "done.json"
    done.write_text(json.dumps({"experiment": exp, "variant": VARIANT[exp], "seed": seed,
                                "recipe": {"label_smoothing": 0.1, "seed": seed}}))
    return done


def make_runs(root):
    done = []
    for exp, final in FINAL.items():
        for seed, last in enumerate(final):
            done.append(make_run(root / "train", exp, seed, [50, 100, 200], [last + 1.0, last + 0.5, last]))
    # mamba validated at 100 and 200 only, one seed: the matched step is still 200
    done.append(make_run(root / "train", "mamba", 0, [100, 200], [5.6, 4.9], n_params=2000))
    return done


@pytest.fixture
def runs(tmp_path):
    return make_runs(tmp_path)


STUDIES = {
    "curves": {"kind": "curve", "experiments": ["simba", "transformer"], "title": "SSM vs Transformer"},
    "variants": {"kind": "comparison", "experiments": ["mamba", "simba", "transformer"], "title": ""},
    "matched": {"kind": "comparison", "experiments": ["simba", "transformer"], "title": "At 100", "step": 100},
}


def _main(runs, tmp_path, studies=STUDIES):
    plots = tmp_path / "plots"
    return valloss.main(["--run", *map(str, runs), "--settings", json.dumps({"studies": studies}),
                         "--plots", *[str(plots / f"{s}.{ext}") for s in studies for ext in ("png", "svg")],
                         "--csv", str(tmp_path / "val_loss.csv"), "--json", str(tmp_path / "val_loss.json")])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The stage run once on the synthetic runs, every figure's legend checked as it is saved."""
    tmp = tmp_path_factory.mktemp("valloss")
    with pytest.MonkeyPatch.context() as mp:
        checked = capture_figures(mp, valloss)
        assert _main(make_runs(tmp), tmp) == 0
    assert len(checked) == len(STUDIES)
    return tmp


def test_summary_of_synthetic_runs_has_the_known_means_and_intervals(built):
    tmp_path = built
    summary = json.loads((tmp_path / "val_loss.json").read_text())
    assert summary["level"] == 0.95 and "t-interval" in summary["statistic"] and "Welch" in summary["difference"]
    curves = summary["studies"]["curves"]
    assert curves["step"] == 200 and curves["title"] == "SSM vs Transformer"
    a, b = curves["experiments"]
    assert (a["experiment"], a["variant"], a["n_seeds"], a["seeds"]) == ("simba", "prefix-simba", 3, [0, 1, 2])
    assert a["mean"] == pytest.approx(5.1) and a["sd"] == pytest.approx(0.1)
    assert a["half_width"] == pytest.approx(T975_DF2 * 0.1 / math.sqrt(3))
    assert (a["ci_low"], a["ci_high"]) == pytest.approx((5.1 - a["half_width"], 5.1 + a["half_width"]))
    assert b["mean"] == pytest.approx(5.5) and b["half_width"] == pytest.approx(T975_DF2 * 0.2 / math.sqrt(3))
    assert a["flops_6nd"] == 6 * 1000 * 200 * 100
    (d,) = curves["differences"]
    assert (d["a"], d["b"]) == ("simba", "transformer") and d["diff"] == pytest.approx(-0.4)
    half = valloss.t_quantile(0.975, 50 / 17) * math.sqrt(0.01 / 3 + 0.04 / 3)
    assert d["df"] == pytest.approx(50 / 17)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((-0.4 - half, -0.4 + half))
    # a study step is used as given; the last common step otherwise, even when one experiment validated less
    assert summary["studies"]["matched"]["step"] == 100
    assert summary["studies"]["matched"]["experiments"][0]["mean"] == pytest.approx(5.6)
    variants = summary["studies"]["variants"]
    assert variants["step"] == 200 and variants["title"] == "variants"
    mamba = variants["experiments"][0]
    assert mamba["n_seeds"] == 1 and mamba["half_width"] is None and mamba["ci_low"] is None  # JSON: no NaN
    assert [(x["a"], x["b"]) for x in variants["differences"]] == [
        ("mamba", "simba"), ("mamba", "transformer"), ("simba", "transformer")]
    assert variants["differences"][0]["ci_low"] is None


def test_curve_points_per_step(built):
    tmp_path = built
    pts = pd.read_csv(tmp_path / "val_loss.csv")
    assert list(pts.columns) == list(valloss.CURVE_COLUMNS)
    simba = pts[(pts["study"] == "curves") & (pts["experiment"] == "simba")]
    assert list(simba["step"]) == [50, 100, 200]
    assert np.allclose(simba["mean"], [6.1, 5.6, 5.1])
    assert np.allclose(simba["ci_high"] - simba["mean"], T975_DF2 * 0.1 / math.sqrt(3))
    assert list(simba["flops_6nd"]) == [6 * 1000 * s * 100 for s in (50, 100, 200)]
    assert set(simba["interval"]) == {"t95"} and set(simba["seeds"]) == {"0 1 2"}
    mamba = pts[(pts["study"] == "variants") & (pts["experiment"] == "mamba")]
    assert list(mamba["n_seeds"]) == [1, 1] and mamba["ci_low"].isna().all()
    for s in STUDIES:
        assert (tmp_path / "plots" / f"{s}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / "plots" / f"{s}.svg").read_text().lstrip().startswith("<?xml")


def test_figure_has_a_line_and_band_per_experiment_and_names_the_statistic(runs, tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    rs = valloss.read_runs(runs)
    pts = valloss.curve_points(rs, {"curves": STUDIES["curves"]})
    fig = valloss.draw_study(pts, valloss.study_runs(rs, "curves", STUDIES["curves"]), "SSM vs Transformer")
    steps, flops = fig.axes
    assert steps.get_xlabel() == "training step (optimizer updates)"
    assert flops.get_xlabel().startswith("training FLOPs (6ND")
    assert "validation" in steps.get_ylabel() and "no label smoothing" in steps.get_ylabel()
    for ax in (steps, flops):
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(bands) == 2  # one 95 % band per experiment
    leg = fig.legends[0]
    assert "95 % Student t-interval" in leg.get_title().get_text()
    assert [t.get_text() for t in leg.get_texts()] == [
        "prefix-simba (simba), 3 seeds", "cross-transformer (transformer), 3 seeds", "single seeds"]
    plt.close(fig)


def test_plots_must_be_one_png_and_svg_per_study(runs, tmp_path):
    with pytest.raises(SystemExit):
        valloss.main(["--run", *map(str, runs), "--settings", json.dumps({"studies": STUDIES}),
                      "--plots", str(tmp_path / "curves.png"), "--csv", str(tmp_path / "p.csv"),
                      "--json", str(tmp_path / "s.json")])


def test_a_study_without_runs_still_gets_its_figure(runs, tmp_path):
    studies = {"empty": {"kind": "comparison", "experiments": ["not_run"]}}
    assert _main(runs, tmp_path, studies) == 0
    summary = json.loads((tmp_path / "val_loss.json").read_text())
    assert summary["studies"]["empty"] == {"title": "empty", "step": None, "experiments": [], "differences": []}
    assert (tmp_path / "plots" / "empty.png").exists()
