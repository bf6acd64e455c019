"""Codec interface, registry laziness, the tiny DAC and the safe weights loader."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
warnings.filterwarnings("ignore", message=".*weight_norm.*")

from ssmttm import audio  # noqa: E402
from ssmttm.codec import CODECS, CodecError, load_codec  # noqa: E402
from ssmttm.codec.dac import TINY_DAC_KWARGS, build_model, build_tiny_dac, read_checkpoint, save_dac  # noqa: E402
from ssmttm.constants import CODEBOOK_SIZE, FRAME_RATE, SAMPLE_RATE  # noqa: E402
from ssmttm.io import sha256_file  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny_dac(tmp_path_factory.mktemp("w") / "dac_tiny.pth", seed=0)
    return path, load_codec("dac", path, "cpu")


def test_registry_is_lazy(repo):
    code = ("import sys; import ssmttm.codec as c; assert 'dac' in c.CODECS; "
            "bad = [m for m in ('torch', 'dac', 'audiotools') if m in sys.modules]; "
            "assert not bad, bad; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_unknown_codec_named(tmp_path):
    with pytest.raises(CodecError, match="unknown codec 'nope'"):
        load_codec("nope", tmp_path / "x.pth")
    assert set(CODECS) >= {"dac"}


def test_tiny_file_deterministic_and_small(tmp_path, tiny):
    path, codec = tiny
    again = build_tiny_dac(tmp_path / "other_name.pth", seed=0)
    assert sha256_file(again) == sha256_file(path)  # byte-identical, whatever the file name
    assert sha256_file(build_tiny_dac(tmp_path / "s1.pth", seed=1)) != sha256_file(path)
    assert path.stat().st_size < 3_000_000
    assert codec.sample_rate == SAMPLE_RATE and codec.hop_length == 512 and codec.frame_rate == FRAME_RATE
    assert codec.n_codebooks == TINY_DAC_KWARGS["n_codebooks"] and codec.cardinality == CODEBOOK_SIZE
    # a full 30 s clip encodes (its speed is a benchmark's business, not a test's)
    codes = codec.encode(torch.zeros(1, 1, 30 * SAMPLE_RATE))
    assert codes.dtype == torch.int64 and codes.shape == (1, codec.n_codebooks, codec.n_frames(30 * SAMPLE_RATE))


def test_save_load_round_trip_identical_state(tmp_path, tiny):
    path, _ = tiny
    model = build_model(path)
    out = save_dac(model, tmp_path / "again.pth")
    assert sha256_file(out) == sha256_file(path)
    kwargs, state = read_checkpoint(path)
    assert kwargs == TINY_DAC_KWARGS
    reloaded = build_model(out).state_dict()
    assert set(reloaded) == set(state) and any(k.endswith("weight_g") for k in state)
    assert all(torch.equal(reloaded[k], state[k]) for k in state)


def test_weight_norm_keys_of_either_api_load(tmp_path, tiny):
    path, _ = tiny
    kwargs, state = read_checkpoint(path)
    renamed = {k.replace("weight_g", "parametrizations.weight.original0").replace(
        "weight_v", "parametrizations.weight.original1"): v for k, v in state.items()}
    torch.save({"state_dict": renamed, "metadata": {"kwargs": kwargs}}, tmp_path / "new_api.pth")
    got = build_model(tmp_path / "new_api.pth").state_dict()
    assert all(torch.equal(got[k], state[k]) for k in state)
    # a missing tensor is an error naming the file, never a silently random layer
    del renamed[next(iter(renamed))]
    torch.save({"state_dict": renamed, "metadata": {"kwargs": kwargs}}, tmp_path / "short.pth")
    with pytest.raises(CodecError, match="short.pth"):
        build_model(tmp_path / "short.pth")


class Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_disallowed_pickle_refused(tmp_path, tiny, capsys):
    path, _ = tiny
    kwargs, state = read_checkpoint(path)
    bad = tmp_path / "evil.pth"
    torch.save({"state_dict": state, "metadata": {"kwargs": kwargs, "x": Evil()}}, bad)
    with pytest.raises(CodecError, match=r"evil\.pth: refused"):
        load_codec("dac", bad, "cpu")
    assert "pickled code ran" not in capsys.readouterr().out
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CodecError, match="junk.pth"):
        read_checkpoint(tmp_path / "junk.pth")
    torch.save({"weights": state}, tmp_path / "layout.pth")
    with pytest.raises(CodecError, match="layout.pth.*state_dict"):
        read_checkpoint(tmp_path / "layout.pth")


def test_encode_frames_and_decode_kappa(tiny):
    _, codec = tiny
    n30 = 30 * SAMPLE_RATE  # 1,323,000 samples -> ceil(/512) = 2584 frames (docs/reference.md §2)
    assert codec.n_frames(n30) == 2584 and codec.n_frames(512) == 1 and codec.n_frames(513) == 2
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(2, 1, n30, generator=g)
    codes = codec.encode(x)
    assert codes.shape == (2, codec.n_codebooks, 2584) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < codec.cardinality
    assert codec.encode(x[..., :1000]).shape[-1] == 2
    short = codes[:, :, :50]
    for kappa in (1, 2, codec.n_codebooks):
        y = codec.decode(short[:, :kappa])
        assert y.shape == (2, 1, 50 * 512) and torch.isfinite(y).all()
    assert not torch.equal(codec.decode(short[:, :1]), codec.decode(short))
    with pytest.raises(CodecError, match="this DAC has 4"):
        codec.decode(torch.zeros(1, codec.n_codebooks + 1, 5, dtype=torch.int64))
    with pytest.raises(CodecError, match="outside"):
        codec.decode(torch.full((1, 1, 5), codec.cardinality))
    with pytest.raises(CodecError, match=r"\[B, 1, N\]"):
        codec.encode(torch.zeros(1, 2, 100))


def test_prepare_matches_ssmttm_audio(tiny):
    _, codec = tiny
    rng = np.random.default_rng(0)
    stereo48 = rng.standard_normal((2, 4800)).astype(np.float32) * 0.1
    mono22 = rng.standard_normal((1, 2205)).astype(np.float32) * 0.1
    for x, sr in ((stereo48, 48_000), (mono22, 22_050)):
        y = codec.prepare(x, sr)
        want = audio.resample(audio.to_channels(x, 1), sr, SAMPLE_RATE)
        assert y.shape == (1, round(x.shape[1] * SAMPLE_RATE / sr)) and y.dtype == np.float32
        np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(codec.prepare(stereo48[:, :441], SAMPLE_RATE), stereo48[:, :441].mean(0, keepdims=True))
