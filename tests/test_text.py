"""Caption embeddings: tiny T5 built -> loaded through the real loader -> text-embed -> TextStore."""

import json
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest

from ssmttm import io, weights
from ssmttm.constants import TEXT_STORE_VERSION
from ssmttm.data.manifest import MANIFEST_COLUMNS, write_manifest
from ssmttm.text import embed, encoder
from ssmttm.text.store import TextStore, TextStoreError, pad

LONG = " ".join(["a dreamy ambient track with warm pads and gentle percussion"] * 6)
CLIPS = {  # clip_id -> captions (primary first)
    "c03": ["an upbeat rock song with electric guitar", "happy rock with drums"],
    "c01": ["a calm piano piece with soft strings", "slow piano for film"],
    "c02": ["a calm piano piece with soft strings"],  # duplicate of c01's primary
    "c04": [LONG, "an upbeat rock song with electric guitar", "an upbeat rock song with electric guitar"],
    "c05": ["jazz"],
}


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    """A tiny T5 folder fetched into a weights cache like the real one: (folder, receipt path)."""
    root = tmp_path_factory.mktemp("t5")
    folder = encoder.build_tiny_t5(root / "built", seed=0)
    rec = weights.fetch("t5_tiny", str(folder), root / "weights", licence="Apache-2.0")
    return folder, root / "weights" / "t5_tiny.json", rec


def _manifest(path, clips=CLIPS):
    rows = []
    for i, (cid, caps) in enumerate(clips.items()):
        rows.append({"clip_id": cid, "track_id": f"t{i}", "shard": "00", "source_path": f"00/{i}.mp3",
                     "offset": 0.0, "seconds": 30.0, "licence": "by", "caption": caps[0],
                     "captions": json.dumps(caps), "split": "train", "sha256": "0" * 64,
                     "audio_path": f"x/{cid}.flac", "sample_rate": 44100, "channels": 2, "vocals": "removed",
                     "captioner": "template"})
    write_manifest(path, pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)))
    return path


@pytest.fixture(scope="module")
def text_store(t5, tmp_path_factory):
    _, receipt, _ = t5
    root = tmp_path_factory.mktemp("text")
    man = _manifest(root / "manifest.parquet")
    rc = embed.main(["--manifest", str(man), "--text-encoder", str(receipt), "--device", "cpu", "--batch-size", "2",
                     "--max-length", "16", "--out-dir", str(root / "t5_tiny")])
    assert rc == 0
    return root / "t5_tiny"


def test_tiny_t5_small_and_deterministic(t5, tmp_path):
    folder, _, rec = t5
    assert rec["bytes"] < 3_000_000
    again = encoder.build_tiny_t5(tmp_path / "again", seed=0)
    assert io.sha256_tree(again) == rec["sha256"]  # byte-identical rebuild
    other = encoder.build_tiny_t5(tmp_path / "other", seed=1)
    assert io.sha256_file(other / "model.safetensors") != io.sha256_file(folder / "model.safetensors")


def test_loader_from_receipt(t5):
    _, receipt, _ = t5
    model, tok = encoder.load_t5_encoder(receipt, device="cpu")
    assert type(model).__name__ == "T5EncoderModel" and not model.training
    assert model.config.d_model == 32 and len(tok) <= model.config.vocab_size
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    ids = tok("a calm piano piece")["input_ids"]
    assert ids[-1] == 1 and 2 not in ids  # </s> appended; caption words are known pieces
    assert tok("")["input_ids"] == [1]


def test_loader_fails_naming_folder(t5, tmp_path):
    folder, _, _ = t5
    no_tok = tmp_path / "no_tokenizer"
    shutil.copytree(folder, no_tok)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (no_tok / f).unlink()
    with pytest.raises(encoder.TextEncoderError, match=str(no_tok)):
        encoder.load_t5_encoder(no_tok)
    # a placeholder tokenizer: special tokens only
    broken = tmp_path / "tiny_vocab"
    shutil.copytree(folder, broken)
    tf = encoder.import_transformers()
    tf.T5Tokenizer(extra_ids=0).save_pretrained(str(broken))
    with pytest.raises(encoder.TextEncoderError, match="only .* pieces") as e:
        encoder.load_t5_encoder(broken)
    assert str(broken) in str(e.value)
    with pytest.raises(weights.MissingWeightError):
        encoder.load_t5_encoder(tmp_path / "nothing.json")


