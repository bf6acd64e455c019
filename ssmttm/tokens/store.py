"""The token store: per shard, every clip's codec codes in one uint16 memory-mapped array + an index.

One folder per shard, ``results/tokens/<codec_weights_key>/<NN>/`` (nanoGPT's train.bin idea; DAC
codes < 1024 fit in uint16):

- ``codes.npy``: uint16 ``[K, total_frames]``, codebook-major, clips concatenated along time;
  read with ``np.load(mmap_mode="r", allow_pickle=False)``; a shard with no clips is ``[K, 0]``.
- ``index.parquet``: one row per clip, :data:`INDEX_COLUMNS`; parquet metadata
  ``ssmttm.token_store_version``. ``codes_sha256`` = sha256 of the clip's uint16 ``[K, length]``
  bytes (little-endian, C order): the determinism fingerprint.
- ``meta.json``: ``version, codec, weights, weights_sha256, sample_rate, frame_rate, n_codebooks,
  cardinality, n_clips, total_frames, codes_sha256`` (the last of codes.npy) plus what the writer adds.

:func:`write_shard` builds the whole folder under a temporary name and renames it into place, so
a reader never sees a half-written shard. Readers (:class:`TokenShard`, :class:`TokenStore`) map
the codes file and copy out one clip's slice at a time: a shard is never read whole into memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ssmttm import io
from ssmttm.constants import TOKEN_STORE_VERSION
from ssmttm.errors import SsmttmError

CODES_FILE, INDEX_FILE, META_FILE = "codes.npy", "index.parquet", "meta.json"
VERSION_KEY = b"ssmttm.token_store_version"
CODES_DTYPE = np.dtype("<u2")
# column -> pyarrow type name; caption_ids index the text store (primary caption first)
INDEX_COLUMNS = {
    "clip_id": "string", "track_id": "string", "shard": "string", "split": "string",
    "offset": "int64", "length": "int64", "licence": "string", "caption_ids": "list<int64>",
    "audio_sha256": "string", "codes_sha256": "string",
}
META_KEYS = ("version", "codec", "weights", "weights_sha256", "sample_rate", "frame_rate", "n_codebooks",
             "cardinality", "n_clips", "total_frames", "codes_sha256")


class TokenStoreError(SsmttmError, ValueError):
    """A token shard that cannot be read or written; the message names the file and the problem."""


def codes_sha256(codes: np.ndarray) -> str:
    """sha256 of ``codes: [K, T]`` as little-endian uint16 bytes in C order."""
    return hashlib.sha256(np.ascontiguousarray(codes, dtype=CODES_DTYPE).tobytes()).hexdigest()


def _arrow_schema():
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "list<int64>": pa.list_(pa.int64())}
    return pa.schema([(c, types[t]) for c, t in INDEX_COLUMNS.items()],
                     metadata={VERSION_KEY: str(TOKEN_STORE_VERSION).encode()})


def _as_codes(codes, n_codebooks: int | None, where: str) -> np.ndarray:
    a = np.asarray(codes)
    if a.ndim != 2:
        raise TokenStoreError(f"{where}: codes must be [K, T], got shape {a.shape}")
    if n_codebooks is not None and a.shape[0] != n_codebooks:
        raise TokenStoreError(f"{where}: {a.shape[0]} codebooks, the shard has {n_codebooks}")
    if a.size and (a.min() < 0 or a.max() > np.iinfo(CODES_DTYPE).max):
        raise TokenStoreError(f"{where}: codes outside the uint16 range")
    return np.ascontiguousarray(a, dtype=CODES_DTYPE)


def write_shard(
    out_dir: str | os.PathLike,
    clips: Iterable[tuple[dict, np.ndarray]],
    meta: dict,
    extra_files: dict[str, str] | None = None,
) -> dict:
    """Write one shard folder atomically; returns its meta.json content.

    ``clips``: ``(row, codes [K, T] uint16)`` pairs in store order; ``row`` holds the index columns
    except offset, length and codes_sha256, which are computed here. ``meta`` holds the codec fields
    (``codec, weights, weights_sha256, sample_rate, frame_rate, n_codebooks, cardinality``; extra keys
    are kept). ``extra_files``: name -> text, written into the same folder (e.g. ``rejected.tsv``).
    Clips stream through a spool file, so memory stays at one clip whatever the shard size.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    k = int(meta["n_codebooks"])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = io.temp_dir(out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp")  # umask permissions, not 0700
    try:
        rows, total = [], 0
        spool_path = tmp / "codes.spool"
        with open(spool_path, "wb") as spool:
            for row, codes in clips:
                c = _as_codes(codes, k, f"clip {row.get('clip_id')!r}")
                spool.write(c.tobytes())
                rows.append({**row, "offset": total, "length": int(c.shape[1]), "codes_sha256": codes_sha256(c)})
                total += int(c.shape[1])
        # codebook-major [K, total]: copy each clip's [K, T] block from the spool into its columns
        if total:
            arr = np.lib.format.open_memmap(tmp / CODES_FILE, mode="w+", dtype=CODES_DTYPE, shape=(k, total))
            spool_map = np.memmap(spool_path, dtype=CODES_DTYPE, mode="r")
            for r in rows:
                o, n = r["offset"], r["length"]
                arr[:, o:o + n] = spool_map[k * o:k * (o + n)].reshape(k, n)
            arr.flush()
            del arr, spool_map
        else:  # an empty memmap cannot be created; an empty .npy is the same format
            np.save(tmp / CODES_FILE, np.zeros((k, 0), dtype=CODES_DTYPE))
        spool_path.unlink()
        missing = sorted({c for r in rows for c in INDEX_COLUMNS if c not in r})
        if missing:
            raise TokenStoreError(f"{out_dir}: index rows lack column(s) {missing}")
        table = pa.Table.from_pylist([{c: r[c] for c in INDEX_COLUMNS} for r in rows], schema=_arrow_schema())
        pq.write_table(table, tmp / INDEX_FILE)
        full = {**meta, "version": TOKEN_STORE_VERSION, "n_clips": len(rows), "total_frames": total,
                "codes_sha256": io.sha256_file(tmp / CODES_FILE)}
        io.write_json(tmp / META_FILE, full)
        for name, text in (extra_files or {}).items():
            io.write_text(tmp / name, text)
        io.replace_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return full


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    """A shard's index.parquet, version-checked; raises TokenStoreError naming the file."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        pf = pq.ParquetFile(path)
        version = (pf.schema_arrow.metadata or {}).get(VERSION_KEY)
        df = pf.read().to_pandas()
    except FileNotFoundError as exc:
        raise TokenStoreError(f"{path}: token index not found") from exc
    except (OSError, ValueError) as exc:
        raise TokenStoreError(f"{path}: not a readable parquet file ({exc})") from exc
    if version is None:
        raise TokenStoreError(f"{path}: no {VERSION_KEY.decode()} in the parquet metadata (not a token index?)")
    if version.decode() != str(TOKEN_STORE_VERSION):
        raise TokenStoreError(f"{path}: token store version {version.decode()}, this code reads "
                              f"version {TOKEN_STORE_VERSION} (re-run the tokenize stage)")
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        raise TokenStoreError(f"{path}: missing column(s) {missing}")
    df["caption_ids"] = [list(map(int, v)) for v in df["caption_ids"]]
    return df


class TokenShard:
    """One shard folder, memory-mapped. ``codes(i, kappa)`` copies out clip ``i``'s ``[kappa, length]``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_path = self.path / META_FILE
        try:
            self.meta = io.read_json(meta_path)
        except FileNotFoundError as exc:
            raise TokenStoreError(f"{meta_path}: not found (not a token shard folder?)") from exc
        except json.JSONDecodeError as exc:
            raise TokenStoreError(f"{meta_path}: invalid JSON ({exc})") from exc
        if self.meta.get("version") != TOKEN_STORE_VERSION:
            raise TokenStoreError(f"{meta_path}: token store version {self.meta.get('version')!r}, this code "
                                  f"reads version {TOKEN_STORE_VERSION} (re-run the tokenize stage)")
        if missing := [k for k in META_KEYS if k not in self.meta]:
            raise TokenStoreError(f"{meta_path}: missing key(s) {missing}")
        self.index = read_index(self.path / INDEX_FILE)
        codes_path = self.path / CODES_FILE
        k, total = int(self.meta["n_codebooks"]), int(self.meta["total_frames"])
        try:
            # an empty array cannot be memory-mapped; it has no data to load either
            self._codes = np.load(codes_path, mmap_mode="r" if total else None, allow_pickle=False)
        except FileNotFoundError as exc:
            raise TokenStoreError(f"{codes_path}: not found") from exc
        except ValueError as exc:
            raise TokenStoreError(f"{codes_path}: not a plain .npy array ({exc})") from exc
        if self._codes.dtype != CODES_DTYPE or self._codes.shape != (k, total):
            raise TokenStoreError(f"{codes_path}: {self._codes.dtype} {self._codes.shape}, meta.json says "
                                  f"uint16 ({k}, {total})")
        if len(self.index) != int(self.meta["n_clips"]):
            raise TokenStoreError(f"{self.path}: index has {len(self.index)} rows, meta.json says {self.meta['n_clips']}")
        self._offset = self.index["offset"].to_numpy(np.int64)
        self._length = self.index["length"].to_numpy(np.int64)
        if len(self._offset) and int((self._offset + self._length).max()) > total:
            raise TokenStoreError(f"{self.path / INDEX_FILE}: clip spans beyond the {total} frames of {CODES_FILE}")

    @property
    def n_codebooks(self) -> int:
        return int(self.meta["n_codebooks"])

    def __len__(self) -> int:
        return len(self.index)

    def length(self, i: int) -> int:
        return int(self._length[i])

    def codes(self, i: int, kappa: int | None = None) -> np.ndarray:
        """Clip ``i``'s codes ``[kappa, length]`` uint16 (a copy of that slice only; default all K)."""
        k = self.n_codebooks if kappa is None else int(kappa)
        if not 1 <= k <= self.n_codebooks:
            raise TokenStoreError(f"{self.path}: kappa {kappa} outside 1..{self.n_codebooks}")
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.path}: clip {i} out of range ({len(self)} clips)")
        o, n = int(self._offset[i]), int(self._length[i])
        return np.array(self._codes[:k, o:o + n], dtype=CODES_DTYPE, copy=True)


