"""Metric math against closed forms (Frechet distance, KL, bootstrap) and the per-file embedding cache."""

import math
import warnings

import numpy as np
import pytest

from ssmttm import audio as ssm_audio
from ssmttm.eval import cache, stats
from ssmttm.eval.embedders.base import Embedder


def _diag_fd(mu1, v1, mu2, v2):
    """Closed form for diagonal covariances: |mu1-mu2|^2 + sum(v1 + v2 - 2 sqrt(v1 v2))."""
    return float(np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2.0 * np.sqrt(v1 * v2)))


def _random_cov(rng, d, n=None):
    a = rng.standard_normal((d, n or 2 * d))
    return a @ a.T / a.shape[1]


def test_gaussian_stats_shapes_and_values():
    x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 4.0]], dtype=np.float32)
    mu, s = stats.gaussian_stats(x)
    assert mu.dtype == np.float64 and s.shape == (2, 2)
    np.testing.assert_allclose(mu, [3.0, 4.0])
    np.testing.assert_allclose(s, np.cov(x.astype(np.float64), rowvar=False))
    with pytest.raises(ValueError, match="at least 2"):
        stats.gaussian_stats(x[:1])
    with pytest.raises(ValueError, match=r"\[n, D\]"):
        stats.gaussian_stats(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        stats.gaussian_stats(np.array([[1.0, np.nan], [2.0, 3.0]]))


def test_fd_diagonal_closed_form():
    rng = np.random.default_rng(0)
    for d in (1, 4, 32):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        v1, v2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
        got = stats.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
        assert got == pytest.approx(_diag_fd(mu1, v1, mu2, v2), rel=1e-9, abs=1e-9)
    # 1-D textbook case: N(0, 1) vs N(3, 4): 9 + 1 + 4 - 2 * 2 = 10.
    assert stats.frechet_distance([0.0], [[1.0]], [3.0], [[4.0]]) == pytest.approx(10.0)


def test_fd_full_covariance_matches_eigen_formula():
    rng = np.random.default_rng(1)
    d = 16
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    # Independent formula: Tr sqrt(S1 S2) = sum sqrt(eigvals(S1 S2)) (eigenvalues of a product of
    # two PSD matrices are real and >= 0).
    ev = np.linalg.eigvals(s1 @ s2)
    expected = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.abs(ev.real)).sum())
    assert stats.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert stats.frechet_distance_eig(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_fd_identical_zero_and_symmetric():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 8))
    y = rng.standard_normal((150, 8)) * 1.5 + 0.3
    assert stats.fd_from_embeddings([x[:100], x[100:]], [x]) == pytest.approx(0.0, abs=1e-8)
    a = stats.fd_from_embeddings([x], [y])
    b = stats.fd_from_embeddings([y], [x])
    assert a > 0.5 and a == pytest.approx(b, rel=1e-9)


def test_fd_pools_frames_of_clips():
    rng = np.random.default_rng(3)
    clips = [rng.standard_normal((int(rng.integers(2, 9)), 6)) for _ in range(12)]
    ref = [rng.standard_normal((5, 6)) + 1.0 for _ in range(10)]
    want = stats.frechet_distance(*stats.gaussian_stats(np.concatenate(clips)),
                                  *stats.gaussian_stats(np.concatenate(ref)))
    assert stats.fd_from_embeddings(clips, ref) == pytest.approx(want)
    with pytest.raises(ValueError, match="widths"):
        stats.fd_from_embeddings(clips, [np.zeros((3, 5))])
    with pytest.raises(ValueError, match="empty"):
        stats.fd_from_embeddings([], ref)


def test_fd_near_singular_uses_eps_and_stays_finite():
    rng = np.random.default_rng(4)
    d = 20
    x, y = rng.standard_normal((5, d)), rng.standard_normal((6, d))  # rank-deficient covariances
    fd = stats.frechet_distance(*stats.gaussian_stats(x), *stats.gaussian_stats(y))
    assert math.isfinite(fd) and fd > 0
    with pytest.raises(ValueError, match="covariances"):
        stats.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))


