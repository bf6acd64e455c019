"""TokenDataset / collate over a token store and a text store written in their exact formats."""

import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ssmttm import io, pattern
from ssmttm.constants import SPECIAL_TOKEN, TEXT_STORE_VERSION
from ssmttm.tokens.dataset import TokenDataset, TokenDatasetError, collate
from ssmttm.tokens.store import write_shard

K, D = 4, 8
# clip_id -> (shard, split, frames, caption ids); id 0 is "" and never a clip caption
CLIPS = {
    "a": ("00", "train", 12, [1, 2, 3]),
    "b": ("00", "valid", 5, [4]),
    "c": ("00", "train", 30_000, [2, 5]),  # long: crops, and a pickled memmap would be ~240 KB
    "d": ("01", "train", 1, [6]),
    "e": ("01", "train", 20, [1]),
    "f": ("01", "valid", 9, [7, 1]),
}
N_CAPTIONS = 8


def _codes(cid):
    T = CLIPS[cid][2]
    return np.random.default_rng(ord(cid)).integers(0, 1024, size=(K, T)).astype(np.uint16)


def write_text_store(out, clips=CLIPS, n=N_CAPTIONS):
    """A text store in the shared format: float16 embeddings of (id + 2) tokens, value = id."""
    out.mkdir(parents=True, exist_ok=True)
    lengths = np.arange(n) + 2
    lengths[0] = 1  # "" is just </s>
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((int(lengths.sum()), D)).astype(np.float16)
    np.save(out / "embeddings.npy", emb)
    meta = {b"ssmttm.text_store_version": str(TEXT_STORE_VERSION).encode()}
    idx = pa.table({"caption_id": np.arange(n, dtype=np.int64), "text": [""] + [f"caption {i}" for i in range(1, n)],
                    "offset": offsets.astype(np.int64), "length": lengths.astype(np.int64)}).replace_schema_metadata(meta)
    pq.write_table(idx, out / "index.parquet")
    cl = pa.table({"clip_id": list(clips), "caption_ids": pa.array([v[3] for v in clips.values()], pa.list_(pa.int64()))})
    pq.write_table(cl.replace_schema_metadata(meta), out / "clips.parquet")
    io.write_json(out / "meta.json", {"version": TEXT_STORE_VERSION, "encoder": "fake", "weights_sha256": "",
                                      "d_model": D, "max_length": 64, "n_captions": 10, "n_unique": n - 1,
                                      "encoder_forwards": n, "dtype": "float16"})
    return emb, offsets, lengths


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    for shard in ("00", "01"):
        rows = [({"clip_id": c, "track_id": f"t{c}", "shard": shard, "split": v[1], "licence": "by",
                  "caption_ids": v[3], "audio_sha256": "0" * 64}, _codes(c))
                for c, v in CLIPS.items() if v[0] == shard]
        write_shard(root / "tokens" / shard, rows, {"codec": "dac", "weights": "fake", "weights_sha256": "",
                                                     "sample_rate": 44100, "frame_rate": 86.1328125,
                                                     "n_codebooks": K, "cardinality": 1024})
    emb, offsets, lengths = write_text_store(root / "text")
    return [root / "tokens" / "00", root / "tokens" / "01"], root / "text", (emb, offsets, lengths)


def test_items_shapes_and_pattern(stores):
    tokens, text, (emb, offsets, lengths) = stores
    for kappa in (1, 2, 4):
        ds = TokenDataset(tokens, text, kappa, split="train", caption="primary")
        assert ds.clip_ids == ["a", "c", "d", "e"] and len(ds) == 4
        for i, cid in enumerate(ds.clip_ids):
            item = ds[i]
            T = CLIPS[cid][2]
            assert item["clip_id"] == cid
            assert item["codes"].dtype == torch.int64 and item["codes"].shape == (kappa, T + kappa)
            assert (item["codes"][:, 0] == SPECIAL_TOKEN).all()
            np.testing.assert_array_equal(pattern.revert(item["codes"]).numpy(), _codes(cid)[:kappa])
            assert item["codes_mask"].dtype == torch.bool
            np.testing.assert_array_equal(item["codes_mask"].numpy(), pattern.valid_mask(kappa, T))
            cap = CLIPS[cid][3][0]
            assert item["caption_id"] == cap
            np.testing.assert_array_equal(item["text"].numpy(), emb[offsets[cap]:offsets[cap] + lengths[cap]])