class TokenStore:
    """Several shards of one codec/weights with a global clip index.

    ``shard_dirs``: the shard folders to open, exactly (a rule lists them as inputs; a store never looks
    around for more, so a shard left on disk by an earlier run with other settings is never read).
    ``.index`` is the concatenated index (its ``shard`` column names the shard, ``shard_dir`` the folder).
    """

    def __init__(self, shard_dirs: Iterable[str | os.PathLike]):
        if isinstance(shard_dirs, (str, os.PathLike)):
            raise TypeError("TokenStore takes a list of shard folders, not one root folder")
        self.shards = [TokenShard(Path(s)) for s in shard_dirs]
        if not self.shards:
            raise TokenStoreError("no token shards given")
        names = [str(s.path.resolve()) for s in self.shards]
        if len(set(names)) != len(names):
            raise TokenStoreError(f"token shards given twice: {[str(s.path) for s in self.shards]}")
        ref = self.shards[0].meta
        for s in self.shards[1:]:
            for key in ("codec", "weights_sha256", "n_codebooks", "sample_rate", "cardinality"):
                if s.meta.get(key) != ref.get(key):
                    raise TokenStoreError(f"{s.path}: {key} {s.meta.get(key)!r} differs from "
                                          f"{self.shards[0].path} ({ref.get(key)!r})")
        self.meta = {k: ref[k] for k in ("codec", "weights", "weights_sha256", "sample_rate", "frame_rate",
                                         "n_codebooks", "cardinality")}
        sizes = np.array([len(s) for s in self.shards], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(sizes)])
        frames = [s.index.assign(shard_dir=str(s.path)) for s in self.shards]
        self.index = pd.concat(frames, ignore_index=True)

    @property
    def dirs(self) -> list[Path]:
        return [s.path for s in self.shards]

    def __repr__(self) -> str:
        return f"TokenStore({[str(d) for d in self.dirs]})"

    @property
    def n_codebooks(self) -> int:
        return int(self.meta["n_codebooks"])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, i: int) -> tuple[TokenShard, int]:
        """(shard, local index) of global clip ``i``."""
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"{self!r}: clip {i} out of range ({len(self)} clips)")
        s = int(np.searchsorted(self._starts, i, side="right") - 1)
        return self.shards[s], i - int(self._starts[s])

    def length(self, i: int) -> int:
        shard, j = self.locate(i)
        return shard.length(j)

    def codes(self, i: int, kappa: int | None = None) -> np.ndarray:
        """Global clip ``i``'s codes ``[kappa, length]`` uint16."""
        shard, j = self.locate(i)
        return shard.codes(j, kappa)
