"""Metric math on embeddings: Frechet distance, KL between classifier outputs, bootstrap intervals.

numpy + scipy only; every function takes arrays the embedders already produced (ssmttm.eval.cache).

- Frechet distance (FAD / FD, Kilgour et al. 2019; the FID formula of Heusel et al. 2017): fit one
  Gaussian to all frames of a set (frames of every clip pooled, as the FAD reference implementation
  and audiocraft do), then ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})``.
- KL (audiocraft / MusicGen protocol, docs/reference.md §3): PaSST window logits are mean-pooled
  per clip, softmaxed, and ``KL(p_ref || p_gen)`` is taken per (reference, generated) pair, then averaged.
- FAD is biased by the number of clips (Binkowski et al. 2018; Gui et al. 2024), so every score
  carries n and a bootstrap interval: for FD the *generated clips* are resampled with replacement
  while the reference statistics stay fixed (the reference set is the yardstick, not the thing
  measured), and the interval is ``FD +- z * se`` (:func:`fd_bootstrap_ci`); for per-pair metrics
  (KL, CLAP score, attribute hits) the pairs are resampled and the interval of their mean is the
  percentile one of ``scipy.stats.bootstrap`` (:func:`mean_ci`).
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np

# |imag| of the matrix square root's diagonal above which the result is not trusted (as in the
# pytorch-fid / frechet_audio_distance reference code).
IMAG_TOL = 1e-3


# --- Gaussians and the Frechet distance ------------------------------------------------------------
def gaussian_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, ddof=1) covariance of ``x: [n, D]``: ``(mu [D], sigma [D, D])`` float64."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"gaussian_stats expects [n, D] vectors, got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"gaussian_stats needs at least 2 vectors to estimate a covariance, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise ValueError("gaussian_stats: embeddings contain NaN or inf")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _check_pair(mu1, sigma1, mu2, sigma2):
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"mean vectors differ in shape: {mu1.shape} vs {mu2.shape}")
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"covariances must be [{d}, {d}], got {s1.shape} and {s2.shape}")
    return mu1, s1, mu2, s2


def _sqrtm(a: np.ndarray) -> tuple[np.ndarray, float]:
    """scipy's Schur matrix square root and its relative error ||X X - A||_F / ||A||_F."""
    from scipy import linalg

    x = linalg.sqrtm(a)
    if not np.all(np.isfinite(x)):
        return x, float("inf")
    norm = float(np.linalg.norm(a)) or 1.0
    return x, float(np.linalg.norm(x @ x - a) / norm)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (``mu [D]``, ``sigma [D, D]``).

    ``d^2 = ||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^{1/2})``, the square root
    by scipy.linalg.sqrtm. When the product is near-singular (few vectors, D > n) and the root comes
    out non-finite or inaccurate, ``eps * I`` is added to both covariances (the standard fix from the
    FID / FAD reference code). Imaginary parts from round-off are dropped; a large one raises
    ValueError. Returns a float >= 0 (tiny negative round-off is clipped).
    """
    mu1, s1, mu2, s2 = _check_pair(mu1, sigma1, mu2, sigma2)
    diff = mu1 - mu2
    covmean, err = _sqrtm(s1 @ s2)
    if not np.isfinite(err) or err > 1e-3:
        offset = np.eye(s1.shape[0]) * eps
        covmean, err = _sqrtm((s1 + offset) @ (s2 + offset))
        if not np.all(np.isfinite(covmean)):
            raise ValueError("frechet_distance: matrix square root is not finite even after adding eps * I")
    if np.iscomplexobj(covmean):
        imag = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if imag > IMAG_TOL:
            raise ValueError(f"frechet_distance: imaginary component {imag:.3g} in sqrt(sigma1 sigma2)")
        covmean = covmean.real
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(fd, 0.0)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix via eigh (negative round-off eigenvalues -> 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance_eig(mu1, sigma1, mu2, sigma2) -> float:
    """The same distance through eigenvalues: ``Tr((S1 S2)^{1/2}) = sum sqrt(eig(A S2 A))``, ``A = S1^{1/2}``.

    ``S1 S2 = A (A S2)`` has the eigenvalues of the symmetric PSD ``A S2 A``, so no non-symmetric
    square root is needed. Used by the FD bootstrap (A is computed once for the fixed reference)
    and as an independent check of :func:`frechet_distance`.
    """
    mu1, s1, mu2, s2 = _check_pair(mu1, sigma1, mu2, sigma2)
    return _fd_with_root(mu1, _psd_sqrt(s1), float(np.trace(s1)), mu2, s2)


def _fd_with_root(mu_r, root_r, tr_r, mu_g, s_g) -> float:
    m = root_r @ s_g @ root_r
    w = np.linalg.eigvalsh((m + m.T) / 2.0)
    diff = mu_r - mu_g
    return max(float(diff @ diff + tr_r + np.trace(s_g) - 2.0 * np.sqrt(np.clip(w, 0.0, None)).sum()), 0.0)


def _fd_with_root_frames(mu_r, root_r, tr_r, x: np.ndarray) -> float:
    """:func:`_fd_with_root` straight from generated frames ``x: [m, D]`` without forming their
    D x D covariance: with ``B = x - mean`` and ``S_g = B^T B / (m - 1)``, the eigenvalues of
    ``A S_g A`` are the squared singular values of ``C = B A / sqrt(m - 1)``, so
    ``Tr((A S_g A)^{1/2}) = sum svd(C)``. Exact; O(m D^2) instead of O(D^3) per call, which is what
    makes a bootstrap of clip-level embeddings (D = 512, a few dozen clips) cheap."""
    m = x.shape[0]
    mu_g = x.mean(axis=0)
    b = x - mu_g
    c = (b @ root_r) / np.sqrt(m - 1)
    sv = np.linalg.svd(c, compute_uv=False)
    diff = mu_r - mu_g
    return max(float(diff @ diff + tr_r + np.square(b).sum() / (m - 1) - 2.0 * sv.sum()), 0.0)


def pool_frames(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """Stack per-clip embeddings ``[frames_i, D]`` into ``[sum frames_i, D]`` float64."""
    if len(embeddings) == 0:
        raise ValueError("no embeddings to pool (empty set)")
    arrs = [np.atleast_2d(np.asarray(e, dtype=np.float64)) for e in embeddings]
    dims = {a.shape[1] for a in arrs}
    if len(dims) != 1:
        raise ValueError(f"embeddings have different widths {sorted(dims)}")
    return np.concatenate(arrs, axis=0)


def fd_from_embeddings(gen: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> float:
    """Frechet distance between the generated and reference sets, frames of all clips pooled.

    gen, ref: lists of ``[frames, D]`` arrays (one per clip; a clip-level embedder gives frames = 1).
    """
    g, r = pool_frames(gen), pool_frames(ref)
    if g.shape[1] != r.shape[1]:
        raise ValueError(f"generated and reference embeddings have different widths {g.shape[1]} vs {r.shape[1]}")
    return frechet_distance(*gaussian_stats(g), *gaussian_stats(r))


# --- KL between classifier distributions ------------------------------------------------------------
def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable log-softmax (max subtracted before exp), float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.exp(log_softmax(logits, axis))


def mean_pooled_logits(window_logits: np.ndarray) -> np.ndarray:
    """Clip logits ``[C]`` from per-window logits ``[windows, C]``: mean over windows.

    stable-audio-metrics' PaSST KL (``src/passt_kld.py``) pools the logits of its 10 s / 5 s-hop
    windows before the softmax. Clips of at most 10 s (the evaluation protocol cuts every clip to
    its references' duration, 10 s for MusicCaps) have one window, where this equals audiocraft's
    per-segment softmax.
    """
    x = np.atleast_2d(np.asarray(window_logits, dtype=np.float64))
    if x.shape[0] == 0:
        raise ValueError("no windows to pool")
    return x.mean(axis=0)


def mean_pooled_probs(window_logits: np.ndarray) -> np.ndarray:
    """Class distribution ``[C]`` of a clip: softmax of its mean-pooled window logits."""
    return softmax(mean_pooled_logits(window_logits))


def kl_per_pair(ref_logits: np.ndarray, gen_logits: np.ndarray, epsilon: float = 0.0) -> float:
    """KL of one pair of clip logits ``[C]`` each, in nats: ``sum p (log p - log(q + epsilon))`` with
    ``p = softmax(ref)``, ``q = softmax(gen)``.

    ``epsilon`` = 1e-6 is audiocraft's definition (``audiocraft/metrics/kld.py``: ``kl_div((pred +
    1e-6).log(), target)``, pred the generated clip's, target the reference's probabilities), which
    produced the published MusicGen KLs; it caps the penalty of a class the generated clip gives
    near-zero probability, so it reads lower than the exact KL (``epsilon`` = 0) on mismatched
    content. The exact KL is computed from log-softmaxes and stays finite for any finite logits.
    Terms with ``p = 0`` contribute 0. The exact KL is >= 0 up to round-off (clipped); with epsilon
    the value can dip a hair below 0 for matching clips (``log(p + eps) > log p``), kept as is so the
    number equals audiocraft's.
    """
    ref, gen = np.asarray(ref_logits, np.float64).ravel(), np.asarray(gen_logits, np.float64).ravel()
    if ref.shape != gen.shape:
        raise ValueError(f"logit vectors differ in length: {ref.shape[0]} vs {gen.shape[0]}")
    if not (epsilon >= 0 and np.isfinite(epsilon)):
        raise ValueError(f"KL epsilon must be finite and >= 0, got {epsilon}")
    lp = log_softmax(ref)
    lq = log_softmax(gen) if epsilon == 0 else np.log(np.exp(log_softmax(gen)) + float(epsilon))
    p = np.exp(lp)
    kl = float(np.sum(np.where(p > 0, p * (lp - lq), 0.0)))
    return max(kl, 0.0) if epsilon == 0 else kl


# --- bootstrap ----------------------------------------------------------------------------------------
def _check_bootstrap_args(n_items: int, n_boot: int, alpha: float, who: str) -> None:
    if n_items < 1:
        raise ValueError(f"{who} needs n_items >= 1, got {n_items}")
    if n_boot < 1:
        raise ValueError(f"{who} needs n_boot >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _percentile_bootstrap(data: np.ndarray, statistic, vectorized: bool, n_boot: int, seed: int,
                          alpha: float):
    """``scipy.stats.bootstrap`` of a one-sample ``statistic`` over ``data`` (resampled with
    replacement, ``n_boot`` times), percentile method, seeded: the ``BootstrapResult``."""
    from scipy import stats as sps

    with warnings.catch_warnings():  # a non-finite resample is handled by the callers, not warned about
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)
        return sps.bootstrap((data,), statistic, n_resamples=n_boot, vectorized=vectorized,
                             confidence_level=1.0 - alpha, method="percentile",
                             rng=np.random.default_rng(seed))


def bootstrap_ci(
    stat_fn: Callable[[np.ndarray], float],
    n_items: int,
    n_boot: int,
    seed: int,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap interval of any statistic of items: ``(low, high)`` at levels ``alpha/2``
    and ``1 - alpha/2``.

    ``scipy.stats.bootstrap`` resamples the item indices ``n_boot`` times with replacement
    (``idx: [n_items] int64``) and calls ``stat_fn(idx) -> float`` on each resample; resamples whose
    statistic is non-finite are dropped (a resample can be degenerate) and the percentiles taken over
    the others. Deterministic for a given ``seed``. One item: its statistic, twice.
    """
    _check_bootstrap_args(n_items, n_boot, alpha, "bootstrap_ci")
    if n_items == 1:  # every resample is the one item (scipy needs two)
        vals = np.array([stat_fn(np.zeros(1, dtype=np.int64))], dtype=np.float64)
    else:
        res = _percentile_bootstrap(np.arange(n_items), stat_fn, False, n_boot, seed, alpha)
        vals = np.asarray(res.bootstrap_distribution, dtype=np.float64)
        if np.all(np.isfinite(vals)):
            return float(res.confidence_interval.low), float(res.confidence_interval.high)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        raise ValueError("every bootstrap resample gave a non-finite statistic")
    low, high = np.quantile(vals, [alpha / 2.0, 1.0 - alpha / 2.0])  # scipy's percentile rule
    return float(low), float(high)


