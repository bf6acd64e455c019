"""PaSST (KL) and LAION-CLAP (CLAP score) embedders: tiny real-class models built, saved and loaded back
through the real loaders; window/crop protocol; strict and weights_only loading; full-size shapes."""

from __future__ import annotations

import argparse
import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")
# find_spec, not importorskip: importing the laion_clap package itself fetches hub tokenizers
if importlib.util.find_spec("hear21passt") is None or importlib.util.find_spec("laion_clap") is None:
    pytest.skip("hear21passt / laion_clap not installed", allow_module_level=True)

from ssmttm.eval.embedders import build_embedder  # noqa: E402
from ssmttm.eval.embedders import clap as C  # noqa: E402
from ssmttm.eval.embedders import passt as P  # noqa: E402
from ssmttm.eval.embedders.base import EmbedderError  # noqa: E402


def _noise(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


# --- PaSST ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def passt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("passt") / "passt-tiny.pt"
    P.build_tiny_passt(path, seed=0)
    return path


@pytest.fixture(scope="module")
def passt(passt_file):
    return build_embedder("passt", passt_file)


def test_passt_tiny_file_is_small_plain_state_dict(passt_file):
    assert passt_file.stat().st_size < 5e6
    sd = torch.load(passt_file, weights_only=True)
    assert {"cls_token", "dist_token", "time_new_pos_embed", "head.1.weight", "head_dist.weight"} <= set(sd)
    assert P.infer_config(sd) == P.TINY


def test_window_starts_follow_stable_audio_metrics():
    sr = P.SAMPLE_RATE
    assert [s / sr for s in P.window_starts(25 * sr)] == [0, 5, 10, 15]
    assert P.window_starts(10 * sr) == [0] and P.window_starts(4 * sr) == [0]
    assert [s / sr for s in P.window_starts(30 * sr)] == [0, 5, 10, 15, 20]
    assert [s / sr for s in P.window_starts(27 * sr)] == [0, 5, 10, 15, 20]  # last: 20-27 s, padded
    w = P.windows(np.ones(4 * sr, np.float32))
    assert len(w) == 1 and len(w[0]) == 10 * sr and w[0][4 * sr:].max() == 0  # 4 s: zero-padded to 10 s
    assert len(P.windows(np.ones(sr, np.float32))[0]) == sr  # <= 1.5 s: fed as is


def test_passt_shapes_and_window_content(passt):
    sr = passt.sample_rate
    x = _noise(25, sr)
    y = passt.embed(x)
    assert y.shape == (4, 527) and y.dtype == np.float32 and np.isfinite(y).all()
    # window k covers [5k, 5k + 10) s: it equals the logits of that 10 s excerpt alone
    for k in (0, 3):
        solo = passt.embed(x[5 * k * sr:(5 * k + 10) * sr])
        assert solo.shape == (1, 527)
        np.testing.assert_allclose(y[k], solo[0], atol=1e-5)
    assert np.abs(y[0] - y[3]).max() > 1e-4  # different audio, different logits
    # a 4 s clip is one window, zero-padded to 10 s
    short = x[:4 * sr]
    np.testing.assert_allclose(passt.embed(short)[0],
                               passt.embed(np.concatenate([short, np.zeros(6 * sr, np.float32)]))[0], atol=1e-5)


def test_passt_deterministic_across_loads(passt, passt_file):
    x = _noise(12, passt.sample_rate, seed=3)
    a = passt.embed(x)
    b = build_embedder("passt", passt_file).embed(x)
    assert a.shape == (2, 527)
    np.testing.assert_array_equal(a, b)


def test_passt_bad_audio(passt):
    with pytest.raises(EmbedderError, match="shorter than"):
        passt.embed(np.zeros(1000, np.float32))
    with pytest.raises(EmbedderError, match="NaN"):
        passt.embed(np.full(32000, np.nan, np.float32))
    with pytest.raises(EmbedderError, match="mono"):
        passt.embed(np.zeros((2, 32000), np.float32))


def test_passt_protocol(passt, passt_file):
    from ssmttm import io

    assert passt.protocol() == {"model": "passt", "checkpoint": passt_file.name,
                                "checkpoint_sha256": io.sha256_file(passt_file),
                                "sample_rate": 32000, "window_s": 10.0, "hop_s": 5.0}


def test_passt_strict_load_names_the_key(passt_file, tmp_path):
    sd = torch.load(passt_file, weights_only=True)
    missing = {k: v for k, v in sd.items() if k != "head_dist.weight"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(EmbedderError, match="head_dist.weight"):
        P.load_passt(tmp_path / "missing.pt")
    torch.save({**sd, "extra.weight": torch.zeros(2)}, tmp_path / "extra.pt")
    with pytest.raises(EmbedderError, match="extra.weight"):
        P.load_passt(tmp_path / "extra.pt")
    torch.save({"model": sd}, tmp_path / "wrapped.pt")  # DeiT-style layout hear21passt also accepts
    assert P.load_passt(tmp_path / "wrapped.pt").net.cls_token.shape == sd["cls_token"].shape


def test_passt_refuses_pickled_objects(passt_file, tmp_path):
    sd = torch.load(passt_file, weights_only=True)
    torch.save({**sd, "args": argparse.Namespace(lr=1.0)}, tmp_path / "pickled.pt")
    with pytest.raises(EmbedderError, match="weights_only"):
        build_embedder("passt", tmp_path / "pickled.pt")
    with pytest.raises(EmbedderError, match="not found"):
        build_embedder("passt", tmp_path / "nope.pt")


def test_passt_full_size_architecture():
    """PaSST-S (passt_s_swa_p16_128_ap476) built at random: 86.15 M parameters, read back from shapes."""
    model = P.build_passt(P.PASST_S)
    assert sum(p.numel() for p in model.net.parameters()) == 86_153_758
    assert P.infer_config(model.net.state_dict()) == P.PASST_S
    assert model.net.time_new_pos_embed.shape == (1, 768, 1, 99)  # 998 frames, stride 10


# --- CLAP ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clap_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("clap")
    C.build_tiny_roberta(d / "roberta", seed=0)
    C.build_tiny_clap(d / "clap-tiny.pt", seed=0)
    return d / "clap-tiny.pt", d / "roberta"


@pytest.fixture(scope="module")
def clap(clap_files):
    ckpt, rob = clap_files
    return build_embedder("clap", ckpt, text_model=rob)


def test_clap_tiny_files_layout(clap_files):
    ckpt, rob = clap_files
    assert ckpt.stat().st_size < 8e6
    assert sum(f.stat().st_size for f in rob.iterdir()) < 1e6
    assert {"config.json", "tokenizer.json"} <= {f.name for f in rob.iterdir()}
    sd = C.read_checkpoint(ckpt)  # {"state_dict": {"module.<k>": ...}} with numpy metadata
    assert "text_branch.embeddings.position_ids" in sd and not any(k.startswith("module.") for k in sd)
    assert C.infer_htsat(sd) == C.TINY_HTSAT


def test_clap_shapes_norms_determinism(clap, clap_files):
    sr = clap.sample_rate
    x = _noise(10, sr)
    a = clap.embed(x)
    assert a.shape == (1, 512) and a.dtype == np.float32
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    b = build_embedder("clap", clap_files[0], text_model=clap_files[1]).embed(x)
    np.testing.assert_array_equal(a, b)
    assert np.abs(clap.embed(_noise(10, sr, seed=1)) - a).max() > 1e-6
    t = clap.embed_text(["a calm piano piece", "loud rock with drums and electric guitar", "jazz"])
    assert t.shape == (3, 512) and t.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    assert np.abs(t[0] - t[1]).max() > 1e-6
    np.testing.assert_allclose(clap.embed_text(["jazz"])[0], t[2], atol=1e-5)  # batch-independent
    assert clap.embed_text([]).shape == (0, 512)


def test_clap_ten_second_handling(clap):
    """laion_clap get_audio_embedding_from_data: int16 quantisation, repeatpad below 10 s, one random
    (here seeded) 10 s crop above."""
    n = C.CLIP_SAMPLES
    short = _noise(3, 48000)
    p = C.prepare_audio(short)
    q = ((np.clip(short, -1, 1) * 32767).astype(np.int16) / 32767).astype(np.float32)
    assert len(p) == n and np.array_equal(p[:len(q)], q) and np.array_equal(p[len(q):2 * len(q)], q)
    assert p[3 * len(q):].max() == 0  # 3 whole repeats, then zeros
    long = _noise(25, 48000)
    c0, c0b, c1 = C.prepare_audio(long, 0), C.prepare_audio(long, 0), C.prepare_audio(long, 1)
    assert len(c0) == n and np.array_equal(c0, c0b) and not np.array_equal(c0, c1)
    start = np.random.RandomState(0).randint(0, len(long) - n + 1)
    np.testing.assert_allclose(c0, long[start:start + n], atol=1 / 32767)
    e = clap.embed(long)
    assert e.shape == (1, 512)
    np.testing.assert_array_equal(e, clap.embed(long))
    with pytest.raises(EmbedderError, match="non-empty"):
        clap.embed(np.zeros(0, np.float32))


def test_clap_protocol(clap, clap_files):
    from ssmttm import io

    assert clap.protocol() == {"model": "clap", "checkpoint": clap_files[0].name,
                               "checkpoint_sha256": io.sha256_file(clap_files[0]),
                               "sample_rate": 48000, "window_s": 10.0, "hop_s": None}


def test_clap_needs_text_model(clap_files, tmp_path):
    with pytest.raises(EmbedderError, match="text_model"):
        build_embedder("clap", clap_files[0])
    with pytest.raises(EmbedderError, match="config.json"):
        build_embedder("clap", clap_files[0], text_model=tmp_path)
    with pytest.raises(EmbedderError, match="does not exist"):
        build_embedder("clap", clap_files[0], text_model=tmp_path / "missing")


def _raw(ckpt):
    return C.read_checkpoint(ckpt)


def test_clap_strict_load_names_the_key(clap_files, tmp_path):
    ckpt, rob = clap_files
    sd = _raw(ckpt)
    torch.save({"state_dict": {k: v for k, v in sd.items() if k != "audio_projection.0.bias"}}, tmp_path / "m.pt")
    with pytest.raises(EmbedderError, match="audio_projection.0.bias"):
        C.load_clap(tmp_path / "m.pt", rob)
    torch.save({**sd, "text_branch.extra": torch.zeros(1)}, tmp_path / "x.pt")  # plain state_dict layout
    with pytest.raises(EmbedderError, match="text_branch.extra"):
        C.load_clap(tmp_path / "x.pt", rob)
    bad = dict(sd)
    bad["text_branch.embeddings.position_ids"] = torch.zeros_like(sd["text_branch.embeddings.position_ids"])
    torch.save(bad, tmp_path / "p.pt")
    with pytest.raises(EmbedderError, match="position_ids"):
        C.load_clap(tmp_path / "p.pt", rob)
    torch.save(sd, tmp_path / "plain.pt")  # plain, unprefixed state_dict: accepted as laion_clap does
    model, _ = C.load_clap(tmp_path / "plain.pt", rob)
    assert model.text_branch_type == "roberta"


def test_clap_refuses_pickled_objects(clap_files, tmp_path):
    sd = _raw(clap_files[0])
    torch.save({"state_dict": sd, "args": argparse.Namespace(lr=1.0)}, tmp_path / "pickled.pt")
    with pytest.raises(EmbedderError, match="weights_only"):
        build_embedder("clap", tmp_path / "pickled.pt", text_model=clap_files[1])


def test_htsat_base_architecture_from_shapes():
    """laion_clap's HTSAT-base at random init: 72.4 M parameters; the loader reads its config back."""
    C._clap_module()
    from clap_module.htsat import create_htsat_model
    from clap_module.model import CLAPAudioCfp

    htsat = create_htsat_model(CLAPAudioCfp(**C.audio_cfg()))
    assert sum(p.numel() for p in htsat.parameters()) == 72_424_535
    sd = {f"audio_branch.{k}": v for k, v in htsat.state_dict().items()}
    assert C.infer_htsat(sd) == dict(embed_dim=128, patch_size=4, depths=[2, 2, 12, 2], num_heads=[4, 8, 16, 32],
                                     window_size=8, num_classes=527, mlp_ratio=4.0)