def test_fd_matches_frechet_audio_distance_package():
    from ssmttm.compat import prepare_torchvision

    prepare_torchvision()
    fad = pytest.importorskip("frechet_audio_distance.fad")
    ref_impl = fad.FrechetAudioDistance.calculate_frechet_distance  # method that never uses ``self``
    rng = np.random.default_rng(5)
    for d, n in ((8, 50), (64, 300)):
        x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
        y = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + 0.5
        m1, s1 = stats.gaussian_stats(x)
        m2, s2 = stats.gaussian_stats(y)
        with warnings.catch_warnings():  # its sqrtm(..., disp=False) is deprecated in scipy >= 1.16
            warnings.simplefilter("ignore", DeprecationWarning)
            want = float(ref_impl(object.__new__(fad.FrechetAudioDistance), m1, s1, m2, s2))
        assert stats.frechet_distance(m1, s1, m2, s2) == pytest.approx(want, rel=1e-7)


def test_kl_properties():
    rng = np.random.default_rng(6)
    z = rng.standard_normal(527)
    assert stats.kl_per_pair(z, z) == pytest.approx(0.0, abs=1e-12)
    assert stats.kl_per_pair(z, z + 7.0) == pytest.approx(0.0, abs=1e-12)  # softmax shift-invariance
    for _ in range(20):
        a, b = rng.standard_normal(10) * 3, rng.standard_normal(10) * 3
        assert stats.kl_per_pair(a, b) >= 0.0
    # Two classes: p = softmax([log .8, log .2]), q = (.4, .6): KL = .8 ln 2 + .2 ln(1/3).
    p, q = np.log([0.8, 0.2]), np.log([0.4, 0.6])
    assert stats.kl_per_pair(p, q) == pytest.approx(0.8 * math.log(2.0) + 0.2 * math.log(0.2 / 0.6), rel=1e-12)
    # Extreme logits stay finite (stable log-softmax).
    assert math.isfinite(stats.kl_per_pair([1000.0, -1000.0], [-1000.0, 1000.0]))


def test_kl_with_epsilon_equals_a_transcription_of_audiocrafts_formula():
    """audiocraft/metrics/kld.py: kl_divergence(pred, target, 1e-6) = kl_div((pred + 1e-6).log(), target)
    summed over classes, pred = softmax of the generated clip's logits, target = the reference's."""
    import torch

    rng = np.random.default_rng(7)
    for scale in (1.0, 4.0, 12.0):  # PaSST-like logits: a few confident classes at large scale
        ref, gen = rng.standard_normal((2, 527)) * scale
        pred, target = torch.softmax(torch.tensor(gen), -1), torch.softmax(torch.tensor(ref), -1)
        want = float(torch.nn.functional.kl_div((pred + 1e-6).log(), target, reduction="none").sum(-1))
        assert stats.kl_per_pair(ref, gen, 1e-6) == pytest.approx(want, rel=1e-9, abs=1e-12)
        assert stats.kl_per_pair(ref, gen, 1e-6) <= stats.kl_per_pair(ref, gen) + 1e-12  # eps caps the penalty
    with pytest.raises(ValueError, match="epsilon"):
        stats.kl_per_pair(ref, gen, -1.0)
    with pytest.raises(ValueError, match="length"):
        stats.kl_per_pair(np.zeros(3), np.zeros(4))


def test_mean_pooled_probs():
    w = np.array([[0.0, 2.0, -1.0], [2.0, 0.0, 1.0]])
    np.testing.assert_allclose(stats.mean_pooled_logits(w), [1.0, 1.0, 0.0])
    p = stats.mean_pooled_probs(w)
    assert p.sum() == pytest.approx(1.0) and p[0] == pytest.approx(p[1]) and p[2] < p[0]


