"""The training Dataset: stored DAC codes + stored caption states, delay pattern applied here only.

Training never runs the codec or the text encoder (both ran once, ahead of it): a
:class:`TokenDataset` item is read from the token store (``ssmttm.tokens.store.TokenStore``, uint16
memory maps, one clip's slice at a time) and the text store (``ssmttm.text.store.TextStore``,
float16 memory map), then

- optionally cropped to ``max_frames`` frames at a random start (the paper trains on 30 s =
  2584-frame clips, so the full clip is the default);
- cut to the first ``kappa`` codebooks and passed through :func:`ssmttm.pattern.build`, the one
  place in the package the delay pattern is applied (codebook k shifted right by k + 1 steps,
  SPECIAL_TOKEN as BOS / filler, docs/reference.md §1);
- paired with one of the clip's captions: ``caption="random"`` picks uniformly among the clip's
  distinct captions, ``"primary"`` takes the first.

Randomness is a pure function of (seed, epoch, item index): :meth:`TokenDataset.set_epoch` changes
the draw, and the same (seed, epoch, index) always gives the same crop and caption, in any worker.
Memory maps are opened lazily, once per process, and never pickled, so the dataset works with
``DataLoader(num_workers > 0)`` under fork and spawn alike.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ssmttm import pattern
from ssmttm.constants import SPECIAL_TOKEN
from ssmttm.errors import SsmttmError

CAPTION_MODES = ("random", "primary")

class TokenDatasetError(SsmttmError, ValueError):
    """Token and text stores that cannot be paired, or bad dataset arguments; names what is wrong."""


class TokenDataset:
    """Clips of one split across token shards, as LM training items (a map-style torch dataset:
    ``__len__`` + ``__getitem__``; not a subclass, so importing this module does not import torch).

    ``__getitem__(i)`` -> dict:
      codes       int64 [kappa, T + kappa]  delayed codes (T = clip frames, or max_frames if cropped);
                                            with ``delay=False`` the aligned codes [kappa, T] (the refiner)
      codes_mask  bool  [kappa, T + kappa]  True where a real code sits (pattern.valid_mask)
      text        float16 [L, D]            stored encoder states of the chosen caption
      clip_id     str
      caption_id  int
    """

    def __init__(
        self,
        token_shards: list[str | os.PathLike],
        text_dir: str | os.PathLike,
        kappa: int,
        split: str = "train",
        max_frames: int | None = None,
        caption: str = "random",
        seed: int = 0,
        clips: list[str] | None = None,
        delay: bool = True,
    ):
        """``token_shards``: the shard folders to read (exactly these). ``clips``: the clip ids of ``split`` to
        use, normally the manifest's; every one must be in the given shards (or in a shard's ``rejected.tsv``,
        i.e. the codec could not encode it) and in ``split`` there; None: every clip the shards hold in
        ``split``."""
        from ssmttm.text.store import TextStore
        from ssmttm.tokens.store import TokenStore

        if caption not in CAPTION_MODES:
            raise TokenDatasetError(f"caption: {caption!r} is not one of {list(CAPTION_MODES)}")
        if max_frames is not None and max_frames < 1:
            raise TokenDatasetError(f"max_frames: must be >= 1 or None, got {max_frames}")
        self.text_dir = Path(text_dir)
        store = TokenStore(token_shards)
        self.shard_dirs = [str(d) for d in store.dirs]  # frozen: workers reopen exactly these
        K = store.n_codebooks
        if not 1 <= int(kappa) <= K:
            raise TokenDatasetError(
                f"kappa {kappa} is outside 1..{K}: the token store {store!r} holds {K} codebooks "
                f"(codec {store.meta.get('codec')!r}, weights {store.meta.get('weights')!r})"
            )
        self.kappa, self.split, self.max_frames, self.caption, self.seed = int(kappa), split, max_frames, caption, seed
        self.delay = bool(delay)
        self.epoch = 0
        index = store.index
        if clips is None:
            self._rows = np.flatnonzero((index["split"] == split).to_numpy())
            self.untokenized: list[str] = []
        else:
            self._rows, self.untokenized = _select_clips(store, split, clips)
        if not len(self._rows):
            raise TokenDatasetError(f"{store!r}: no clips in split {split!r} "
                                    f"(splits present: {sorted(set(index['split']))})")
        sel = index.iloc[self._rows]
        self.clip_ids = [str(c) for c in sel["clip_id"]]
        self.track_ids = sorted({str(t) for t in sel["track_id"]})
        self.lengths = sel["length"].to_numpy(np.int64)
        self.text = TextStore(self.text_dir)  # opens its memory map lazily; pickle-safe
        self.captions = self._caption_ids(sel)
        self._store = None  # TokenStore memory maps, opened per process on first use
        self._pid = None

    def _caption_ids(self, sel) -> list[list[int]]:
        """Caption ids per clip: the token index's (copied from the text store by the tokenize stage),
        checked against the text store given here so a stale pairing fails loudly."""
        out, n = [], len(self.text)
        for clip_id, ids in zip(self.clip_ids, sel["caption_ids"]):
            ids = [int(i) for i in ids]
            try:
                text_ids = self.text.caption_ids(clip_id)
            except KeyError:
                text_ids = None
            if not ids:
                ids = text_ids or []
            if not ids:
                raise TokenDatasetError(f"clip {clip_id}: no caption ids in the token shards or {self.text_dir}")
            if (text_ids is not None and ids != text_ids) or max(ids) >= n:
                raise TokenDatasetError(
                    f"clip {clip_id}: caption ids {ids} in the token store do not match the text "
                    f"store {self.text_dir} ({text_ids}); re-run tokenize after text-embed"
                )
            out.append(ids)
        return out

    # --- process-local state ---------------------------------------------------------------------
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_store"], state["_pid"] = None, None  # never pickle memory maps or open files
        return state

    def _tokens(self):
        if self._store is None or self._pid != os.getpid():
            from ssmttm.tokens.store import TokenStore

            self._store, self._pid = TokenStore(self.shard_dirs), os.getpid()
        return self._store

    # --- sampling --------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Change the crop/caption draw; call before each epoch (in the main process, before iterating)."""
        self.epoch = int(epoch)

    def _rng(self, i: int, stream: int) -> np.random.Generator:
        # separate streams, so cropping on/off never changes which caption an item gets
        return np.random.default_rng([int(self.seed), self.epoch, int(i), stream])

    def crop(self, i: int) -> tuple[int, int]:
        """(first frame, number of frames) of item ``i`` for the current epoch."""
        T = int(self.lengths[i])
        if self.max_frames is None or T <= self.max_frames:
            return 0, T
        return int(self._rng(i, 1).integers(0, T - self.max_frames + 1)), int(self.max_frames)

    def caption_id(self, i: int) -> int:
        """Caption id item ``i`` uses in the current epoch."""
        ids = self.captions[i]
        if self.caption == "primary" or len(ids) == 1:
            return ids[0]
        return ids[int(self._rng(i, 0).integers(0, len(ids)))]

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int) -> dict:
        import torch

        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} out of range ({len(self)} clips in split {self.split!r})")
        i = int(i) % len(self)
        start, n = self.crop(i)
        codes = self._tokens().codes(int(self._rows[i]), self.kappa)[:, start:start + n]  # uint16 [kappa, n]
        seq = torch.from_numpy(codes.astype(np.int64))
        if self.delay:
            seq = pattern.build(seq)
            mask = pattern.valid_mask(self.kappa, n, like=seq)
        else:
            mask = torch.ones(seq.shape, dtype=torch.bool)
        cid = self.caption_id(i)
        return {
            "codes": seq,
            "codes_mask": mask,
            "text": torch.from_numpy(np.array(self.text.embedding(cid))),
            "clip_id": self.clip_ids[i],
            "caption_id": cid,
        }


