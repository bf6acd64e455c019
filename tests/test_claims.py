import json

import pandas as pd
import pytest

from ssmttm.report import claims, published

MG = 6 * 361e6 * 1_000_000 * 192 * 1500  # MusicGen-small 6ND (docs/reference.md §4)


def config(preset="paper"):
    """The claims experiment's recipe as the rule passes it (--settings)."""
    return {"variant": "prefix-simba", "preset": preset, "kappa": 1, "steps": 100_000, "batch_size": 4,
            "grad_accum": 32, "max_frames": 2584}


def make_run(d, preset="paper", flops_csv=True):
    d.mkdir(parents=True)
    if flops_csv:
        pd.DataFrame({"step": [200, 100], "tokens_seen": [2000, 1000], "flops_6nd": [MG / 100, MG / 200],
                      "measured_forward_flops_per_token": [7.0, 7.0],
                      "measured_flops_total": [MG / 50, MG / 100]}).to_csv(d / "flops.csv", index=False)
    (d / "done.json").write_text(json.dumps({
        "step": 200, "tokens_seen": 2000, "flops_6nd": MG / 100, "measured_forward_flops_per_token": 7.0,
        "measured_flops_total": MG / 50, "n_params": 281_040_000, "n_params_non_embedding": 279_990_400,
        "preset": preset, "variant": "prefix-simba", "kappa": 1, "world_size": 1}))
    return d


@pytest.fixture()
def manifest(tmp_path):
    # 457 h of training audio (two clips of 228.5 h, absurd but exact) and one valid clip of 1 h
    df = pd.DataFrame({"clip_id": ["a", "b", "c"], "split": ["train", "train", "valid"],
                       "seconds": [457 * 1800.0, 457 * 1800.0, 3600.0]})
    path = tmp_path / "manifest.parquet"
    df.to_parquet(path, index=False)
    return path


def run_claims(tmp_path, manifest, cfg, *runs, flags=()):
    out = tmp_path / "tables"
    rc = claims.main(["--settings", json.dumps(cfg), "--manifest", str(manifest), "--runs", *runs,
                      "--experiment", "simba_k1", "--out-dir", str(out), *flags])
    return rc, out


def test_percentages_exact(tmp_path, manifest):
    run = make_run(tmp_path / "run")
    rc, out = run_claims(tmp_path, manifest, config(), f"simba_k1={run}")
    assert rc == 0
    df = pd.read_csv(out / "claims.csv").set_index("quantity")
    data = df.loc["% of data (vs MusicGen's 20,000 h)"]
    assert data.this_run == pytest.approx(2.285)  # 457 / 20000
    assert data.paper_recipe == pytest.approx(2.285) and data.paper_claim == 2
    assert df.loc["training audio", "this_run"] == pytest.approx(457.0)
    flops = df.loc["% of MusicGen-small FLOPs (6ND)"]
    assert flops.this_run == pytest.approx(1.0) and flops.paper_claim == 9
    d_cfg = 100_000 * 4 * 32 * (2584 + 1)
    assert df.loc["positions seen D", "as_configured"] == d_cfg
    assert flops.as_configured == pytest.approx(100 * 6 * 279_990_400 * d_cfg / MG)
    assert flops.paper_recipe == pytest.approx(100 * 6 * 281.04e6 * 100_000 * 128 * 2588 / MG)
    assert flops.paper_recipe == pytest.approx(9.0, abs=0.1)
    measured = df.loc["% of MusicGen-small FLOPs (measured)"]
    assert measured.this_run == pytest.approx(2.0)
    assert measured.as_configured == pytest.approx(100 * 3 * 7.0 * d_cfg / MG)
    assert df.loc["optimizer steps", "this_run"] == 200  # the last flops.csv row, not the first
    md = (out / "claims.md").read_text()
    assert "| % of data (vs MusicGen's 20,000 h) | 2.285 | 2.285 | 2.285 | 2 | % |" in md
    tex = (out / "claims.tex").read_text()
    assert r"\% of data" in tex and r"\toprule" in tex and "simba\\_k1" in tex


