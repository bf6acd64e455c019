import json

import pandas as pd
import pytest

from ssmttm.report import claims, published

# MusicGen-small as published (Copet et al. 2023) and released (decoder config), docs/reference.md §4
MG_ARCH = dict(d=1024, layers=24, ffn=4096, codebooks=4, vocab=2048, text_dim=768)
MG_D = 1_000_000 * 192 * 1500
TEXT_TOKENS = 21  # the text_store fixture's mean caption length


def musicgen_params(d, layers, ffn, codebooks, vocab, text_dim):
    """Non-embedding parameters, by hand: per layer self- and cross-attention (4 d^2 each, no biases), the
    feed-forward (2 d ffn, no biases) and three LayerNorms; the final LayerNorm, the heads, the text projection."""
    return layers * (8 * d * d + 2 * d * ffn + 3 * 2 * d) + 2 * d + codebooks * d * vocab + text_dim * d + d


def musicgen_forward(S, T, d, layers, ffn, codebooks, vocab, text_dim):
    """Forward FLOPs of one sequence, by hand (2 per multiply-add): per layer the self-attention
    projections on S positions and its scores over the full S x S square, the cross-attention's query
    and output projections on S, its key and value projections on T text states and its S x T scores, the
    feed-forward; then the heads and the text projection."""
    per_layer = (2 * S * d * d * 4 + 4 * S * S * d + 2 * S * d * d * 2 + 2 * T * d * d * 2 + 4 * S * T * d
                 + 4 * S * d * ffn)
    return layers * per_layer + 2 * S * d * vocab * codebooks + 2 * T * text_dim * d


MG_N = musicgen_params(**MG_ARCH)
MG_6ND = 6 * MG_N * MG_D
MG_COUNTED = 3 * musicgen_forward(1500, TEXT_TOKENS, **MG_ARCH) / 1500 * MG_D


def config(preset="paper", **extra):
    """The claims experiment's recipe as the rule passes it (--settings)."""
    return {"variant": "prefix-simba", "preset": preset, "kappa": 1, "steps": 100_000, "batch_size": 4,
            "grad_accum": 32, "max_frames": 2584, **extra}