def collate(batch: list[dict]) -> dict:
    """Pad a list of items into a batch.

    Returns codes int64 [B, kappa, Smax] (padded with SPECIAL_TOKEN), codes_mask bool [B, kappa, Smax]
    (False at padding), lengths int64 [B] (delayed lengths T + kappa), text float32 [B, Lmax, D] and
    text_mask bool [B, Lmax] (ssmttm.text.store.pad; True = real token), clip_ids list[str],
    caption_ids int64 [B].
    """
    import torch

    from ssmttm.text.store import pad

    if not batch:
        raise ValueError("collate: empty batch")
    kappa = int(batch[0]["codes"].shape[0])
    S = max(int(b["codes"].shape[1]) for b in batch)
    codes = torch.full((len(batch), kappa, S), SPECIAL_TOKEN, dtype=torch.int64)
    mask = torch.zeros((len(batch), kappa, S), dtype=torch.bool)
    for j, b in enumerate(batch):
        n = int(b["codes"].shape[1])
        codes[j, :, :n] = b["codes"]
        mask[j, :, :n] = b["codes_mask"]
    text, text_mask = pad([b["text"] for b in batch])
    return {
        "codes": codes,
        "codes_mask": mask,
        "lengths": torch.tensor([int(b["codes"].shape[1]) for b in batch], dtype=torch.int64),
        "text": text,
        "text_mask": text_mask,
        "clip_ids": [b["clip_id"] for b in batch],
        "caption_ids": torch.tensor([int(b["caption_id"]) for b in batch], dtype=torch.int64),
    }


def _select_clips(store, split: str, clips) -> tuple[np.ndarray, list[str]]:
    """Rows of ``store.index`` holding exactly ``clips`` (in the given order), and the clips the codec
    rejected (listed in their shard's rejected.tsv). A clip in neither place, or stored under another
    split, means the token shards are not the ones made from this manifest: an error naming it."""
    import pandas as pd

    clips = [str(c) for c in clips]
    if len(set(clips)) != len(clips):
        raise TokenDatasetError(f"split {split!r}: clip ids given twice")
    index = store.index
    row_of = {str(c): i for i, c in enumerate(index["clip_id"])}
    rejected: set[str] = set()
    for d in store.dirs:
        path = Path(d) / "rejected.tsv"
        if path.is_file() and path.stat().st_size:
            rejected |= set(pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)["clip_id"])
    rows, untokenized, absent, wrong = [], [], [], []
    for c in clips:
        i = row_of.get(c)
        if i is None:
            (untokenized if c in rejected else absent).append(c)
        elif index["split"].iat[i] != split:
            wrong.append(f"{c} ({index['split'].iat[i]})")
        else:
            rows.append(i)
    if absent:
        raise TokenDatasetError(
            f"split {split!r}: {len(absent)} clip(s) of the manifest are in none of the token shards "
            f"{[str(d) for d in store.dirs]}, e.g. {absent[:3]}; re-run tokenize for this manifest")
    if wrong:
        raise TokenDatasetError(f"split {split!r}: the token shards store clip(s) under another split, e.g. "
                                f"{wrong[:3]}; re-run tokenize for this manifest")
    return np.asarray(rows, dtype=np.int64), untokenized
