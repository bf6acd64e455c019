"""Audio reading, resampling, channel handling and writing: one way, used by every stage.

Audio is read with soundfile (libsndfile >= 1.1 decodes MP3; torchaudio.load needs torchcodec since
2.9 and is avoided), resampled with soxr, and kept as float32 arrays shaped ``[channels, samples]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ssmttm.errors import SsmttmError
from ssmttm.io import atomic_path


class AudioError(SsmttmError, ValueError):
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


# What a file's first bytes say it is (sniff_format), and which of those each extension promises.
# "mp3" is MPEG-1/2/2.5 Layer III (the MTG-Jamendo encoding); layers I and II read "mpeg".
EXTENSION_FORMATS = {
    ".mp3": ("mp3",), ".wav": ("wav",), ".flac": ("flac",), ".ogg": ("ogg",), ".oga": ("ogg",),
    ".opus": ("ogg",), ".aif": ("aiff",), ".aiff": ("aiff",), ".aifc": ("aiff",), ".caf": ("caf",),
    ".w64": ("w64",), ".au": ("au",), ".m4a": ("mp4",), ".mp4": ("mp4",),
}
SNIFF_BYTES = 4096  # after an ID3v2 tag, how far to look for the first MPEG frame (encoders pad)
_W64_RIFF = bytes.fromhex("72696666" "2e91cf11a5d628db04c10000")  # "riff" + the Sony Wave64 GUID tail


def _mpeg_layer(h: bytes) -> int:
    """MPEG audio layer (1..3) if ``h`` starts with a valid frame header, else 0 (ADTS/AAC is 0)."""
    if len(h) < 4 or h[0] != 0xFF or (h[1] & 0xE0) != 0xE0:
        return 0
    version, layer = (h[1] >> 3) & 3, (h[1] >> 1) & 3
    bitrate, rate = h[2] >> 4, (h[2] >> 2) & 3
    if version == 1 or layer == 0 or bitrate == 0xF or rate == 3:  # reserved values: not a frame
        return 0
    return 4 - layer


def _sniff_bytes(h: bytes) -> str:
    """Container/codec from the first bytes of a stream (no ID3 handling); "unknown" otherwise."""
    if h[:4] in (b"RIFF", b"RF64", b"BW64") and h[8:12] == b"WAVE":
        return "wav"
    if h[:4] == b"fLaC":
        return "flac"
    if h[:4] == b"OggS":
        return "ogg"
    if h[:4] == b"FORM" and h[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if h[:4] == b"caff":
        return "caf"
    if h[:16] == _W64_RIFF:
        return "w64"
    if h[:4] == b".snd":
        return "au"
    if h[4:8] == b"ftyp":
        return "mp4"
    layer = _mpeg_layer(h)
    if layer:
        return "mp3" if layer == 3 else "mpeg"
    return "unknown"


def sniff_format(path: str | os.PathLike) -> str:
    """What the content of ``path`` is, from its magic bytes, whatever its name says.

    One of wav, flac, ogg, aiff, caf, w64, au, mp4, mp3, mpeg (MPEG layer I/II) or unknown. ID3v2
    tags (one or more, as MP3 files carry them) are skipped and the stream after them is sniffed;
    up to SNIFF_BYTES of zero padding or junk before the first MPEG frame is allowed there.
    Raises AudioError naming the file when it cannot be read.
    """
    try:
        with open(path, "rb") as f:
            pos, head = 0, f.read(16)
            tagged = False
            while head[:3] == b"ID3" and len(head) >= 10:  # ID3v2: 10-byte header, syncsafe size
                size = 0
                for b in head[6:10]:  # "syncsafe": 4 x 7 bits
                    size = (size << 7) | (b & 0x7F)
                pos += 10 + size + (10 if head[5] & 0x10 else 0)  # flag 0x10: a footer follows
                f.seek(pos)
                head, tagged = f.read(16), True
            fmt = _sniff_bytes(head)
            if fmt != "unknown" or not tagged:
                return fmt
            f.seek(pos)
            window = f.read(SNIFF_BYTES + 4)
    except OSError as exc:
        raise AudioError(f"{path}: cannot read the file to identify its format ({exc})") from exc
    for i in range(max(0, len(window) - 3)):
        if window[i] == 0xFF and _mpeg_layer(window[i:i + 4]):
            return "mp3" if _mpeg_layer(window[i:i + 4]) == 3 else "mpeg"
    return "unknown"


def extension_mismatch(path: str | os.PathLike, fmt: str) -> bool:
    """True when the sniffed ``fmt`` is a known format that ``path``'s extension does not promise.

    An unidentified content ("unknown") is not called a mismatch: whether it decodes decides.
    """
    return fmt != "unknown" and fmt not in EXTENSION_FORMATS.get(Path(path).suffix.lower(), ())


def clipped_fraction(x: np.ndarray, level: float) -> float:
    """Share of the samples of ``x`` (any shape, full scale 1.0) with ``|x| >= level``; 0 when empty."""
    if not x.size:
        return 0.0
    return float(np.count_nonzero(np.abs(x) >= level)) / float(x.size)


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
