"""Token store: write -> read round trip, memory mapping, versions, empty shards, atomic replacement."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ssmttm.constants import TOKEN_STORE_VERSION
from ssmttm.io import sha256_file
from ssmttm.tokens.store import (CODES_FILE, INDEX_FILE, META_FILE, TokenShard, TokenStore, TokenStoreError,
                                 codes_sha256, write_shard)

K = 4
META = {"codec": "dac", "weights": "dac_tiny", "weights_sha256": "ab" * 32, "sample_rate": 44100,
        "frame_rate": 44100 / 512, "n_codebooks": K, "cardinality": 1024}


def clips(n, seed=0, shard="00"):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = int(rng.integers(1, 40))
        row = {"clip_id": f"{shard}_c{i}", "track_id": f"track_{i}", "shard": shard, "split": "train",
               "licence": "by", "caption_ids": [2 * i + 1, 2 * i + 2], "audio_sha256": f"{i:064x}"}
        out.append((row, rng.integers(0, 1024, size=(K, t)).astype(np.uint16)))
    return out


def test_round_trip_and_format(tmp_path):
    data = clips(5)
    meta = write_shard(tmp_path / "00", iter(data), META, extra_files={"rejected.tsv": "clip_id\treason\n"})
    shard = TokenShard(tmp_path / "00")
    assert len(shard) == 5 and (tmp_path / "00" / "rejected.tsv").is_file()
    total = sum(c.shape[1] for _, c in data)
    assert meta["total_frames"] == total and meta["n_clips"] == 5 and meta["version"] == TOKEN_STORE_VERSION
    assert meta["codes_sha256"] == sha256_file(tmp_path / "00" / CODES_FILE)
    raw = np.load(tmp_path / "00" / CODES_FILE, allow_pickle=False)
    assert raw.dtype == np.uint16 and raw.shape == (K, total)
    offset = 0
    for i, (row, c) in enumerate(data):
        r = shard.index.iloc[i]
        assert r["clip_id"] == row["clip_id"] and r["offset"] == offset and r["length"] == c.shape[1]
        assert list(r["caption_ids"]) == row["caption_ids"] and r["codes_sha256"] == codes_sha256(c)
        np.testing.assert_array_equal(shard.codes(i), c)
        np.testing.assert_array_equal(shard.codes(i, kappa=2), c[:2])
        np.testing.assert_array_equal(raw[:, offset:offset + c.shape[1]], c)  # codebook-major, concatenated
        offset += c.shape[1]
    schema = pq.read_schema(tmp_path / "00" / INDEX_FILE)
    assert schema.metadata[b"ssmttm.token_store_version"] == str(TOKEN_STORE_VERSION).encode()
    import pyarrow as pa

    assert pa.types.is_list(schema.field("caption_ids").type) and schema.field("caption_ids").type.value_type == pa.int64()
    with pytest.raises(TokenStoreError, match="kappa 5"):
        shard.codes(0, kappa=5)
    with pytest.raises(IndexError):
        shard.codes(5)


def test_reads_are_memory_mapped_slices(tmp_path):
    write_shard(tmp_path / "00", clips(50), META)
    shard = TokenShard(tmp_path / "00")
    assert isinstance(shard._codes, np.memmap)  # the file is mapped, not loaded
    c = shard.codes(3, kappa=1)
    assert c.base is None and not isinstance(c, np.memmap)  # an own copy of just that slice
    assert c.nbytes == 2 * shard.length(3) < shard._codes.nbytes / 10


def test_empty_shard(tmp_path):
    meta = write_shard(tmp_path / "07", [], META)
    assert meta["n_clips"] == 0 and meta["total_frames"] == 0
    shard = TokenShard(tmp_path / "07")
    assert len(shard) == 0 and shard._codes.shape == (K, 0) and list(shard.index.columns)[:2] == ["clip_id", "track_id"]


def test_version_and_corruption_errors_name_the_file(tmp_path):
    write_shard(tmp_path / "00", clips(2), META)
    meta_path = tmp_path / "00" / META_FILE
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "version": TOKEN_STORE_VERSION + 1}))
    with pytest.raises(TokenStoreError, match=r"meta\.json: token store version"):
        TokenShard(tmp_path / "00")
    meta_path.write_text(json.dumps(meta))
    table = pq.read_table(tmp_path / "00" / INDEX_FILE)
    pq.write_table(table.replace_schema_metadata({b"ssmttm.token_store_version": b"99"}), tmp_path / "00" / INDEX_FILE)
    with pytest.raises(TokenStoreError, match=r"index\.parquet: token store version 99"):
        TokenShard(tmp_path / "00")
    write_shard(tmp_path / "00", clips(2), META)
    np.save(tmp_path / "00" / CODES_FILE, np.zeros((K, 3), dtype=np.int32))
    with pytest.raises(TokenStoreError, match=r"codes\.npy"):
        TokenShard(tmp_path / "00")
    with pytest.raises(TokenStoreError, match="not found"):
        TokenShard(tmp_path / "nope")


def test_rewrite_replaces_folder_and_bad_clip_leaves_old(tmp_path):
    write_shard(tmp_path / "00", clips(3, seed=1), META)
    before = sha256_file(tmp_path / "00" / CODES_FILE)
    bad = clips(2) + [({"clip_id": "x"}, np.zeros((K + 1, 3), np.uint16))]
    with pytest.raises(TokenStoreError, match="clip 'x'"):
        write_shard(tmp_path / "00", bad, META)
    assert sha256_file(tmp_path / "00" / CODES_FILE) == before  # the old shard is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00"]  # no temp folder left behind
    write_shard(tmp_path / "00", clips(1, seed=2), META)
    assert len(TokenShard(tmp_path / "00")) == 1


def test_store_global_index(tmp_path):
    a, b = clips(3, seed=0, shard="00"), clips(2, seed=1, shard="01")
    write_shard(tmp_path / "00", a, META)
    write_shard(tmp_path / "01", b, META)
    write_shard(tmp_path / "02", [], META)
    with pytest.raises(TypeError, match="list of shard folders"):
        TokenStore(tmp_path)  # never a root folder to look around in
    store = TokenStore([tmp_path / "00", tmp_path / "01", tmp_path / "02"])
    assert len(store) == 5 and list(store.index["shard"]) == ["00"] * 3 + ["01"] * 2
    assert isinstance(store.index, pd.DataFrame)
    for i, (_, c) in enumerate(a + b):
        np.testing.assert_array_equal(store.codes(i), c)
    np.testing.assert_array_equal(store.codes(-1, kappa=1), b[-1][1][:1])
    assert len(TokenStore([tmp_path / "01"])) == 2
    with pytest.raises(TokenStoreError, match="no token shards"):
        TokenStore([])
    with pytest.raises(TokenStoreError, match="twice"):
        TokenStore([tmp_path / "01", tmp_path / "01"])
    write_shard(tmp_path / "03", clips(1), {**META, "weights_sha256": "cd" * 32})
    with pytest.raises(TokenStoreError, match="weights_sha256"):
        TokenStore([tmp_path / "00", tmp_path / "03"])