def test_valid_split(stores):
    tokens, text, _ = stores
    ds = TokenDataset(tokens, text, 2, split="valid")
    assert ds.clip_ids == ["b", "f"]
    np.testing.assert_array_equal(pattern.revert(ds[1]["codes"]).numpy(), _codes("f")[:2])
    with pytest.raises(TokenDatasetError, match="test"):
        TokenDataset(tokens, text, 2, split="test")
    only01 = TokenDataset(tokens[1:], text, 2, split="valid")
    assert only01.clip_ids == ["f"]


def test_clips_are_exactly_the_given_ones(stores, tmp_path):
    """With ``clips`` (the manifest's split), the dataset holds those clips in that order and no other
    clip of the shards; a clip the shards lack fails unless the codec rejected it (rejected.tsv)."""
    tokens, text, _ = stores
    ds = TokenDataset(tokens, text, 2, split="train", clips=["e", "a"])
    assert ds.clip_ids == ["e", "a"] and ds.track_ids == ["ta", "te"] and ds.untokenized == []
    with pytest.raises(TokenDatasetError, match="none of the token shards"):
        TokenDataset(tokens, text, 2, split="train", clips=["a", "zz"])
    with pytest.raises(TokenDatasetError, match="another split"):
        TokenDataset(tokens, text, 2, split="train", clips=["a", "b"])  # b is stored as valid
    with pytest.raises(TokenDatasetError, match="none of the token shards"):
        TokenDataset(tokens[:1], text, 2, split="train", clips=["a", "d"])  # d lives in shard 01, not given
    import shutil

    shard = tmp_path / "00"
    shutil.copytree(tokens[0], shard)
    (shard / "rejected.tsv").write_text("clip_id\treason\nzz\tcodec failed\n")
    ds = TokenDataset([shard], text, 2, split="train", clips=["a", "zz"])
    assert ds.clip_ids == ["a"] and ds.untokenized == ["zz"]


def test_kappa_error_names_both(stores):
    tokens, text, _ = stores
    with pytest.raises(TokenDatasetError, match="kappa 5.*4 codebooks"):
        TokenDataset(tokens, text, 5)
    with pytest.raises(TokenDatasetError, match="caption"):
        TokenDataset(tokens, text, 1, caption="longest")


def test_caption_choice_deterministic_and_varied(stores):
    tokens, text, _ = stores
    ds = TokenDataset(tokens, text, 1, seed=3)
    again = TokenDataset(tokens, text, 1, seed=3)
    seen = set()
    for epoch in range(30):
        ds.set_epoch(epoch)
        again.set_epoch(epoch)
        assert [ds[i]["caption_id"] for i in range(len(ds))] == [again[i]["caption_id"] for i in range(len(ds))]
        seen.add(ds[0]["caption_id"])
        assert ds[2]["caption_id"] == 6  # a single caption is always that caption
    assert seen == {1, 2, 3}  # every caption of clip "a" gets used
    assert len({TokenDataset(tokens, text, 1, seed=s).caption_id(0) for s in range(20)}) > 1  # seed matters
    prim = TokenDataset(tokens, text, 1, caption="primary")
    for e in range(5):
        prim.set_epoch(e)
        assert prim[0]["caption_id"] == 1


