"""Audio reading, resampling, channel handling and writing: one way, used by every stage.

Audio is read with soundfile (libsndfile >= 1.1 decodes MP3; torchaudio.load needs torchcodec since
2.9 and is avoided), resampled with soxr, and kept as float32 arrays shaped ``[channels, samples]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ssmttm.io import atomic_path


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and the reason."""


def info(path: str | os.PathLike) -> tuple[int, int, float]:
    """(sample_rate, channels, seconds) from the file header, without decoding the audio."""
    import soundfile as sf

    try:
        i = sf.info(str(path))
    except Exception as exc:  # libsndfile raises RuntimeError / LibsndfileError
        raise AudioError(f"{path}: unreadable audio header ({exc})") from exc
    return int(i.samplerate), int(i.channels), float(i.frames) / float(i.samplerate or 1)


def read(
    path: str | os.PathLike,
    offset_s: float = 0.0,
    seconds: float | None = None,
) -> tuple[np.ndarray, int]:
    """Decode ``path`` (or ``seconds`` of it from ``offset_s``) to ``x: [C, N] float32`` and its rate.

    Raises AudioError naming the file when it cannot be decoded or decodes to nothing.
    """
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            sr = int(f.samplerate)
            start = int(round(offset_s * sr))
            if start:
                f.seek(start)
            frames = -1 if seconds is None else int(round(seconds * sr))
            x = f.read(frames=frames, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(f"{path}: cannot decode audio ({exc})") from exc
    if x.size == 0:
        raise AudioError(f"{path}: decodes to zero samples")
    return np.ascontiguousarray(x.T), sr


def to_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """Downmix (mean) or duplicate channels so ``x: [C, N]`` has exactly ``channels`` rows."""
    if x.ndim != 2:
        raise ValueError(f"expected [C, N] audio, got shape {x.shape}")
    c = x.shape[0]
    if c == channels:
        return x
    if channels == 1:
        return x.mean(axis=0, keepdims=True)
    if c == 1:
        return np.repeat(x, channels, axis=0)
    # c > channels > 1 is not a layout MTG-Jamendo has: fold to mono, then spread.
    return np.repeat(x.mean(axis=0, keepdims=True), channels, axis=0)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample ``x: [C, N]`` with soxr (high quality); a no-op when the rates match."""
    if sr_in == sr_out:
        return x
    import soxr

    y = soxr.resample(x.T, sr_in, sr_out, quality="HQ")
    return np.ascontiguousarray(np.asarray(y, dtype=np.float32).reshape(-1, x.shape[0]).T)


def load(
    path: str | os.PathLike,
    sample_rate: int,
    channels: int,
    offset_s: float = 0.0,
    seconds: float | None = None,
) -> np.ndarray:
    """Read, downmix/duplicate to ``channels`` and resample to ``sample_rate``: ``[channels, N]``."""
    x, sr = read(path, offset_s, seconds)
    return resample(to_channels(x, channels), sr, sample_rate)


def rms_dbfs(x: np.ndarray) -> float:
    """Root-mean-square level in dB relative to full scale (-inf for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def check_usable(x: np.ndarray, path: str | os.PathLike, silence_dbfs: float) -> None:
    """Raise AudioError (naming ``path``) for non-finite samples or a level below ``silence_dbfs``."""
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{path}: non-finite samples")
    level = rms_dbfs(x)
    if level < silence_dbfs:
        raise AudioError(f"{path}: silent (RMS {level:.1f} dBFS < {silence_dbfs} dBFS)")


def write(path: str | os.PathLike, x: np.ndarray, sample_rate: int, subtype: str | None = None) -> None:
    """Write ``x: [C, N]`` atomically; format from the extension (.flac, .wav, .mp3)."""
    import soundfile as sf

    path = Path(path)
    x = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), x.T, sample_rate, subtype=subtype, format=path.suffix.lstrip(".").upper())
