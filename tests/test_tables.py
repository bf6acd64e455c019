import json
import math

import numpy as np
import pandas as pd
import pytest

from ssmttm.report import evalcurves, published, tables

PROTO = {
    "fad_vggish": dict(model="vggish", checkpoint="vggish_tiny.pth", checkpoint_sha256="a" * 64, sample_rate=16000,
                       window_s=0.96, hop_s=0.96, lower_is_better=True),
    "clap_score": dict(model="clap", checkpoint="clap_tiny.pt", checkpoint_sha256="b" * 64, sample_rate=48000,
                       window_s=10.0, hop_s=None, lower_is_better=False),
}
EXPS = {"simba_k1": ("prefix-simba", 1000.0), "transformer_k1": ("cross-transformer", 1200.0)}
STEPS = (100, 200)
SEEDS = (0, 1, 2)


def value(exp, step, seed, metric):
    """Deterministic fake scores; the test recomputes their mean / sd."""
    base = {"fad_vggish": 10.0, "clap_score": 0.1}[metric]
    return base + (0.5 if exp == "transformer_k1" else 0.0) - step / 1000 + 0.25 * seed


def row(metric, v, **kw):
    r = dict.fromkeys(published.ROW_KEYS)
    r.update(PROTO[metric], metric=metric, value=v, ci_low=v - 0.1, ci_high=v + 0.2, n=8, n_ref=8, bootstrap=200,
             status="pipeline check, not a score", prompt_set="demo", source="test")
    r.update(kw)
    return r


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tables")
    files = []
    for metric in PROTO:
        rows = []
        for exp, (variant, per_step) in EXPS.items():
            for step in STEPS:
                for seed in SEEDS:
                    rows.append(row(metric, value(exp, step, seed, metric), system_kind="generated", experiment=exp,
                                    variant=variant, preset="tiny", kappa=1, seed=seed, step=step, params=90904,
                                    stages="two-stage" if exp == "simba_k1" else "single-stage",
                                    flops_6nd=per_step * step, flops_measured=1.2 * per_step * step))
        rows.append(row(metric, 1.5, system_kind="ground_truth", experiment=None))
        rows.append(row(metric, 2.5, system_kind="resynth", experiment="resynth_k4", status="score"))
        rows.append(row(metric, 3.5, system_kind="musicgen", experiment="musicgen_small", seed=None, step=None))
        rows.append(row(metric, 4.5, system_kind="external", experiment="other_model", seed=None, step=None))
        path = tmp / f"{metric}.json"
        path.write_text(json.dumps({"rows": rows}))
        files.append(path)
    bad = tmp / "broken.json"
    bad.write_text("{not json")
    studies = {
        "curves": {"kind": "curve", "experiments": ["simba_k1", "transformer_k1"], "title": "Two-stage curves",
                   "published": True},
        "variants_k1": {"kind": "comparison", "experiments": ["simba_k1", "transformer_k1", "mamba_k1"],
                        "title": "Variant comparison (kappa 1)", "published": False},
        "matched": {"kind": "comparison", "experiments": ["simba_k1", "transformer_k1"], "step": 100,
                    "title": "Two-stage vs single-stage at matched steps", "published": False},
    }
    out, plots = tmp / "tables", tmp / "plots"
    rc = tables.main(["--scores", *map(str, files), str(bad), "--studies", json.dumps(studies),
                      "--out-dir", str(out), "--plots",
                      *[str(plots / f"curves_vs_{x}.{ext}") for x in ("steps", "flops") for ext in ("png", "svg")]])
    assert rc == 0
    return out, plots


def test_means_and_sds_over_seeds(built):
    out, _ = built
    df = pd.read_csv(out / "curves.csv")
    for exp in EXPS:
        for step in STEPS:
            for metric in PROTO:
                r = df[(df.experiment == exp) & (df.step == step) & (df.metric == metric)]
                assert len(r) == 1
                vals = np.array([value(exp, step, s, metric) for s in SEEDS])
                assert r["mean"].iloc[0] == pytest.approx(vals.mean())
                assert r["sd"].iloc[0] == pytest.approx(vals.std(ddof=1))
                assert r["n_seeds"].iloc[0] == 3
                assert r["ci_low"].iloc[0] == pytest.approx(vals.mean() - 0.1)
                assert r["ci_high"].iloc[0] == pytest.approx(vals.mean() + 0.2)
                assert r["n"].iloc[0] == 8
                assert r["checkpoint_sha256"].iloc[0] == PROTO[metric]["checkpoint_sha256"]
                assert r["sample_rate"].iloc[0] == PROTO[metric]["sample_rate"]
                assert r["flops_6nd"].iloc[0] == pytest.approx(EXPS[exp][1] * step)
    gt = df[df.system_kind == "ground_truth"]
    assert set(gt.metric) == set(PROTO) and gt["mean"].eq(1.5).all()
    assert gt["sd"].isna().all()  # one "seed": sd blank
    assert (df[df.system_kind == "resynth"].experiment == "resynth_k4").all()