def test_padding_does_not_change_states(t5):
    folder, _, _ = t5
    model, tok = encoder.load_t5_encoder(folder, device="cpu")
    texts = ["jazz", "a calm piano piece with soft strings and a slow rhythm", ""]
    ids = [tok(t)["input_ids"] for t in texts]
    batch = encoder.forward(model, ids, tok.pad_token_id)
    for i, x in enumerate(ids):
        single = encoder.forward(model, [x], tok.pad_token_id)[0]
        assert batch[i].shape == (len(x), 32)
        np.testing.assert_allclose(batch[i], single, atol=1e-5, rtol=1e-5)


def test_text_embed_store(t5, text_store):
    folder, _, rec = t5
    st = TextStore(text_store)
    meta = st.meta
    unique = {c for caps in CLIPS.values() for c in caps}
    assert meta["version"] == TEXT_STORE_VERSION and meta["encoder"] == "t5_tiny"
    assert meta["weights_sha256"] == rec["sha256"] and meta["d_model"] == 32 and meta["dtype"] == "float16"
    assert meta["n_unique"] == len(unique) == 6
    assert meta["encoder_forwards"] == len(unique) + 1 == len(st)
    assert meta["n_captions"] == 2 + 2 + 1 + 2 + 1  # c04's repeated caption counted once
    # id 0 is the empty prompt: just </s>
    assert st.text(0) == "" and st.length(0) == 1
    # duplicates share an id; every clip is mapped, primary first
    assert set(st.clip_ids) == set(CLIPS)
    assert st.caption_ids("c01")[0] == st.caption_ids("c02")[0]
    assert st.caption_ids("c04")[1] == st.caption_ids("c03")[0]
    assert len(st.caption_ids("c04")) == 2
    for cid, caps in CLIPS.items():
        assert [st.text(i) for i in st.caption_ids(cid)] == list(dict.fromkeys(caps))
    # ids follow first appearance in clip_id order (c01 first)
    assert st.text(1) == CLIPS["c01"][0]
    # truncation: the long caption is cut to max_length and counted
    long_id = st.caption_ids("c04")[0]
    assert meta["n_truncated"] == 1 and st.length(long_id) == 16 == meta["max_length"]
    # stored embeddings equal a single-caption forward (fp32 compute on CPU, float16 storage)
    model, tok = encoder.load_t5_encoder(folder, device="cpu")
    for i in range(len(st)):
        e = st.embedding(i)
        assert e.dtype == np.float16 and e.shape == (st.length(i), 32)
        ids = tok(st.text(i), truncation=True, max_length=16)["input_ids"]
        ref = encoder.forward(model, [ids], tok.pad_token_id)[0]
        np.testing.assert_allclose(e.astype(np.float32), ref, atol=2e-3, rtol=2e-3)
    emb = np.load(text_store / "embeddings.npy", mmap_mode="r", allow_pickle=False)
    assert emb.shape == (int(st.index["length"].sum()), 32)


