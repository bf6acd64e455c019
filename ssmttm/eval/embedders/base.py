"""The metric-model interface and its lazy registry.

An :class:`Embedder` turns mono audio at its own sample rate into frame (or window, or clip)
vectors; the caller reads, downmixes and resamples (ssmttm.audio), caches per file, and does the
metric math (ssmttm.eval.stats). Every embedder reports its protocol (model, checkpoint file +
sha256, sample rate, window, hop) so each score row can carry it as columns (docs/reference.md §3:
the CLAP checkpoint alone changes scores ~2.4x).

The registry maps names to "module:Class" strings: listing it imports nothing heavy and downloads
nothing (fadtk's eager registry fetched every model; STYLE.md). Weights are always a local path that
the `weights` rule has already fetched and checksummed.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ssmttm.errors import SsmttmError

EMBEDDERS: dict[str, str] = {
    "vggish": "ssmttm.eval.embedders.vggish:VGGishEmbedder",
    "passt": "ssmttm.eval.embedders.passt:PaSSTEmbedder",
    "clap": "ssmttm.eval.embedders.clap:CLAPEmbedder",
    "logmel": "ssmttm.eval.embedders.logmel:LogMelEmbedder",
}


class EmbedderError(SsmttmError, RuntimeError):
    """A metric model that cannot be built or run; the message names the model and the file."""


class Embedder(ABC):
    """audio [N] float32 mono at ``sample_rate`` -> vectors [frames, D] float32."""

    name: str = ""
    sample_rate: int = 16000
    window_s: float | None = None
    hop_s: float | None = None
    # a network read from a checkpoint: its constructor takes ``lazy`` (default False: load now)
    has_model: bool = False

    def __init__(self, weights: str | os.PathLike | None, device: str = "cpu", **aux):
        self.weights = Path(weights) if weights is not None else None
        self.device = device
        self.aux = {k: v for k, v in aux.items() if v is not None}
        self._sha: str | None = None
        self._loaded = False

    def load(self) -> "Embedder":
        """Build the network and read the checkpoint, once (:meth:`_load`). A lazy embedder (``lazy=True``)
        has its protocol and checkpoint hash, which is all the embedding cache needs to find a file's
        vectors, without importing its model's packages; an evaluate job whose files are all cached
        never calls this (its model imports take longer than its arithmetic)."""
        if not self._loaded:
            self._load()
            self._loaded = True
        return self

    @property
    def loaded(self) -> bool:
        return self._loaded

    def _load(self) -> None:
        """Build the model (subclasses with a network); raise EmbedderError naming the file."""

    @abstractmethod
    def embed(self, audio: np.ndarray) -> np.ndarray:
        """audio: [N] float32 mono at ``self.sample_rate`` -> [frames, D] float32 (loads the model first)."""

    @property
    def checkpoint_file(self) -> str | None:
        return self.weights.name if self.weights is not None else None

    @property
    def checkpoint_sha256(self) -> str | None:
        """sha256 of the checkpoint file (or of a folder's files, ssmttm.io.sha256_tree)."""
        if self.weights is None:
            return None
        if self._sha is None:
            from ssmttm import io

            self._sha = io.sha256_tree(self.weights) if self.weights.is_dir() else io.sha256_file(self.weights)
        return self._sha

    def protocol(self) -> dict:
        """Protocol columns of every score row computed with this model."""
        return {
            "model": self.name,
            "checkpoint": self.checkpoint_file,
            "checkpoint_sha256": self.checkpoint_sha256,
            "sample_rate": int(self.sample_rate),
            "window_s": self.window_s,
            "hop_s": self.hop_s,
        }


class TextAudioEmbedder(Embedder):
    """An embedder with a text tower in the same space (CLAP)."""

    @abstractmethod
    def embed_text(self, texts: list[str]) -> np.ndarray:
        """texts -> [B, D] float32, L2-normalised."""


def build_embedder(name: str, weights: str | os.PathLike | None, device: str = "cpu", lazy: bool = False,
                   **aux) -> Embedder:
    """Instantiate registry entry ``name`` (imports its module only now); ``lazy``: checked and hashed but
    not loaded until :meth:`Embedder.load` or the first :meth:`Embedder.embed`."""
    if name not in EMBEDDERS:
        raise EmbedderError(f"unknown metric model {name!r}; known: {', '.join(EMBEDDERS)}")
    module, cls = EMBEDDERS[name].split(":")
    cls = getattr(importlib.import_module(module), cls)
    embedder = cls(weights, device=device, lazy=True, **aux) if cls.has_model else cls(weights, device=device, **aux)
    return embedder if lazy else embedder.load()
