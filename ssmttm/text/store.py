"""The text store: caption embeddings computed once, read by memory map during training.

One folder per encoder, ``results/text/<encoder_weights_key>/`` (written by ssmttm.text.embed):

- ``embeddings.npy``: float16 [total_tokens, D], every caption's real tokens concatenated
  (padding is never stored);
- ``index.parquet``: caption_id (int64; id 0 is ALWAYS the empty prompt "" used for classifier-free
  guidance), text, offset, length (real tokens incl. T5's </s>); parquet metadata
  ``ssmttm.text_store_version``;
- ``clips.parquet``: clip_id -> caption_ids (list<int64>, primary caption first);
- ``meta.json``: {version, encoder, weights_sha256, d_model, max_length, n_captions, n_unique,
  encoder_forwards, dtype}.

``ssmttm prompt-embed`` (ssmttm.generate.prompt_embed) writes the same layout for a prompt set:
prompt ids in clips.parquet's clip_id column, and the prompt set's name and file sha256 in meta.json.

:class:`TextStore` opens the memory map lazily and drops it when pickled, so a DataLoader worker
opens its own map and no file handle crosses a process boundary. Padding masks are built by
:func:`pad` from the stored lengths.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ssmttm import io
from ssmttm.constants import TEXT_STORE_VERSION
from ssmttm.errors import SsmttmError

EMBEDDINGS = "embeddings.npy"
INDEX = "index.parquet"
CLIPS = "clips.parquet"
META = "meta.json"
VERSION_KEY = b"ssmttm.text_store_version"
EMPTY_ID = 0  # caption id of the empty prompt "" (classifier-free guidance)


class TextStoreError(SsmttmError, ValueError):
    """A text store that cannot be read; the message names the folder and the problem."""


def _read_parquet(path: Path):
    import pyarrow.parquet as pq

    if not path.is_file():
        raise TextStoreError(f"{path}: missing (not a text store written by `ssmttm text-embed`?)")
    pf = pq.ParquetFile(path)
    return pf.read().to_pandas(), (pf.schema_arrow.metadata or {})


class TextStore:
    """Read-only access to one text store folder.

    ``embedding(caption_id)`` -> float16 [length, D] (a view into the memory map),
    ``caption_ids(clip_id)`` -> list[int] (primary first), ``text(caption_id)`` -> str,
    ``meta`` (dict), ``index`` (DataFrame sorted by caption_id), ``len(store)`` = number of captions.
    """

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        if not (self.dir / META).is_file():
            raise TextStoreError(f"{self.dir}: no {META} (not a text store written by `ssmttm text-embed`?)")
        self.meta = io.read_json(self.dir / META)
        if self.meta.get("version") != TEXT_STORE_VERSION:
            raise TextStoreError(
                f"{self.dir}: text store version {self.meta.get('version')}, this code reads {TEXT_STORE_VERSION}"
            )
        index, meta = _read_parquet(self.dir / INDEX)
        version = meta.get(VERSION_KEY, b"").decode()
        if version != str(TEXT_STORE_VERSION):
            raise TextStoreError(f"{self.dir / INDEX}: {VERSION_KEY.decode()} is {version!r}, expected {TEXT_STORE_VERSION}")
        index = index.sort_values("caption_id", kind="stable").reset_index(drop=True)
        if not np.array_equal(index["caption_id"].to_numpy(), np.arange(len(index))):
            raise TextStoreError(f"{self.dir / INDEX}: caption ids are not 0..{len(index) - 1}")
        if len(index) == 0 or index.at[EMPTY_ID, "text"] != "":
            raise TextStoreError(f"{self.dir / INDEX}: caption id 0 must be the empty prompt \"\"")
        self.index = index
        self._offset = index["offset"].to_numpy(np.int64)
        self._length = index["length"].to_numpy(np.int64)
        clips, _ = _read_parquet(self.dir / CLIPS)
        self._clips = {c: [int(x) for x in ids] for c, ids in zip(clips["clip_id"], clips["caption_ids"])}
        self._emb = None  # opened on first use, per process

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_emb"] = None  # never pickle the memory map (it would pickle its data)
        return state

    @property
    def d_model(self) -> int:
        return int(self.meta["d_model"])

    @property
    def clip_ids(self) -> list[str]:
        return list(self._clips)

    def _embeddings(self) -> np.ndarray:
        if self._emb is None:
            self._emb = np.load(self.dir / EMBEDDINGS, mmap_mode="r", allow_pickle=False)
        return self._emb

    def embedding(self, caption_id: int) -> np.ndarray:
        """float16 [length, D] states of caption ``caption_id`` (read-only memory-map view)."""
        i = int(caption_id)
        if not 0 <= i < len(self._offset):
            raise KeyError(f"{self.dir}: no caption id {i} (store holds 0..{len(self._offset) - 1})")
        o = self._offset[i]
        return self._embeddings()[o:o + self._length[i]]

    def length(self, caption_id: int) -> int:
        return int(self._length[int(caption_id)])

    def text(self, caption_id: int) -> str:
        return str(self.index.at[int(caption_id), "text"])

    def caption_ids(self, clip_id: str) -> list[int]:
        """Caption ids of ``clip_id``, primary caption first."""
        try:
            return list(self._clips[clip_id])
        except KeyError:
            raise KeyError(f"{self.dir / CLIPS}: no clip {clip_id!r}") from None


def _writable(a) -> np.ndarray:
    a = np.asarray(a)
    return a if a.flags.writeable else np.array(a)  # memory-map views are read-only


def pad(arrays, max_length: int | None = None):
    """Stack variable-length caption states into one padded batch.

    arrays: B arrays (numpy or torch) [L_i, D]. ``max_length``: pad (and, if longer, truncate) every
    caption to exactly this many tokens; None = the longest L_i.
    Returns (x [B, Lmax, D] float32 tensor, zeros at padding; mask [B, Lmax] bool, True = real token).
    """
    import torch

    arrays = list(arrays)
    if not arrays:
        raise ValueError("pad: empty list of caption embeddings")
    ts = [a if isinstance(a, torch.Tensor) else torch.from_numpy(_writable(a)) for a in arrays]
    D = int(ts[0].shape[-1])
    for t in ts:
        if t.ndim != 2 or int(t.shape[1]) != D:
            raise ValueError(f"pad: expected [L, {D}] arrays, got shape {tuple(t.shape)}")
    L = max(int(t.shape[0]) for t in ts) if max_length is None else int(max_length)
    x = torch.zeros((len(ts), L, D), dtype=torch.float32)
    mask = torch.zeros((len(ts), L), dtype=torch.bool)
    for i, t in enumerate(ts):
        n = min(int(t.shape[0]), L)
        x[i, :n] = t[:n].to(torch.float32)
        mask[i, :n] = True
    return x, mask