def test_other_runs_and_done_json_fallback(tmp_path, manifest):
    run = make_run(tmp_path / "a", flops_csv=False)  # done.json only
    other = make_run(tmp_path / "b")
    rc, out = run_claims(tmp_path, manifest, config(), f"simba_k1_seed0={run}", f"transformer_k1={other}",
                         f"broken={tmp_path / 'missing'}")
    assert rc == 0
    df = pd.read_csv(out / "claims.csv").set_index("quantity")
    assert df.loc["% of MusicGen-small FLOPs (6ND)", "this_run"] == pytest.approx(1.0)
    assert df.loc["% of MusicGen-small FLOPs (6ND), run transformer_k1", "this_run"] == pytest.approx(1.0)
    assert not any("broken" in q for q in df.index)  # an unreadable run is skipped, named in the log


def test_configured_model_differs_from_run(tmp_path, manifest):
    """A tiny demo run against the paper config: N as configured comes from the model built on meta."""
    run = make_run(tmp_path / "run", preset="tiny")
    rc, out = run_claims(tmp_path, manifest, config("paper"), f"simba_k1={run}")
    assert rc == 0
    df = pd.read_csv(out / "claims.csv").set_index("quantity")
    n_cfg = df.loc["parameters N (non-embedding)", "as_configured"]
    assert n_cfg == pytest.approx(281.04e6 - 1025 * 1024, rel=1e-3)  # docs/reference.md §1
    assert pd.isna(df.loc["% of MusicGen-small FLOPs (measured)", "as_configured"])


def test_bad_arguments(tmp_path, manifest, capsys):
    run = make_run(tmp_path / "run")
    with pytest.raises(SystemExit):
        claims.main(["--settings", json.dumps(config()), "--manifest", str(manifest), "--runs", f"simba_k1={run}",
                     "--experiment", "nope", "--out-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        claims.main(["--settings", "{bad", "--manifest", str(manifest), "--runs", f"simba_k1={run}",
                     "--experiment", "simba_k1", "--out-dir", str(tmp_path)])
    capsys.readouterr()
    with pytest.raises(SystemExit):  # the recipe is checked against the config schema, naming flag and key
        run_claims(tmp_path, manifest, {k: v for k, v in config().items() if k != "steps"}, f"simba_k1={run}")
    assert "--steps / config key experiments.*.steps: required" in capsys.readouterr().err
    rc, _ = run_claims(tmp_path, manifest, config(), f"simba_k1={tmp_path / 'missing'}")
    assert rc == 1


def test_recipe_flags_override_and_whole_clips(tmp_path, manifest):
    """Flags typed by hand override the rule's JSON; max_frames null (whole clips) leaves D as configured blank."""
    run = make_run(tmp_path / "run")
    rc, out = run_claims(tmp_path, manifest, config(), f"simba_k1={run}", flags=("--steps", "50000"))
    assert rc == 0
    df = pd.read_csv(out / "claims.csv").set_index("quantity")
    assert df.loc["optimizer steps", "as_configured"] == 50_000
    assert df.loc["positions seen D", "as_configured"] == 50_000 * 4 * 32 * (2584 + 1)
    rc, out = run_claims(tmp_path, manifest, {**config(), "max_frames": None}, f"simba_k1={run}")
    assert rc == 0
    df = pd.read_csv(out / "claims.csv").set_index("quantity")
    assert pd.isna(df.loc["positions seen D", "as_configured"])
    assert pd.isna(df.loc["% of MusicGen-small FLOPs (6ND)", "as_configured"])


def test_published_constants():
    assert published.musicgen_small_flops() == pytest.approx(MG)
    assert published.PAPER_CLAIMS == {"data_pct": 2.0, "flops_pct": 9.0}
