"""Audio codecs: a small interface (the shape of audiocraft's CompressionModel) and a lazy registry.

A codec turns mono audio at its own rate into K parallel streams of integer codes and back:

- ``prepare(x [C, N], sr) -> [1, N']``: the one way any clip reaches a codec (mean downmix, then soxr
  resampling, via :mod:`ssmttm.audio`), whatever its rate or channel count;
- ``encode(audio [B, 1, N] float32) -> codes [B, K, T] int64`` with ``T = ceil(N / hop)``;
- ``decode(codes [B, kappa, T]) -> audio [B, 1, T * hop]`` from the first ``kappa <= K`` codebooks;
- ``codebook_tables() -> [K, cardinality, D]``: the quantizer's codebook vectors, where the
  two-stage refiner generates (optional; DAC has them);
- ``sample_rate``, ``hop_length``, ``frame_rate = sample_rate / hop_length``, ``n_codebooks`` (K),
  ``cardinality`` (codes per codebook).

The registry maps a config name (``tokens.codec``) to ``"module:function"``; the factory is imported
only when :func:`load_codec` runs, so building or listing the registry imports neither torch nor dac.
"""

from __future__ import annotations

import abc
import importlib
import math
import os

import numpy as np

from ssmttm.errors import SsmttmError

# config name -> "module:factory"; factory(weights_path, device) -> Codec
CODECS: dict[str, str] = {
    # descript-audio-codec's DAC (44.1 kHz release: 9 x 1024 codes, hop 512; demo: a tiny DAC).
    "dac": "ssmttm.codec.dac:load",
}


class CodecError(SsmttmError, RuntimeError):
    """A codec or weights file that cannot be used; the message names the file or the argument."""


class Codec(abc.ABC):
    """A neural audio codec over mono audio at ``sample_rate``; see the module docstring."""

    name: str = ""
    sample_rate: int
    hop_length: int
    n_codebooks: int
    cardinality: int
    weights_path: str = ""
    weights_sha256: str = ""
    device: str = "cpu"

    @property
    def frame_rate(self) -> float:
        """Code frames per second (DAC 44.1 kHz: 44100 / 512 = 86.13)."""
        return self.sample_rate / self.hop_length

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for ``n_samples`` samples: ``ceil(n / hop)`` (the last frame is zero-padded).

        DAC 44.1 kHz: 30 s = 1,323,000 samples -> 2584 frames (1,323,008 samples after padding).
        """
        return math.ceil(int(n_samples) / self.hop_length)

    def prepare(self, x: np.ndarray, sr: int) -> np.ndarray:
        """``x: [C, N]`` float at ``sr`` -> ``[1, N']`` float32 mono at the codec rate (mean, soxr)."""
        from ssmttm.audio import resample, to_channels

        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]
        return np.ascontiguousarray(resample(to_channels(x, 1), int(sr), self.sample_rate), dtype=np.float32)

    @abc.abstractmethod
    def encode(self, audio):
        """``audio: [B, 1, N]`` float32 tensor at ``sample_rate`` -> ``codes: [B, K, ceil(N/hop)]`` int64."""

    @abc.abstractmethod
    def decode(self, codes):
        """``codes: [B, kappa, T]`` int tensor, ``1 <= kappa <= K`` -> ``audio: [B, 1, T * hop]`` float32."""

    def codebook_tables(self):
        """The quantizer's codebook vectors ``[K, cardinality, codebook_dim]`` float32 tensor (CPU): the
        continuous latent space the two-stage refiner generates in. Codecs without one raise."""
        raise CodecError(f"codec {self.name} exposes no codebook tables (the refiner needs per-codebook latents)")

    def describe(self) -> dict:
        """The codec fields every token store and table records (meta.json)."""
        return {
            "codec": self.name,
            "sample_rate": int(self.sample_rate),
            "hop_length": int(self.hop_length),
            "frame_rate": float(self.frame_rate),
            "n_codebooks": int(self.n_codebooks),
            "cardinality": int(self.cardinality),
            "weights_sha256": self.weights_sha256,
        }


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; anything else is passed to torch."""
    import torch

    if device in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CodecError(f"--device {device}: CUDA is not available on this machine (use auto or cpu)")
    return device


def load_codec(name: str, weights_path: str | os.PathLike, device: str = "auto") -> Codec:
    """Build codec ``name`` from the registry with the weights at ``weights_path`` on ``device``."""
    if name not in CODECS:
        raise CodecError(f"unknown codec {name!r}; known: {', '.join(sorted(CODECS))}")
    module, func = CODECS[name].split(":")
    factory = getattr(importlib.import_module(module), func)
    return factory(weights_path, device)