def test_comparison_keeps_the_last_step_and_all_reference_rows(built):
    out, _ = built
    df = pd.read_csv(out / "variants_k1.csv")
    gen = df[df.system_kind == "generated"]
    assert set(gen.step) == {200} and set(gen.experiment) == set(EXPS)
    assert {"ground_truth", "resynth", "published"} <= set(df.system_kind)
    pub = df[df.system_kind == "published"]
    assert set(pub.experiment) == {"musicgen_small_paper", "musicgen_small_released"}  # no curve points here


def test_baselines_sit_in_every_table_beside_the_published_rows(built):
    out, _ = built
    for study in ("curves", "variants_k1", "matched"):
        df = pd.read_csv(out / f"{study}.csv")
        kinds = list(dict.fromkeys(df.system_kind))
        assert kinds.index("generated") < kinds.index("musicgen") < kinds.index("published"), kinds
        mg = df[df.system_kind == "musicgen"]
        assert set(mg.experiment) == {"musicgen_small"} and mg["mean"].eq(3.5).all()
        assert df[df.system_kind == "external"]["mean"].eq(4.5).all()
        md = (out / f"{study}.md").read_text()
        assert "| musicgen | musicgen_small" in md and "| external | other_model" in md


def test_comparison_at_a_matched_step_labels_two_stage_systems(built):
    out, _ = built
    df = pd.read_csv(out / "matched.csv")
    gen = df[df.system_kind == "generated"]
    assert set(gen.step) == {100} and set(gen.experiment) == set(EXPS)
    assert set(gen[gen.experiment == "simba_k1"].stages) == {"two-stage"}
    md = (out / "matched.md").read_text()
    assert "prefix-simba (κ 1 + refiner)" in md and "cross-transformer (κ 1)" in md


def test_published_rows_and_values(built):
    out, _ = built
    df = pd.read_csv(out / "curves.csv")
    pub = df[df.system_kind == "published"].set_index(["experiment", "metric", "step"])["mean"]
    assert pub[("musicgen_small_paper", "fad_vggish", 1_000_000)] == pytest.approx(3.1)
    assert pub[("musicgen_small_paper", "kl_passt", 1_000_000)] == pytest.approx(1.28)
    assert pub[("musicgen_small_released", "fad_vggish", 1_000_000)] == pytest.approx(4.88)
    assert pub[("musicgen_small_released", "clap_score", 1_000_000)] == pytest.approx(0.27)
    assert pub[("paper_prefix_simba_k1", "fd_paper", 5000)] == pytest.approx(164)
    assert pub[("paper_prefix_simba_k1", "clap_score", 40000)] == pytest.approx(0.241)
    assert pub[("paper_cross_transformer_k1", "kl_passt", 400000)] == pytest.approx(1.71)
    r = df[(df.experiment == "paper_cross_transformer_k1") & (df.step == 20000) & (df.metric == "clap_score")].iloc[0]
    assert (r.ci_low, r.ci_high) == (pytest.approx(0.113), pytest.approx(0.119))  # +-0.003 read-off
    assert r.metric_label == "CLAP score" and "read-off" in r.source
    fd = df[(df.metric == "fd_paper")]
    assert (fd.metric_label == "FD (paper, likely OpenL3)").all()
    # every curve point: 5 SiMBA + 6 Transformer steps x 3 metrics
    assert len(df[df.experiment.str.startswith("paper_")]) == 33
    flat = pd.read_csv(out / "all_scores.csv")
    assert (flat.system_kind == "published").sum() == 33 + 6
    assert len(flat[flat.system_kind != "published"]) == 2 * (2 * 2 * 3 + 4)  # the broken file is skipped


