"""Training-free log-mel statistics: the front end VGGish uses, and an embedder built on it alone.

Front end (the original VGGish / AudioSet ``mel_features`` recipe, docs/reference.md §3): frames
of 25 ms (400 samples at 16 kHz) every 10 ms (160 samples), no centring or padding, a *periodic*
Hann window, a zero-padded FFT of the next power of two (512), the STFT *magnitude* (not power),
64 HTK-mel bands from 125 to 7500 Hz whose triangles are linear in the mel domain (not in Hz, as
librosa's ``filters.mel(htk=True)`` draws them) with the DC bin excluded, then ``log(mel + 0.01)``.
:func:`log_mel_spectrogram` computes it with torch ops in float64 (the original runs in numpy
float64); :mod:`ssmttm.eval.embedders.vggish` frames its output into 0.96 s examples.

:class:`LogMelEmbedder` ("logmel", weights None) is that front end with no network: the log-mel
frames are mean-pooled over non-overlapping 0.5 s windows (50 frames), so one vector per 0.5 s with
D = n_mels = 64. Why pool: the Frechet distance fits a full D x D covariance, and raw 10 ms frames
are strongly correlated neighbours (a few clips would give thousands of near-duplicate rows);
0.5 s means describe the spectral texture with ~20 rows per 10 s clip and keep D small, so FD on a
handful of demo clips stays well conditioned. It is the honest demo metric: it needs no weights
and means the same thing with tiny or real models ("Frechet distance on training-free log-mel
statistics"). ``pool_s=0`` returns the raw frames instead.

aux options (all optional): ``sample_rate`` (16000), ``n_mels`` (64, at most 128), ``fmin`` (125),
``fmax`` (7500, at most sample_rate / 2), ``pool_s`` (0.5; 0 = no pooling). The protocol's model
column names the band layout (``logmel-64``; ``logmel-64-50-16000Hz`` with a non-default band) and
its window_s / hop_s columns the pooling window (0.5 / 0.5, or 0.025 / 0.01 unpooled).
"""

from __future__ import annotations

import math
import os

import numpy as np

from ssmttm.eval.embedders.base import Embedder, EmbedderError

# --- The VGGish front end (AudioSet vggish_params / mel_features) ---------------------------------
STFT_WINDOW_S = 0.025
STFT_HOP_S = 0.010
N_MELS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
# HTK mel scale: mel = 1127 ln(1 + f / 700)
_MEL_BREAK_HZ = 700.0
_MEL_Q = 1127.0

MAX_DIM = 128  # keeps the D x D covariance of a Frechet distance on a few clips well conditioned
DEFAULT_POOL_S = 0.5


def hz_to_mel(f_hz):
    """HTK mel of frequencies in Hz (scalar or array)."""
    return _MEL_Q * np.log1p(np.asarray(f_hz, dtype=np.float64) / _MEL_BREAK_HZ)


def frame_params(sample_rate: int, window_s: float = STFT_WINDOW_S, hop_s: float = STFT_HOP_S) -> tuple[int, int, int]:
    """(window, hop, n_fft) in samples: 25 ms / 10 ms rounded, FFT = next power of two of the window
    (16 kHz: 400 / 160 / 512)."""
    win = int(round(sample_rate * window_s))
    hop = int(round(sample_rate * hop_s))
    if win < 2 or hop < 1:
        raise EmbedderError(f"log-mel: window {window_s} s / hop {hop_s} s too short at {sample_rate} Hz")
    return win, hop, 2 ** int(math.ceil(math.log2(win)))


def mel_matrix(
    sample_rate: int, n_fft: int, n_mels: int = N_MELS, fmin: float = MEL_MIN_HZ, fmax: float = MEL_MAX_HZ
) -> np.ndarray:
    """HTK mel filterbank as VGGish builds it -> [n_fft // 2 + 1, n_mels] float64 (spec @ M = mel).

    Band i spans mel edges e[i], e[i+1], e[i+2] of ``n_mels + 2`` points evenly spaced in HTK mel
    between fmin and fmax; each FFT bin (at ``linspace(0, sr/2, n_bins)`` Hz) gets the triangle
    value computed in the mel domain; no area normalisation; the DC bin is zeroed (HTK excludes it).
    """
    nyquist = sample_rate / 2.0
    if not 0.0 <= fmin < fmax <= nyquist:
        raise EmbedderError(f"log-mel: need 0 <= fmin < fmax <= sample_rate/2, got fmin={fmin} fmax={fmax} "
                            f"at {sample_rate} Hz")
    n_bins = n_fft // 2 + 1
    bins_mel = hz_to_mel(np.linspace(0.0, nyquist, n_bins))[:, None]  # [n_bins, 1]
    edges = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    lo, mid, hi = edges[:-2][None, :], edges[1:-1][None, :], edges[2:][None, :]  # [1, n_mels] each
    rising = (bins_mel - lo) / (mid - lo)
    falling = (hi - bins_mel) / (hi - mid)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