def make_run(d, preset="paper", flops_csv=True):
    """A finished run whose last step is 1 % of MusicGen-small's 6ND and 2 % of its counted FLOPs."""
    d.mkdir(parents=True)
    if flops_csv:
        pd.DataFrame({"step": [200, 100], "tokens_seen": [2000, 1000], "flops_6nd": [MG_6ND / 100, MG_6ND / 200],
                      "measured_forward_flops_per_token": [7.0, 7.0],
                      "measured_flops_total": [MG_COUNTED / 50, MG_COUNTED / 100]}).to_csv(d / "flops.csv", index=False)
    (d / "done.json").write_text(json.dumps({
        "step": 200, "tokens_seen": 2000, "flops_6nd": MG_6ND / 100, "measured_forward_flops_per_token": 7.0,
        "measured_flops_total": MG_COUNTED / 50, "n_params": 281_040_000, "n_params_non_embedding": 279_990_400,
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


@pytest.fixture()
def text_store(tmp_path):
    """The two files of a text store the claims read: FLAN-T5-base's width and caption lengths 20 and 22
    (mean 21); caption 0 is the empty prompt, left out."""
    d = tmp_path / "text"
    d.mkdir()
    (d / "meta.json").write_text(json.dumps({"d_model": 768, "encoder": "flan_t5_base"}))
    pd.DataFrame({"caption_id": [0, 1, 2], "text": ["", "a", "b"], "length": [1, 20, 22]}).to_parquet(
        d / "index.parquet", index=False)
    return d


def run_claims(tmp_path, manifest, cfg, *runs, flags=()):
    out = tmp_path / "tables"
    rc = claims.main(["--settings", json.dumps(cfg), "--manifest", str(manifest), "--runs", *runs,
                      "--experiment", "simba_k1", "--out-dir", str(out), *flags])
    return rc, out


def test_percentages_and_ratios(tmp_path, manifest, text_store):
    run = make_run(tmp_path / "run")
    rc, out = run_claims(tmp_path, manifest, config(), f"simba_k1={run}", flags=("--text", str(text_store)))
    assert rc == 0
    df = pd.read_csv(out / "claims.csv").set_index("quantity")
    data = df.loc["% of MusicGen-small's training audio"]
    assert data.this_run == pytest.approx(2.285) and data.as_configured == pytest.approx(2.285)  # 457 / 20000
    assert data.paper_claim == 2
    assert df.loc["training audio", "this_run"] == pytest.approx(457.0)
    assert df.loc["training audio", "musicgen_small"] == 20_000
    # D and N as configured, and MusicGen-small's, on one convention
    d_cfg = 100_000 * 4 * 32 * (2584 + 1)
    assert df.loc["positions seen D", "as_configured"] == d_cfg and df.loc["positions seen D", "musicgen_small"] == MG_D
    n = df.loc["parameters N (non-embedding, trainable)"]
    assert n.as_configured == pytest.approx(281.04e6 - 1025 * 1024, rel=1e-3)  # docs/reference.md §1
    assert n.musicgen_small == MG_N and n.this_run == 279_990_400
    six = df.loc["% of MusicGen-small's FLOPs (6·N·D)"]
    assert six.this_run == pytest.approx(1.0) and six.paper_claim == 9
    assert six.as_configured == pytest.approx(100 * 6 * n.as_configured * d_cfg / MG_6ND)
    # counted: MusicGen-small's forward agrees with the formula worked out by hand, attention included
    per_pos = df.loc["forward FLOPs per position (counted)"]
    assert per_pos.musicgen_small == pytest.approx(musicgen_forward(1500, TEXT_TOKENS, **MG_ARCH) / 1500, rel=1e-12)
    assert per_pos.this_run == 7.0
    over = df.loc["counted forward per position / 2N"]
    assert 1.19 < over.as_configured < 1.21  # the SSD scan at d_state 512 (docs/reference.md §4)
    assert over.musicgen_small == pytest.approx(per_pos.musicgen_small / (2 * MG_N))
    counted = df.loc["% of MusicGen-small's FLOPs (counted)"]
    assert counted.this_run == pytest.approx(2.0) and counted.paper_claim == 9
    assert counted.as_configured == pytest.approx(100 * 3 * per_pos.as_configured * d_cfg / MG_COUNTED)
    assert df.loc["optimizer steps", "this_run"] == 200  # the last flops.csv row, not the first
    assert df.loc["positions per optimizer step", "musicgen_small"] == 192 * 1500
    md = (out / "claims.md").read_text()
    assert "| % of MusicGen-small's training audio | 2.285 | 2.285 |  | 2 | % |" in md
    assert "21 text states" in md and "non-embedding" in md
    tex = (out / "claims.tex").read_text()
    assert r"\% of MusicGen-small" in tex and r"\toprule" in tex and "simba\\_k1" in tex


def test_other_runs_and_done_json_fallback(tmp_path, manifest):
    """Without --text nothing is counted: the 6ND rows stay, the counted ones are blank."""
    run = make_run(tmp_path / "a", flops_csv=False)  # done.json only
    other = make_run(tmp_path / "b")
    rc, out = run_claims(tmp_path, manifest, config(), f"simba_k1_seed0={run}", f"transformer_k1={other}",
                         f"broken={tmp_path / 'missing'}")
    assert rc == 0
    df = pd.read_csv(out / "claims.csv").set_index("quantity")
    assert df.loc["% of MusicGen-small's FLOPs (6·N·D)", "this_run"] == pytest.approx(1.0)
    assert df.loc["% of MusicGen-small's FLOPs (6·N·D), run transformer_k1", "this_run"] == pytest.approx(1.0)
    assert not any("broken" in q for q in df.index)  # an unreadable run is skipped, named in the log
    for q in ("% of MusicGen-small's FLOPs (counted)", "% of MusicGen-small's FLOPs (counted), run transformer_k1"):
        assert df.loc[q, ["this_run", "as_configured"]].isna().all()
    assert df.loc["parameters N (non-embedding, trainable)", "musicgen_small"] == MG_N


def test_configured_model_follows_the_config(tmp_path, manifest):
    """A tiny demo run against the paper config: N as configured is the configured model's, with the
    experiment's ``model`` overrides, whatever the run trained."""
    import torch

    from ssmttm.models.config import from_preset
    from ssmttm.models.lm import LM
    from ssmttm.train.flops import count_params

    run = make_run(tmp_path / "run", preset="tiny")
    rc, out = run_claims(tmp_path, manifest, config("paper", model={"n_layers": 12}), f"simba_k1={run}")
    assert rc == 0
    df = pd.read_csv(out / "claims.csv").set_index("quantity")
    with torch.device("meta"):
        expected = count_params(LM(from_preset("paper", "prefix-simba", n_layers=12)))[1]
    assert df.loc["parameters N (non-embedding, trainable)", "as_configured"] == expected


def test_musicgen_small_is_counted_like_a_real_run():
    """The fake-tensor count of a MusicGen-shaped model equals a real CPU run's (tiny shapes), and the
    published shape matches the hand-worked parameter and FLOPs formulas."""
    tiny = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4, "ffn_dim": 32, "num_codebooks": 4,
            "vocab_size": 24, "text_dim": 12}
    fake = claims.musicgen_small_cost(5, tiny, positions=30)
    real = claims.musicgen_small_cost(5, tiny, positions=30, fake=False)
    assert fake["forward_flops"] == real["forward_flops"] == musicgen_forward(30, 5, 16, 2, 32, 4, 24, 12)
    assert fake["n_params_non_embedding"] == real["n_params_non_embedding"] == musicgen_params(16, 2, 32, 4, 24, 12)
    small = claims.musicgen_small_cost(TEXT_TOKENS)
    assert small["n_params_non_embedding"] == MG_N
    assert small["n_params"] == MG_N + 4 * 2049 * 1024  # the embedding tables: 2048 codes + 1 special id
    assert small["forward_flops"] == musicgen_forward(1500, TEXT_TOKENS, **MG_ARCH)
    assert 0.15 < small["attention_share"] < 0.2


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
    rc, _ = run_claims(tmp_path, manifest, config(), f"simba_k1={run}", flags=("--text", str(tmp_path / "no-store")))
    assert rc == 1
    assert "--text" in capsys.readouterr().err


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
    assert pd.isna(df.loc["% of MusicGen-small's FLOPs (6·N·D)", "as_configured"])


def test_published_constants():
    assert published.PAPER_CLAIMS == {"data_pct": 2.0, "flops_pct": 9.0}
    assert published.MUSICGEN_SMALL_DECODER == {"hidden_size": 1024, "num_hidden_layers": 24,
                                                 "num_attention_heads": 16, "ffn_dim": 4096, "num_codebooks": 4,
                                                 "vocab_size": 2048, "text_dim": 768}