def test_markdown_daggers_and_latex_escaping(built):
    out, _ = built
    md = (out / "curves.md").read_text()
    assert md.startswith("# Two-stage curves")
    line = next(ln for ln in md.splitlines() if "| simba_k1†" in ln and "| 200 |" in ln)
    vals = np.array([value("simba_k1", 200, s, "fad_vggish") for s in SEEDS])
    assert f"{vals.mean():.1f} ± {vals.std(ddof=1):.1f}" in line  # three significant digits of the mean
    assert "| demo |" in line  # two prompt sets in the table (ours, MusicCaps for published): a column
    assert "| resynth_k4 |" in md  # a "score" row carries no dagger
    assert "† pipeline check, not a score" in md
    assert "sha256 aaaaaaaaaaaa" in md and "16000 Hz" in md
    tex = (out / "curves.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"simba\_k1\textsuperscript{\dag}" in tex
    assert r"$\pm$" in tex and "±" not in tex and "†" not in tex
    body = tex.replace(r"\_", "").replace(r"\label{tab:curves}", "")
    assert "_" not in body  # every underscore escaped
    assert tables.tex_escape("50% & $x_1$ #{a}~^\\") == (
        r"50\% \& \$x\_1\$ \#\{a\}\textasciitilde{}\textasciicircum{}\textbackslash{}")


def test_curve_figures_written(built):
    _, plots = built
    for axis in ("steps", "flops"):
        png, svg = plots / f"curves_vs_{axis}.png", plots / f"curves_vs_{axis}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
        text = svg.read_text()
        assert text.lstrip().startswith("<?xml") and len(text) > 20_000
    assert not (plots / "variants_k1_vs_steps.png").exists()  # comparison studies get no curves


def test_paper_fd_on_a_twin_axis_of_our_fd():
    study = pd.DataFrame([
        dict(system_kind="generated", experiment="a", metric="fd_clap", variant="prefix-simba"),
        dict(system_kind="published", experiment="paper_prefix_simba_k1", metric="fd_paper", variant="prefix-simba"),
        dict(system_kind="published", experiment="paper_prefix_simba_k1", metric="kl_passt", variant="prefix-simba"),
    ])
    assert evalcurves._panels(study) == (["fd_clap"], "fd_clap")
    assert evalcurves._panels(study[study.metric != "fd_clap"]) == (["kl_passt", "fd_paper"], None)


def test_formatting():
    assert tables.fmt_value(164.0, 1.234) == "164 ± 1"
    assert tables.fmt_value(0.06, 0.0123) == "0.0600 ± 0.0123"
    assert tables.fmt_value(0.237, 0.0123) == "0.237 ± 0.012"
    assert tables.fmt_value(5.17, None) == "5.17"
    assert tables.fmt_value(math.nan) == ""

def test_studies_are_checked_against_the_schema_and_filled_from_it(tmp_path, capsys):
    """--studies (or the rule's --settings) is the config's studies: the schema names a bad one, fills the rest."""
    for studies, msg in (({"x": {"kind": "bar", "experiments": ["a"]}}, "'bar' is not one of"),
                         ({"../x": {"kind": "curve", "experiments": ["a"]}}, "'../x' does not match"),
                         ({"x": {"kind": "curve"}}, "'experiments' is a required property")):
        with pytest.raises(SystemExit):
            tables.main(["--scores", "x.json", "--studies", json.dumps(studies), "--out-dir", str(tmp_path)])
        err = capsys.readouterr().err
        assert "--studies / config key studies" in err and msg in err
    with pytest.raises(SystemExit):
        tables.main(["--scores", "x.json", "--studies", "not json", "--out-dir", str(tmp_path)])
    assert tables.with_defaults({"x": {"kind": "curve", "experiments": ["a"]}}) == {
        "x": {"kind": "curve", "experiments": ["a"], "title": "x", "published": True, "step": None}}
    # as the rule runs it
    scores = tmp_path / "s.json"
    scores.write_text(json.dumps({"rows": [row("fad_vggish", 1.5, system_kind="ground_truth")]}))
    assert tables.main(["--scores", str(scores), "--settings", json.dumps({"studies": {
        "x": {"kind": "comparison", "experiments": ["a"], "title": "", "published": False, "step": None}}}),
        "--out-dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "x.md").read_text().startswith("# x")


def test_published_rows_carry_no_unpublished_sizes():
    """MusicGen-small's N is not published: its rows leave params / FLOPs blank (the claims table counts them);
    the paper's curve points derive FLOPs from the paper's own parameter counts and recipe."""
    for r in published.musicgen_rows():
        assert r["params"] is None and r["flops_6nd"] is None and r["step"] == 1_000_000
    pt = [r for r in published.curve_rows(["prefix-simba"]) if r["step"] == 5000][0]
    assert pt["flops_6nd"] == pytest.approx(6 * (281.04e6 - 1025 * 1024) * 5000 * 128 * 2588)