def mean_ci(values: Sequence[float], n_boot: int, seed: int, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-item values (per-pair KL, per-clip CLAP
    cosine, attribute hits): ``scipy.stats.bootstrap`` of ``np.mean`` with the items resampled with
    replacement, ``method="percentile"``, seeded by ``seed`` (deterministic). ``values: [n]`` finite."""
    v = np.asarray(values, dtype=np.float64).ravel()
    _check_bootstrap_args(v.shape[0], n_boot, alpha, "mean_ci")
    if not np.all(np.isfinite(v)):
        raise ValueError("mean_ci: values contain NaN or inf")
    if v.shape[0] == 1:  # every resample is the one value (scipy needs two)
        return float(v[0]), float(v[0])
    ci = _percentile_bootstrap(v, np.mean, True, n_boot, seed, alpha).confidence_interval
    return float(ci.low), float(ci.high)


def fd_bootstrap_ci(
    gen: Sequence[np.ndarray],
    ref: Sequence[np.ndarray],
    n_boot: int,
    seed: int,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Bootstrap interval of :func:`fd_from_embeddings`: the *generated clips* are resampled with
    replacement (all frames of a drawn clip come along); the reference statistics are fixed.

    The interval is the normal one around the point estimate, ``FD +- z * se``, with ``se`` the
    standard deviation of the resampled FDs. Percentile intervals of FD do not work: a resample
    repeats clips (about 63 % distinct), which inflates FD's small-sample bias, so the resampled FDs
    sit above the point estimate and a percentile interval can miss it entirely (measured: FD 137,
    percentile interval 189-201, 1000 clips of 512-d). The spread is what the bootstrap measures well.
    The reference covariance's square root is computed once; each resample goes through
    :func:`_fd_with_root_frames` (an SVD of the resample's centered frames when they are fewer than D).
    """
    from statistics import NormalDist

    if n_boot < 1:
        raise ValueError(f"bootstrap needs n_boot >= 1, got {n_boot}")
    r = pool_frames(ref)
    mu_r, s_r = gaussian_stats(r)
    root_r, tr_r = _psd_sqrt(s_r), float(np.trace(s_r))
    clips = [np.atleast_2d(np.asarray(e, dtype=np.float64)) for e in gen]
    point = fd_from_embeddings(clips, ref)
    d = r.shape[1]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        x = np.concatenate([clips[i] for i in rng.integers(0, len(clips), size=len(clips))], axis=0)
        if x.shape[0] < 2:
            continue
        if x.shape[0] <= d:
            vals.append(_fd_with_root_frames(mu_r, root_r, tr_r, x))
        else:
            mu_g, s_g = gaussian_stats(x)
            vals.append(_fd_with_root(mu_r, root_r, tr_r, mu_g, s_g))
    vals = np.asarray(vals, dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    if vals.size < 2:
        raise ValueError("too few finite bootstrap resamples for an FD interval")
    half = NormalDist().inv_cdf(1.0 - alpha / 2.0) * float(vals.std(ddof=1))
    return max(point - half, 0.0), point + half