def test_bootstrap_ci_mean():
    rng = np.random.default_rng(7)
    big = rng.normal(5.0, 2.0, 2000)
    widths = []
    for n in (20, 200, 2000):
        v = big[:n]
        lo, hi = stats.mean_ci(v, n_boot=400, seed=0)
        assert lo <= v.mean() <= hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    # ~ 2 * 1.96 * sigma / sqrt(n) for the largest n
    assert widths[2] == pytest.approx(2 * 1.96 * 2.0 / math.sqrt(2000), rel=0.25)
    v = big[:50]
    assert stats.mean_ci(v, 200, seed=3) == stats.mean_ci(v, 200, seed=3)
    assert stats.mean_ci(v, 200, seed=3) != stats.mean_ci(v, 200, seed=4)
    with pytest.raises(ValueError, match="n_items"):
        stats.bootstrap_ci(lambda idx: 0.0, 0, 10, 0)
    with pytest.raises(ValueError, match="alpha"):
        stats.bootstrap_ci(lambda idx: 0.0, 5, 10, 0, alpha=1.5)



def test_mean_ci_is_scipys_seeded_percentile_bootstrap():
    from scipy import stats as sps

    v = np.random.default_rng(11).exponential(2.0, 40)  # skewed: percentile and BCa differ
    want = sps.bootstrap((v,), np.mean, n_resamples=300, method="percentile", confidence_level=0.9,
                         rng=np.random.default_rng(5)).confidence_interval
    assert stats.mean_ci(v, 300, seed=5, alpha=0.1) == (want.low, want.high)
    # the generic index bootstrap draws the same resamples: the same interval for the mean
    assert stats.bootstrap_ci(lambda idx: float(v[idx].mean()), v.size, 300, 5, 0.1) == (want.low, want.high)
    assert stats.mean_ci([2.5], 100, seed=0) == (2.5, 2.5)  # one item: every resample is it
    with pytest.raises(ValueError, match="NaN"):
        stats.mean_ci([1.0, np.nan, 2.0], 100, seed=0)


def test_bootstrap_ci_drops_non_finite_resamples():
    v = np.arange(10.0)

    def stat(idx):  # degenerate whenever item 0 is drawn first
        return float("nan") if idx[0] == 0 else float(v[idx].mean())

    lo, hi = stats.bootstrap_ci(stat, v.size, 300, seed=2)
    assert 0.0 < lo < v.mean() < hi < 9.0
    assert (lo, hi) == stats.bootstrap_ci(stat, v.size, 300, seed=2)
    with pytest.raises(ValueError, match="non-finite"):
        stats.bootstrap_ci(lambda idx: float("inf"), 5, 20, seed=0)


def test_fd_bootstrap_resamples_generated_clips():
    rng = np.random.default_rng(8)
    ref = [rng.standard_normal((4, 6)) for _ in range(60)]
    gen = [rng.standard_normal((4, 6)) * 1.3 + 0.4 for _ in range(40)]
    point = stats.fd_from_embeddings(gen, ref)
    lo, hi = stats.fd_bootstrap_ci(gen, ref, n_boot=200, seed=0)
    assert lo < hi and lo <= point * 1.5 and hi >= point * 0.5
    assert (lo, hi) == stats.fd_bootstrap_ci(gen, ref, n_boot=200, seed=0)
    # Only the generated side is resampled: identical sets give an interval starting near 0.
    lo0, hi0 = stats.fd_bootstrap_ci(ref, ref, n_boot=100, seed=1)
    assert lo0 >= 0.0 and lo0 < point / 4


# --- per-file embedding cache (ssmttm.eval.cache) -------------------------------------------------------


class _MomentsEmbedder(Embedder):
    """Toy metric model: mean and std of 100 ms frames -> [frames, 2]; counts embed() calls."""

    name = "moments"
    sample_rate = 8000
    window_s = 0.1
    hop_s = 0.1

    def __init__(self, weights, device="cpu", **aux):
        super().__init__(weights, device, **aux)
        self.calls = 0

    def embed(self, audio):
        assert audio.ndim == 1 and audio.dtype == np.float32
        self.calls += 1
        f = audio[: audio.size // 800 * 800].reshape(-1, 800)
        return np.stack([f.mean(1), f.std(1)], axis=1).astype(np.float32)


def _tone(path, hz, sr=44100, seconds=1.0, channels=2):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * hz * t).astype(np.float32)
    ssm_audio.write(path, np.repeat(x[None], channels, 0), sr)