def test_crop_deterministic(stores):
    tokens, text, _ = stores
    ds = TokenDataset(tokens, text, 4, max_frames=8, seed=1)
    starts = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        item = ds[1]  # clip "c", 30000 frames
        start, n = ds.crop(1)
        assert n == 8 and item["codes"].shape == (4, 12)
        np.testing.assert_array_equal(pattern.revert(item["codes"]).numpy(), _codes("c")[:, start:start + 8])
        again = TokenDataset(tokens, text, 4, max_frames=8, seed=1)
        again.set_epoch(epoch)
        assert torch.equal(again[1]["codes"], item["codes"])
        starts.add(start)
        assert ds[2]["codes"].shape == (4, 1 + 4)  # shorter than max_frames: whole clip
    assert len(starts) > 1
    # cropping does not change the caption draw
    nocrop = TokenDataset(tokens, text, 4, seed=1)
    for epoch in range(6):
        ds.set_epoch(epoch)
        nocrop.set_epoch(epoch)
        assert ds[0]["caption_id"] == nocrop[0]["caption_id"]


def test_collate_pads(stores):
    tokens, text, (emb, offsets, lengths) = stores
    ds = TokenDataset(tokens, text, 3, max_frames=16, caption="primary")
    items = [ds[i] for i in range(len(ds))]  # frames 12, 16 (cropped), 1, 16
    b = collate(items)
    assert b["codes"].shape == (4, 3, 19) and b["codes"].dtype == torch.int64
    assert b["lengths"].tolist() == [15, 19, 4, 19]
    for j, it in enumerate(items):
        n = it["codes"].shape[1]
        assert torch.equal(b["codes"][j, :, :n], it["codes"])
        assert (b["codes"][j, :, n:] == SPECIAL_TOKEN).all()
        assert torch.equal(b["codes_mask"][j, :, :n], it["codes_mask"]) and not b["codes_mask"][j, :, n:].any()
    assert int(b["codes_mask"].sum()) == 3 * (12 + 16 + 1 + 16)
    caps = [1, 2, 6, 1]
    assert b["caption_ids"].tolist() == caps and b["clip_ids"] == ["a", "c", "d", "e"]
    assert b["text"].shape == (4, max(lengths[caps]), D) and b["text"].dtype == torch.float32
    assert b["text_mask"].sum(1).tolist() == [int(lengths[c]) for c in caps]
    assert float(b["text"][~b["text_mask"]].abs().sum()) == 0.0


def test_pickles_without_memmaps(stores):
    tokens, text, _ = stores
    ds = TokenDataset(tokens, text, 4)
    ds[1]  # opens both stores' memory maps
    assert ds._store is not None
    blob = pickle.dumps(ds)
    assert len(blob) < 60_000  # clip "c" alone is 240 KB of codes
    clone = pickle.loads(blob)
    assert clone._store is None and clone.text._emb is None
    assert torch.equal(clone[1]["codes"], ds[1]["codes"])


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader(stores, workers):
    tokens, text, _ = stores
    ds = TokenDataset(tokens, text, 2, max_frames=10, seed=7)
    ds.set_epoch(1)
    ds[0]  # memmaps open in the parent: workers must reopen their own
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=collate)
    batches = list(loader)
    ref = [collate([ds[i] for i in range(j, min(j + 2, len(ds)))]) for j in range(0, len(ds), 2)]
    assert len(batches) == len(ref) == 2
    for got, want in zip(batches, ref):
        assert torch.equal(got["codes"], want["codes"]) and torch.equal(got["text"], want["text"])
        assert got["clip_ids"] == want["clip_ids"] and torch.equal(got["caption_ids"], want["caption_ids"])


def test_mismatched_text_store_fails(stores, tmp_path):
    tokens, _, _ = stores
    wrong = dict(CLIPS)
    wrong["a"] = ("00", "train", 12, [3, 2, 1])
    write_text_store(tmp_path / "text", wrong)
    with pytest.raises(TokenDatasetError, match="clip a"):
        TokenDataset(tokens, tmp_path / "text", 1)
    small = tmp_path / "small"
    write_text_store(small, n=5)  # caption ids 5..7 do not exist there
    with pytest.raises(TokenDatasetError, match="do not match"):
        TokenDataset(tokens, small, 1)
