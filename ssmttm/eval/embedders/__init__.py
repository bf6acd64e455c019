"""Metric models behind one small interface (see :mod:`ssmttm.eval.embedders.base`)."""

from ssmttm.eval.embedders.base import EMBEDDERS, Embedder, TextAudioEmbedder, build_embedder

__all__ = ["EMBEDDERS", "Embedder", "TextAudioEmbedder", "build_embedder"]