def test_embed_files_cache_hits_and_misses(tmp_path):
    ckpt = tmp_path / "ckpt.bin"
    ckpt.write_bytes(b"weights v1")
    files = [tmp_path / "a.wav", tmp_path / "b.wav", tmp_path / "bad.wav", tmp_path / "missing.wav"]
    _tone(files[0], 440)
    _tone(files[1], 220, sr=22050, channels=1)
    files[2].write_bytes(b"not audio at all")
    cdir = tmp_path / "cache"

    emb = _MomentsEmbedder(ckpt)
    out, reasons = cache.embed_files(emb, files, cdir)
    assert emb.calls == 2 and out[2] is None and out[3] is None
    assert len(reasons) == 2 and "bad.wav" in reasons[0] and "missing.wav" in reasons[1]
    assert out[0].shape == (10, 2) and out[0].dtype == np.float32
    assert out[0][:, 1].mean() == pytest.approx(0.5 / np.sqrt(2), rel=0.02)  # mono downmix, 8 kHz resample
    stored = sorted((cdir / "moments").rglob("*.npy"))
    assert len(stored) == 2 and all(p.parent.name == p.stem[:2] for p in stored)

    emb2 = _MomentsEmbedder(ckpt)  # rerun: everything from the cache
    again, _ = cache.embed_files(emb2, files[:2], cdir)
    assert emb2.calls == 0
    np.testing.assert_array_equal(again[0], out[0])

    _tone(files[0], 660)  # the file changed: a miss for it only
    emb3 = _MomentsEmbedder(ckpt)
    cache.embed_files(emb3, files[:2], cdir)
    assert emb3.calls == 1

    ckpt.write_bytes(b"weights v2")  # a new checkpoint: every file is a miss
    emb4 = _MomentsEmbedder(ckpt)
    cache.embed_files(emb4, files[:2], cdir)
    assert emb4.calls == 2

    class Wider(_MomentsEmbedder):  # same checkpoint, other protocol (window) -> other keys
        window_s = 0.2

    emb5 = Wider(ckpt)
    cache.embed_files(emb5, files[:2], cdir)
    assert emb5.calls == 2


def test_embed_files_recovers_from_corrupt_cache_and_bad_output(tmp_path):
    f = tmp_path / "a.wav"
    _tone(f, 440)
    emb = _MomentsEmbedder(None)
    cache.embed_files(emb, [f], tmp_path / "c")
    (stored,) = (tmp_path / "c").rglob("*.npy")
    stored.write_bytes(b"garbage")
    out, reasons = cache.embed_files(emb, [f], tmp_path / "c")
    assert emb.calls == 2 and not reasons and out[0].shape == (10, 2)
    assert np.load(stored, allow_pickle=False).shape == (10, 2)

    class Broken(_MomentsEmbedder):
        def embed(self, audio):
            return np.full((3, 2), np.nan, dtype=np.float32)

    out, reasons = cache.embed_files(Broken(None), [f], tmp_path / "c2")
    assert out == [None] and "a.wav" in reasons[0] and "NaN" in reasons[0]
    assert not list((tmp_path / "c2").rglob("*.npy"))


def test_low_rank_fd_equals_the_full_formula_and_the_interval_holds_the_estimate():
    from ssmttm.eval import stats

    rng = np.random.default_rng(3)
    ref = [rng.normal(size=(1, 64)) for _ in range(40)]
    gen = [rng.normal(0.3, 1.2, size=(1, 64)) for _ in range(12)]  # fewer clips than dimensions
    r = stats.pool_frames(ref)
    mu_r, s_r = stats.gaussian_stats(r)
    root = stats._psd_sqrt(s_r)
    x = stats.pool_frames(gen)
    low_rank = stats._fd_with_root_frames(mu_r, root, float(np.trace(s_r)), x)
    full = stats.frechet_distance_eig(mu_r, s_r, *stats.gaussian_stats(x))
    assert low_rank == pytest.approx(full, rel=1e-6)  # eigvalsh clips round-off negatives; SVD does not
    point = stats.fd_from_embeddings(gen, ref)
    lo, hi = stats.fd_bootstrap_ci(gen, ref, 200, seed=0)
    assert lo <= point <= hi and hi - lo > 0
    assert stats.fd_bootstrap_ci(gen, ref, 200, seed=0) == (lo, hi)