def test_text_embed_deterministic(t5, text_store, tmp_path):
    _, receipt, _ = t5
    # rows in another order, bigger batches: same ids and identical bytes
    man = _manifest(tmp_path / "m.parquet", dict(reversed(list(CLIPS.items()))))
    embed.main(["--manifest", str(man), "--text-encoder", str(receipt), "--device", "cpu", "--batch-size", "64",
                "--max-length", "16", "--out-dir", str(tmp_path / "again")])
    for f in ("index.parquet", "clips.parquet", "meta.json"):
        assert io.sha256_file(tmp_path / "again" / f) == io.sha256_file(text_store / f), f
    a = np.load(tmp_path / "again" / "embeddings.npy")
    b = np.load(text_store / "embeddings.npy")
    np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=1e-3)
    # the same flags: byte-identical embeddings
    embed.main(["--manifest", str(man), "--text-encoder", str(receipt), "--device", "cpu", "--batch-size", "2",
                "--max-length", "16", "--out-dir", str(tmp_path / "same")])
    assert io.sha256_file(tmp_path / "same" / "embeddings.npy") == io.sha256_file(text_store / "embeddings.npy")


def test_empty_caption_is_id_zero(t5, tmp_path):
    folder, _, _ = t5
    df = pd.DataFrame([{"clip_id": "a", "caption": "x", "captions": json.dumps(["jazz", ""])},
                       {"clip_id": "b", "caption": "rock", "captions": "not json"}])
    meta = embed.embed_manifest(df, folder, tmp_path / "s", device="cpu", max_length=32)
    st = TextStore(tmp_path / "s")
    assert st.caption_ids("a") == [1, 0] and st.text(st.caption_ids("b")[0]) == "rock"
    assert meta["n_unique"] == 3 and meta["encoder_forwards"] == 3  # "" counted once


def test_store_pickles_and_pads(text_store):
    st = TextStore(text_store)
    st.embedding(1)  # opens the memory map
    clone = pickle.loads(pickle.dumps(st))
    assert clone._emb is None
    np.testing.assert_array_equal(clone.embedding(1), st.embedding(1))
    arrays = [st.embedding(i) for i in (0, 1, 2)]
    x, mask = pad(arrays)
    L = max(a.shape[0] for a in arrays)
    assert x.shape == (3, L, 32) and x.dtype.is_floating_point and mask.dtype == __import__("torch").bool
    assert mask.sum(1).tolist() == [a.shape[0] for a in arrays]
    assert float(x[0, 1:].abs().sum()) == 0.0  # padding is zero
    np.testing.assert_array_equal(x[1, :arrays[1].shape[0]].numpy(), arrays[1].astype(np.float32))
    x2, m2 = pad(arrays, max_length=3)
    assert x2.shape == (3, 3, 32) and m2[0].tolist() == [True, False, False]
    with pytest.raises(ValueError):
        pad([])


def test_store_rejects_bad_folder(tmp_path, text_store):
    with pytest.raises(TextStoreError, match="meta.json"):
        TextStore(tmp_path)
    bad = tmp_path / "bad"
    shutil.copytree(text_store, bad)
    m = io.read_json(bad / "meta.json")
    io.write_json(bad / "meta.json", {**m, "version": 99})
    with pytest.raises(TextStoreError, match="version"):
        TextStore(bad)


def test_cli_rejects_bad_flags(tmp_path, t5):
    _, receipt, _ = t5
    with pytest.raises(SystemExit):
        embed.main(["--manifest", str(tmp_path / "none.parquet"), "--text-encoder", str(receipt), "--out-dir", str(tmp_path)])
    man = _manifest(tmp_path / "m.parquet")
    with pytest.raises(SystemExit):
        embed.main(["--manifest", str(man), "--text-encoder", str(receipt), "--batch-size", "0", "--out-dir", str(tmp_path)])
    assert embed.main(["--manifest", str(man), "--text-encoder", str(tmp_path / "missing.json"),
                       "--out-dir", str(tmp_path / "o")]) == 2


def test_loader_rejects_placeholder_vocab_from_config(t5, tmp_path):
    # only tokenizer_config.json left: transformers would build a special-tokens-only T5 vocabulary
    folder, _, _ = t5
    ph = tmp_path / "placeholder"
    shutil.copytree(folder, ph)
    (ph / "tokenizer.json").unlink()
    with pytest.raises(encoder.TextEncoderError) as e:
        encoder.load_t5_encoder(ph)
    assert str(ph) in str(e.value)
