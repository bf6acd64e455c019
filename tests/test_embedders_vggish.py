"""VGGish (FAD) and the training-free log-mel embedder: layout, loader safety, front end, shapes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ssmttm.eval.embedders import build_embedder  # noqa: E402
from ssmttm.eval.embedders import logmel as L  # noqa: E402
from ssmttm.eval.embedders import vggish as V  # noqa: E402
from ssmttm.eval.embedders.base import EmbedderError  # noqa: E402

SR = 16_000

# The released torchvggish vggish-10086976.pth (harritaylor/torchvggish, vggish.py: make_layers()
# over [64, M, 128, M, 256, 256, M, 512, 512, M] and embeddings Linear(512*4*6, 4096), ReLU,
# Linear(4096, 4096), ReLU, Linear(4096, 128), ReLU): 18 tensors.
RELEASED_LAYOUT = {
    "features.0.weight": (64, 1, 3, 3), "features.0.bias": (64,),
    "features.3.weight": (128, 64, 3, 3), "features.3.bias": (128,),
    "features.6.weight": (256, 128, 3, 3), "features.6.bias": (256,),
    "features.8.weight": (256, 256, 3, 3), "features.8.bias": (256,),
    "features.11.weight": (512, 256, 3, 3), "features.11.bias": (512,),
    "features.13.weight": (512, 512, 3, 3), "features.13.bias": (512,),
    "embeddings.0.weight": (4096, 12288), "embeddings.0.bias": (4096,),
    "embeddings.2.weight": (4096, 4096), "embeddings.2.bias": (4096,),
    "embeddings.4.weight": (128, 4096), "embeddings.4.bias": (128,),
}


class NotATensor:
    """Anything a weights_only unpickler must refuse."""

    def __init__(self):
        self.x = 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return V.build_tiny_vggish(tmp_path_factory.mktemp("w") / "vggish-tiny.pth", seed=0)


def _audio(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SR))) / SR
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


# --- network layout ----------------------------------------------------------------------------

def test_full_size_layout_and_parameter_count():
    # Hershey et al. 2017 VGGish: 4,499,712 conv + 67,641,472 fc parameters = 72,141,184
    assert V.VGGishConfig().shapes() == RELEASED_LAYOUT
    assert V.param_count() == 72_141_184
    with torch.device("meta"):
        net = V.build_net()
    assert sum(p.numel() for p in net.parameters()) == 72_141_184
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == RELEASED_LAYOUT
    assert V.VGGishConfig.from_state_dict(net.state_dict()) == V.VGGishConfig()


def test_flatten_order_is_time_mel_channel():
    # the fc weights of the TF original expect an NHWC flatten: index (h * 4 + w) * C + c
    cfg = V.VGGishConfig(channels=(1, 1, 1, 1, 1, 3), fc=(4, 4), embed_dim=4)
    net = V.build_net(cfg).eval()
    net.features = torch.nn.Identity()
    with torch.no_grad():
        for lin in (net.embeddings[0], net.embeddings[2], net.embeddings[4]):
            lin.bias.zero_()
        net.embeddings[0].weight.zero_()
        net.embeddings[0].weight[0, (2 * 4 + 1) * 3 + 2] = 1.0  # channel 2, time 2, mel 1
        net.embeddings[2].weight.copy_(torch.eye(4))
        net.embeddings[4].weight.copy_(torch.eye(4))
        x = torch.zeros(1, 3, 6, 4)
        x[0, 2, 2, 1] = 5.0
        y = net(x)
    assert y[0, 0].item() == 5.0 and torch.count_nonzero(y).item() == 1


# --- loader ------------------------------------------------------------------------------------

def test_tiny_roundtrip_through_real_loader(tiny):
    assert tiny.stat().st_size < 300_000
    state = torch.load(tiny, map_location="cpu", weights_only=True)
    assert set(state) == set(RELEASED_LAYOUT)  # same keys as the released file, narrower widths
    emb = build_embedder("vggish", tiny, batch_size=4)
    assert isinstance(emb, V.VGGishEmbedder) and emb.config == V.TINY_CONFIG
    proto = emb.protocol()
    assert proto["model"] == "vggish" and proto["checkpoint"] == "vggish-tiny.pth"
    assert proto["sample_rate"] == 16000 and proto["window_s"] == proto["hop_s"] == 0.96
    assert len(proto["checkpoint_sha256"]) == 64
    # a folder holding the one file loads too (the weights stage may hand over a folder)
    assert V.VGGishEmbedder(tiny.parent).config == V.TINY_CONFIG


def test_tiny_builder_is_deterministic(tmp_path, tiny):
    a = V.build_tiny_vggish(tmp_path / "a.pth", seed=0)
    b = V.build_tiny_vggish(tmp_path / "b.pth", seed=1)
    assert a.read_bytes() == tiny.read_bytes()
    assert b.read_bytes() != tiny.read_bytes()


@pytest.mark.parametrize("edit, named", [
    (lambda s: s.pop("embeddings.4.bias"), "embeddings.4.bias"),
    (lambda s: s.__setitem__("pproc.pca_means", torch.zeros(128, 1)), "pproc.pca_means"),
    (lambda s: s.__setitem__("features.8.bias", torch.zeros(3)), "features.8.bias"),
])
def test_loader_names_missing_extra_or_misshaped_key(tmp_path, tiny, edit, named):
    state = torch.load(tiny, map_location="cpu", weights_only=True)
    edit(state)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(EmbedderError, match=named.replace(".", r"\.")):
        V.VGGishEmbedder(bad)


def test_loader_refuses_pickled_objects(tmp_path, tiny):
    state = torch.load(tiny, map_location="cpu", weights_only=True)
    evil = tmp_path / "evil.pth"
    torch.save({**state, "extra": NotATensor()}, evil)
    with pytest.raises(EmbedderError, match="refused"):
        V.VGGishEmbedder(evil)
    whole = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), whole)  # a pickled nn.Module, not a state_dict
    with pytest.raises(EmbedderError, match="module.pth"):
        V.VGGishEmbedder(whole)
    (tmp_path / "junk.pth").write_bytes(b"not a zip")
    with pytest.raises(EmbedderError, match="junk.pth"):
        V.VGGishEmbedder(tmp_path / "junk.pth")
    with pytest.raises(EmbedderError, match="not found"):
        V.VGGishEmbedder(tmp_path / "absent.pth")


# --- front end ---------------------------------------------------------------------------------

def test_mel_matrix_matches_librosa_htk():
    librosa = pytest.importorskip("librosa")
    ours = L.mel_matrix(SR, 512)  # [257, 64]
    ref = librosa.filters.mel(sr=SR, n_fft=512, n_mels=64, fmin=125, fmax=7500, htk=True, norm=None).T
    assert ours.shape == ref.shape == (257, 64)
    assert np.array_equal(ours > 0, ref > 0)  # same band supports
    # VGGish draws triangles linear in mel, librosa linear in Hz: they differ by < 0.5 % of the peak
    assert np.abs(ours - ref).max() < 5e-3
    assert np.abs(ours - ref).max() > 1e-4  # ... and really are two conventions
    assert ours[0].sum() == 0.0
    edges = np.linspace(L.hz_to_mel(125), L.hz_to_mel(7500), 66)
    assert np.allclose(ours.argmax(axis=0), np.round(700 * np.expm1(edges[1:-1] / 1127) / (SR / 512)), atol=1)


def test_log_mel_front_end_matches_librosa_pipeline():
    librosa = pytest.importorskip("librosa")
    x = _audio(2.0).astype(np.float64)
    ours = L.log_mel_spectrogram(x, SR)
    assert ours.shape == (1 + (x.size - 400) // 160, 64)
    frames = librosa.util.frame(x, frame_length=400, hop_length=160, axis=0)
    window = librosa.filters.get_window("hann", 400, fftbins=True)  # periodic Hann
    mag = np.abs(np.fft.rfft(frames * window, n=512))
    exact = np.log(mag @ L.mel_matrix(SR, 512) + 0.01)
    assert np.allclose(ours, exact, atol=1e-9)  # framing, window, FFT, magnitude, log offset
    ref = librosa.filters.mel(sr=SR, n_fft=512, n_mels=64, fmin=125, fmax=7500, htk=True, norm=None)
    assert np.abs(ours - np.log(mag @ ref.T + 0.01)).max() < 0.05


# --- embedding ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n_samples, rows", [
    (160_000, 10),   # 10 s: 998 frames -> 10 examples (incomplete tail dropped)
    (31_200, 2),     # 193 frames
    (15_600, 1),     # exactly 96 frames
    (8_000, 1),      # 0.5 s: zero-padded to one example
    (1, 1),
])
def test_vggish_shapes(tiny, n_samples, rows):
    emb = V.VGGishEmbedder(tiny)
    y = emb.embed(_audio(n_samples / SR)[:n_samples])
    assert y.shape == (rows, 128) and y.dtype == np.float32 and np.isfinite(y).all()


def test_vggish_short_clip_is_zero_padded_and_no_final_relu(tiny):
    emb = V.VGGishEmbedder(tiny)
    x = _audio(0.5)
    padded = np.pad(x, (0, 15_600 - x.size))
    assert np.array_equal(emb.embed(x), emb.embed(padded))
    y = emb.embed(_audio(3.0))
    assert (y < 0).any()  # the last ReLU is dropped (frechet_audio_distance use_activation=False)


def test_vggish_deterministic_and_batch_invariant(tiny):
    x = _audio(5.0, seed=3)
    a = V.VGGishEmbedder(tiny, batch_size=64).embed(x)
    b = V.VGGishEmbedder(tiny, batch_size=2).embed(x)
    assert np.array_equal(a, V.VGGishEmbedder(tiny).embed(x))
    assert np.allclose(a, b, atol=1e-5)
    assert not np.allclose(a, V.VGGishEmbedder(tiny).embed(_audio(5.0, seed=4)))


def test_vggish_bad_input_and_options(tiny):
    emb = V.VGGishEmbedder(tiny)
    for bad in (np.zeros(0, np.float32), np.zeros((2, 16000), np.float32), np.full(16000, np.nan, np.float32)):
        with pytest.raises(EmbedderError):
            emb.embed(bad)
    with pytest.raises(EmbedderError, match="unknown options"):
        V.VGGishEmbedder(tiny, pca=True)
    with pytest.raises(EmbedderError, match="batch_size"):
        V.VGGishEmbedder(tiny, batch_size=0)


# --- log-mel embedder --------------------------------------------------------------------------

def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_logmel_shapes_and_protocol():
    emb = build_embedder("logmel", None)
    assert isinstance(emb, L.LogMelEmbedder)
    assert emb.embed(_audio(10.0)).shape == (19, 64)  # 998 frames // 50
    assert emb.embed(_audio(0.2)).shape == (1, 64)  # shorter than a window: mean of its frames
    assert emb.embed(np.zeros(10, np.float32)).shape == (1, 64)  # shorter than a frame: padded
    assert emb.protocol() == {"model": "logmel-64", "checkpoint": None, "checkpoint_sha256": None,
                              "sample_rate": 16000, "window_s": 0.5, "hop_s": 0.5}
    raw = L.LogMelEmbedder(None, pool_s=0, n_mels=32, sample_rate=22050)
    assert raw.embed(np.zeros(22050, np.float32)).shape == (1 + (22050 - 551) // 220, 32)
    assert (raw.protocol()["window_s"], raw.protocol()["hop_s"], raw.protocol()["model"]) == (0.025, 0.01, "logmel-32")
    assert L.LogMelEmbedder(None, fmax=8000).protocol()["model"] == "logmel-64-125-8000Hz"


def test_logmel_rejects_bad_options():
    for kw, msg in [({"n_mels": 200}, "n_mels"), ({"fmax": 9000}, "fmax"), ({"pool_s": -1}, "pool_s"),
                    ({"hop": 3}, "unknown")]:
        with pytest.raises(EmbedderError, match=msg):
            L.LogMelEmbedder(None, **kw)
    with pytest.raises(EmbedderError, match="no weights"):
        L.LogMelEmbedder("some.pth")


def test_logmel_fd_grows_with_noise():
    emb = L.LogMelEmbedder(None)
    t = np.arange(10 * SR) / SR

    def clip_set(noise: float, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        rows = [emb.embed((0.3 * np.sin(2 * np.pi * 440 * t + rng.uniform(0, 6.3))
                           + noise * rng.standard_normal(t.shape)).astype(np.float32)) for _ in range(6)]
        return np.concatenate(rows)  # [114, 64]

    ref = clip_set(0.003, seed=0)
    fds = [_frechet(ref, clip_set(n, seed=1)) for n in (0.003, 0.01, 0.03, 0.1, 0.3)]
    assert fds[0] < 1.0
    assert all(a < b for a, b in zip(fds, fds[1:])), fds
    assert np.array_equal(emb.embed(_audio(2.0)), emb.embed(_audio(2.0)))