def log_mel_spectrogram(
    audio: np.ndarray,
    sample_rate: int,
    n_mels: int = N_MELS,
    fmin: float = MEL_MIN_HZ,
    fmax: float = MEL_MAX_HZ,
    window_s: float = STFT_WINDOW_S,
    hop_s: float = STFT_HOP_S,
    log_offset: float = LOG_OFFSET,
) -> np.ndarray:
    """audio [N] mono -> log mel magnitudes [1 + (N - win) // hop, n_mels] float64.

    Only complete frames (no centring, no padding: the VGGish recipe); N must be >= one window.
    """
    import torch

    win, hop, n_fft = frame_params(sample_rate, window_s, hop_s)
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float64))
    if x.ndim != 1 or x.shape[0] < win:
        raise EmbedderError(f"log-mel: need 1-D audio of at least {win} samples, got shape {tuple(x.shape)}")
    frames = x.unfold(0, win, hop)  # [F, win]
    window = torch.hann_window(win, periodic=True, dtype=torch.float64)  # 0.5 - 0.5 cos(2 pi n / win)
    magnitude = torch.fft.rfft(frames * window, n=n_fft).abs()  # [F, n_fft // 2 + 1]
    mel = magnitude @ torch.from_numpy(mel_matrix(sample_rate, n_fft, n_mels, fmin, fmax))
    return torch.log(mel + log_offset).numpy()


def check_audio(audio: np.ndarray, who: str) -> np.ndarray:
    """``audio`` as 1-D float64, or EmbedderError (empty, not mono, NaN/inf)."""
    x = np.asarray(audio)
    if x.ndim != 1:
        raise EmbedderError(f"{who}: expected mono audio [N], got shape {x.shape}")
    if x.size == 0:
        raise EmbedderError(f"{who}: empty audio")
    x = x.astype(np.float64, copy=False)
    if not np.all(np.isfinite(x)):
        raise EmbedderError(f"{who}: audio holds NaN or infinite samples")
    return x


def pad_to(x: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad ``x`` [N] at the end to at least ``n`` samples."""
    return x if x.shape[0] >= n else np.pad(x, (0, n - x.shape[0]))


class LogMelEmbedder(Embedder):
    """audio [N] at ``sample_rate`` -> mean log-mel per 0.5 s window [N // (0.5 s), n_mels] float32.

    Windows are non-overlapping and complete (the tail shorter than one window is dropped); a clip
    shorter than one window gives one vector, the mean of all its frames; a clip shorter than one
    25 ms frame is zero-padded to one frame. With ``pool_s=0``: the frames themselves [F, n_mels].
    """

    name = "logmel"
    sample_rate = 16000
    window_s = DEFAULT_POOL_S
    hop_s = DEFAULT_POOL_S

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "cpu", **aux):
        super().__init__(weights, device=device, **aux)
        if self.weights is not None:
            raise EmbedderError(f"logmel: training-free, takes no weights (got {self.weights})")
        unknown = sorted(set(self.aux) - {"sample_rate", "n_mels", "fmin", "fmax", "pool_s"})
        if unknown:
            raise EmbedderError(f"logmel: unknown options {unknown} (sample_rate, n_mels, fmin, fmax, pool_s)")
        self.sample_rate = int(self.aux.get("sample_rate", LogMelEmbedder.sample_rate))
        self.n_mels = int(self.aux.get("n_mels", N_MELS))
        self.fmin = float(self.aux.get("fmin", MEL_MIN_HZ))
        self.fmax = float(self.aux.get("fmax", MEL_MAX_HZ))
        self.pool_s = float(self.aux.get("pool_s", DEFAULT_POOL_S))
        if not 1 <= self.n_mels <= MAX_DIM:
            raise EmbedderError(f"logmel: n_mels must be 1..{MAX_DIM} (a small D keeps FD conditioned), got {self.n_mels}")
        if self.pool_s < 0:
            raise EmbedderError(f"logmel: pool_s must be >= 0, got {self.pool_s}")
        self.win, self.hop, self.n_fft = frame_params(self.sample_rate)
        mel_matrix(self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax)  # validates the band now
        self.pool_frames = int(round(self.pool_s / STFT_HOP_S))
        if self.pool_frames <= 1:
            self.pool_frames = 1
            self.window_s, self.hop_s = STFT_WINDOW_S, STFT_HOP_S
        else:
            self.window_s = self.hop_s = self.pool_frames * STFT_HOP_S

    def embed(self, audio: np.ndarray) -> np.ndarray:
        x = pad_to(check_audio(audio, "logmel"), self.win)
        logmel = log_mel_spectrogram(x, self.sample_rate, self.n_mels, self.fmin, self.fmax)  # [F, n_mels]
        if self.pool_frames == 1:
            return logmel.astype(np.float32)
        n_win = logmel.shape[0] // self.pool_frames
        if n_win == 0:
            return logmel.mean(axis=0, keepdims=True).astype(np.float32)
        pooled = logmel[: n_win * self.pool_frames].reshape(n_win, self.pool_frames, self.n_mels).mean(axis=1)
        return pooled.astype(np.float32)

    def protocol(self) -> dict:
        out = super().protocol()
        model = f"logmel-{self.n_mels}"
        if (self.fmin, self.fmax) != (MEL_MIN_HZ, MEL_MAX_HZ):
            model += f"-{self.fmin:g}-{self.fmax:g}Hz"
        out["model"] = model
        return out
