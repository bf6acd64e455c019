"""Per-file embedding cache: each audio file is embedded once per (file content, checkpoint, protocol).

Evaluating many systems against one reference set, at several training steps, would otherwise embed
the same reference clips again and again. The cache key is the sha256 of

- the audio file's bytes (so a regenerated clip with the same name is a miss),
- the embedder's checkpoint sha256 and its full :meth:`Embedder.protocol` (model, checkpoint file,
  sample rate, window, hop), and
- :data:`PREPROCESS` (how audio reaches the model: downmix + resampler), the cache format version,
  and the protocol duration ``max_seconds`` (every clip is cut to the reference clips' duration before
  it is embedded, so a 10.008 s generated clip and a 10.000 s reference get the same windows),

stored as ``<cache_dir>/<embedder.name>/<key[:2]>/<key>.npy`` (plain ``np.save``; read back with
``allow_pickle=False``), written atomically so a killed job never leaves a half file behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ssmttm import audio, io

log = logging.getLogger(__name__)

CACHE_VERSION = 1
# The audio path into every embedder: mean of the channels to mono, then soxr "HQ" to the model's rate
# (ssmttm.audio.load). Changing it must change every key.
PREPROCESS = "mono=mean;resample=soxr-HQ;dtype=float32"


def protocol_key(embedder, max_seconds: float | None = None) -> str:
    """sha256 over the embedder's protocol, checkpoint sha256, preprocessing, cut and cache version."""
    payload = {
        "version": CACHE_VERSION,
        "max_seconds": None if max_seconds is None else float(max_seconds),
        "class": f"{type(embedder).__module__}.{type(embedder).__qualname__}",
        "protocol": embedder.protocol(),
        "checkpoint_sha256": embedder.checkpoint_sha256,
        "preprocess": PREPROCESS,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def cache_path(cache_dir: str | os.PathLike, embedder, file_sha256: str, proto: str | None = None) -> Path:
    """Where the embedding of a file with content hash ``file_sha256`` lives for ``embedder``."""
    proto = proto or protocol_key(embedder)
    key = hashlib.sha256(f"{file_sha256}:{proto}".encode("ascii")).hexdigest()
    return Path(cache_dir) / embedder.name / key[:2] / f"{key}.npy"


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Read ``path`` (any rate, any channel count) as ``[N] float32`` mono at ``sample_rate``.

    Raises ssmttm.audio.AudioError naming the file for undecodable, empty or non-finite audio.
    """
    x = audio.load(path, sample_rate=int(sample_rate), channels=1)[0]
    if not np.all(np.isfinite(x)):
        raise audio.AudioError(f"{path}: non-finite samples")
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_embedding(e, path) -> np.ndarray:
    e = np.asarray(e)
    if e.ndim != 2 or e.shape[0] < 1 or e.shape[1] < 1:
        raise ValueError(f"{path}: embedder returned shape {e.shape}, expected [frames, D]")
    if not np.all(np.isfinite(e)):
        raise ValueError(f"{path}: embedder returned NaN or inf")
    return np.ascontiguousarray(e, dtype=np.float32)


def _read_cached(p: Path) -> np.ndarray | None:
    try:
        e = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as exc:  # truncated / foreign file: recompute and overwrite
        log.warning("embedding cache %s unreadable (%s); recomputing", p, exc)
        return None
    if e.ndim != 2 or not np.all(np.isfinite(e)):
        log.warning("embedding cache %s holds shape %s / non-finite values; recomputing", p, e.shape)
        return None
    return e


def cut(x: np.ndarray, sample_rate: int, max_seconds: float | None) -> np.ndarray:
    """The first ``round(max_seconds * sample_rate)`` samples of ``x`` [N] (all of it when None or shorter)."""
    if max_seconds is None:
        return x
    return x[: int(round(float(max_seconds) * int(sample_rate)))]


def embed_file(embedder, path: str | os.PathLike, cache_dir: str | os.PathLike,
               proto: str | None = None, max_seconds: float | None = None) -> tuple[np.ndarray, bool]:
    """Embedding ``[frames, D] float32`` of one file (cut to ``max_seconds``) and whether it came from
    the cache; ``proto`` must be :func:`protocol_key` of the same ``max_seconds``.

    Raises ssmttm.audio.AudioError (unreadable audio), OSError (missing file) or ValueError (bad
    embedder output), each naming the file.
    """
    try:
        sha = io.sha256_file(path)
    except OSError as exc:
        raise audio.AudioError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    p = cache_path(cache_dir, embedder, sha, proto or protocol_key(embedder, max_seconds))
    if p.is_file() and (e := _read_cached(p)) is not None:
        return e, True
    x = cut(load_audio(path, embedder.sample_rate), embedder.sample_rate, max_seconds)
    e = _check_embedding(embedder.embed(x), path)
    with io.atomic_open(p, "wb") as f:
        np.save(f, e, allow_pickle=False)
    return e, False


def embed_files(
    embedder,
    paths: Sequence[str | os.PathLike],
    cache_dir: str | os.PathLike,
    max_seconds: float | None = None,
) -> tuple[list[np.ndarray | None], list[str]]:
    """Embed every file in ``paths`` (each cut to ``max_seconds``) through the cache: ``(embeddings, reasons)``.

    ``embeddings[i]`` is ``[frames, D] float32`` or None when file i could not be used; ``reasons``
    lists one message per such file, naming it (unreadable, empty, non-finite, embedder failure).
    The other files go on. Hits and misses are logged once at the end.
    """
    proto = protocol_key(embedder, max_seconds)
    out: list[np.ndarray | None] = []
    reasons: list[str] = []
    hits = 0
    for path in paths:
        try:
            e, hit = embed_file(embedder, path, cache_dir, proto, max_seconds)
        except (audio.AudioError, ValueError) as exc:
            out.append(None)
            msg = str(exc)
            reasons.append(msg if str(path) in msg else f"{path}: {msg}")
            continue
        except Exception as exc:  # a model failing on one clip (too short, odd length) skips that clip
            out.append(None)
            reasons.append(f"{path}: {embedder.name} failed ({type(exc).__name__}: {exc})")
            continue
        hits += hit
        out.append(e)
    log.info("%s embeddings: %d files, %d cached, %d computed, %d skipped", embedder.name, len(out), hits,
             len(out) - hits - len(reasons), len(reasons))
    for r in reasons:
        log.warning("skipped: %s", r)
    return out, reasons


def uncached(embedder, paths: Sequence[str | os.PathLike], cache_dir: str | os.PathLike,
             max_seconds: float | None = None) -> list[str]:
    """The files of ``paths`` whose embedding (cut to ``max_seconds``) is not in the cache yet (an unreadable
    file counts as uncached: embedding it is what names the problem). Needs only the embedder's protocol,
    not its model: a job whose files are all cached never loads the model (:meth:`Embedder.load`)."""
    proto = protocol_key(embedder, max_seconds)
    out = []
    for path in paths:
        try:
            hit = cache_path(cache_dir, embedder, io.sha256_file(path), proto).is_file()
        except OSError:
            hit = False
        if not hit:
            out.append(str(path))
    return out


def text_cache_path(cache_dir: str | os.PathLike, embedder, text: str, audio_proto: str, text_proto: dict) -> Path:
    """Where the text embedding of ``text`` lives: keyed by the embedder's protocol and checkpoint
    (``audio_proto``, :func:`protocol_key` without a cut), its :meth:`text_protocol` (the text tower's
    files) and the text itself."""
    payload = {"audio": audio_proto, "text": text_proto, "prompt": text}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()
    return Path(cache_dir) / f"{embedder.name}-text" / key[:2] / f"{key}.npy"


def embed_texts(embedder, texts: Sequence[str], cache_dir: str | os.PathLike) -> np.ndarray:
    """``[B, D] float32`` text embeddings of ``texts`` through the cache
    (``<cache_dir>/<embedder.name>-text/<key[:2]>/<key>.npy``); the model is loaded only for texts not
    cached yet, embedded in one call."""
    texts = list(texts)
    if not texts:
        return embedder.embed_text([])
    text_proto = embedder.text_protocol()  # hashes the text tower's files once for all texts
    audio_proto = protocol_key(embedder)

    def path_of(text: str) -> Path:
        return text_cache_path(cache_dir, embedder, text, audio_proto, text_proto)

    found: dict[int, np.ndarray] = {}
    for i, t in enumerate(texts):
        p = path_of(t)
        if p.is_file() and (e := _read_cached(p)) is not None and e.shape[0] == 1:
            found[i] = e[0]
    todo = sorted({texts[i] for i in range(len(texts)) if i not in found})
    if todo:
        new = np.asarray(embedder.embed_text(todo), dtype=np.float32)
        if new.ndim != 2 or new.shape[0] != len(todo) or not np.all(np.isfinite(new)):
            raise ValueError(f"{embedder.name}: embed_text returned shape {new.shape} or non-finite values "
                             f"for {len(todo)} texts")
        by_text = dict(zip(todo, new))
        for text, e in by_text.items():
            with io.atomic_open(path_of(text), "wb") as f:
                np.save(f, e[None], allow_pickle=False)
        for i, t in enumerate(texts):
            found.setdefault(i, by_text.get(t))
    log.info("%s text embeddings: %d texts, %d computed", embedder.name, len(texts), len(todo))
    return np.stack([found[i] for i in range(len(texts))]).astype(np.float32)
