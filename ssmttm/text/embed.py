"""``python -m ssmttm text-embed``: encode every unique caption once with the frozen T5 encoder.

Training never runs the text encoder (it reads the stored caption states): this stage collects every
caption of every manifest clip (the ``captions`` JSON list, primary first), deduplicates them
exactly (the same string gets the same id), adds the empty prompt "" as caption id 0 (the
unconditional prompt of classifier-free guidance, docs/reference.md §1), and runs each unique text
through the encoder ONCE, in length-sorted batches. It writes the text store described in
:mod:`ssmttm.text.store`.

Compute: no_grad, eval mode; fp32 on CPU, bf16 on CUDA by default (``--dtype``: T5 was trained
in bf16 and overflows in fp16); the states are stored as float16 (T5's final RMSNorm keeps them
small; a non-finite value after the cast fails the stage naming the caption). Texts longer than
``--max-length`` tokens are truncated (T5's </s> kept last), counted and logged. The output is
deterministic: ids follow the first appearance of each caption in clip_id order, and right
padding with an attention mask leaves every caption's states independent of its batch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ssmttm import io, logs, settings
from ssmttm.constants import TEXT_STORE_VERSION
from ssmttm.text import store as ts
from ssmttm.text.options import TextEmbedSettings

log = logging.getLogger("ssmttm.text")


def clip_captions(row: dict) -> list[str]:
    """A manifest row's captions, primary first, exact duplicates within the clip removed.

    Falls back to ``[row["caption"]]`` when the ``captions`` JSON is unreadable or empty (logged).
    """
    try:
        caps = json.loads(row["captions"])
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            raise ValueError("not a JSON list of strings")
    except (ValueError, TypeError) as exc:
        log.warning("clip %s: captions column unusable (%s); using its primary caption only", row["clip_id"], exc)
        caps = []
    if not caps:
        caps = [row["caption"]]
    return list(dict.fromkeys(caps))


def collect(manifest: pd.DataFrame) -> tuple[list[str], dict[str, list[int]], int]:
    """(texts by caption id with texts[0] == "", {clip_id: caption ids}, number of clip captions).

    Ids are given in order of first appearance over the clips sorted by clip_id, so the same
    manifest always gives the same ids whatever its row order.
    """
    ids: dict[str, int] = {"": ts.EMPTY_ID}
    clips: dict[str, list[int]] = {}
    n_captions = 0
    for row in manifest.sort_values("clip_id", kind="stable").to_dict("records"):
        caps = clip_captions(row)
        n_captions += len(caps)
        clips[row["clip_id"]] = [ids.setdefault(c, len(ids)) for c in caps]
    return list(ids), clips, n_captions


def tokenize(tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], list[int]]:
    """(token ids per text, ending in </s>, at most ``max_length`` long; ids of truncated texts)."""
    full = tokenizer(texts, add_special_tokens=True)["input_ids"]
    long = [i for i, x in enumerate(full) if len(x) > max_length]
    if long:  # re-tokenize only those: the tokenizer truncates the words and keeps </s> last
        cut = tokenizer([texts[i] for i in long], add_special_tokens=True, truncation=True,
                        max_length=max_length)["input_ids"]
        for i, x in zip(long, cut):
            full[i] = x
    return [list(x) for x in full], long


def _batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Caption ids in batches of similar length, longest first (an OOM shows at the first batch)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def _write_parquet(path: Path, df: pd.DataFrame, schema, metadata: dict | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    with io.atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def encoder_identity(encoder: str | os.PathLike) -> tuple[str, str]:
    """(weights key, sha256) of the encoder: from its receipt, or the folder's name and tree hash."""
    p = Path(encoder)
    if p.suffix == ".json" and p.is_file():
        rec = io.read_json(p)
        return str(rec.get("name") or p.stem), str(rec.get("sha256") or "")
    return p.name, io.sha256_tree(p) if p.is_dir() else ""


def embed_manifest(
    manifest: pd.DataFrame,
    encoder: str | os.PathLike,
    out_dir: str | os.PathLike,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 64,
    max_length: int = 256,
) -> dict:
    """Write the text store for ``manifest``'s clips into ``out_dir``; returns meta.json's content.

    ``encoder``: a weights receipt or a local T5 folder (see ssmttm.text.encoder.load_t5_encoder).
    """
    from ssmttm.text.encoder import forward, load_t5_encoder, resolve_device

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / ts.META).unlink(missing_ok=True)  # meta.json is written last: present = complete
    texts, clips, n_captions = collect(manifest)
    key, weights_sha = encoder_identity(encoder)
    dev, cdtype = resolve_device(device, dtype)
    model, tokenizer = load_t5_encoder(encoder, device=str(dev), dtype=str(cdtype).replace("torch.", ""))
    D = int(model.config.d_model)
    ids, truncated = tokenize(tokenizer, texts, max_length)
    if truncated:
        log.warning("%d caption(s) longer than --max-length %d tokens were truncated, e.g. id %d: %.80r",
                    len(truncated), max_length, truncated[0], texts[truncated[0]])
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    total = int(lengths.sum())
    log.info("text-embed: %d clips, %d clip captions, %d unique texts (incl. \"\"), %d tokens, d_model %d, "
             "%s %s, batch %d", len(clips), n_captions, len(texts), total, D, dev, cdtype, batch_size)
    forwards, t0 = 0, time.perf_counter()
    with io.atomic_path(out / ts.EMBEDDINGS) as tmp:
        emb = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(total, D))
        with logs.progress(total=len(texts), desc="text-embed", unit="caption") as bar:
            for batch in _batches(lengths.tolist(), batch_size):
                states = forward(model, [ids[i] for i in batch], tokenizer.pad_token_id)
                forwards += len(batch)  # counted from what actually went through the encoder
                for i, h in zip(batch, states):
                    h16 = h.astype(np.float16)
                    if not np.isfinite(h16).all():
                        raise ValueError(f"caption id {i} ({texts[i][:60]!r}): non-finite states after float16 cast")
                    emb[offsets[i]:offsets[i] + lengths[i]] = h16
                bar.update(len(batch))
        emb.flush()
        del emb
    seconds = time.perf_counter() - t0
    log.info("encoded %d texts in %.2f s (%.1f texts/s)", forwards, seconds, forwards / max(seconds, 1e-9))
    write_index_tables(out, texts, offsets, lengths, clips)
    meta = {
        "version": TEXT_STORE_VERSION, "encoder": key, "weights_sha256": weights_sha, "d_model": D,
        "max_length": max_length, "n_clips": len(clips), "n_captions": n_captions,
        # distinct caption texts of the clips; encoder_forwards = n_unique + 1 unless a clip's caption is ""
        "n_unique": len({texts[i] for caps in clips.values() for i in caps}),
        "encoder_forwards": forwards, "n_truncated": len(truncated), "total_tokens": total,
        "dtype": "float16", "compute_dtype": str(cdtype).replace("torch.", ""),
    }
    io.write_json(out / ts.META, meta)
    return meta


def write_index_tables(out: Path, texts, offsets, lengths, clips: dict[str, list[int]]) -> None:
    """A text store's index.parquet (caption id, text, offset, length) and clips.parquet (clip or prompt id
    -> caption ids), both tagged with the store version."""
    import pyarrow as pa

    index = pd.DataFrame({"caption_id": np.arange(len(texts), dtype=np.int64), "text": texts,
                          "offset": offsets, "length": lengths})
    schema = pa.schema([("caption_id", pa.int64()), ("text", pa.string()), ("offset", pa.int64()),
                        ("length", pa.int64())])
    _write_parquet(out / ts.INDEX, index, schema, {ts.VERSION_KEY: str(TEXT_STORE_VERSION).encode()})
    cl = pd.DataFrame({"clip_id": list(clips), "caption_ids": [list(map(int, v)) for v in clips.values()]})
    schema = pa.schema([("clip_id", pa.string()), ("caption_ids", pa.list_(pa.int64()))])
    _write_parquet(out / ts.CLIPS, cl, schema, {ts.VERSION_KEY: str(TEXT_STORE_VERSION).encode()})


def main(argv: list[str]) -> int | None:
    p = argparse.ArgumentParser(prog="ssmttm text-embed", description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", type=Path, required=True, help="results/data/manifest.parquet")
    p.add_argument("--text-encoder", required=True,
                   help="weights receipt results/weights/<key>.json, or a local T5 folder (save_pretrained)")
    p.add_argument("--out-dir", type=Path, required=True, help="results/text/<encoder key>")
    settings.add_arguments(p, TextEmbedSettings)
    args = p.parse_args(argv)
    cfg = settings.from_args(p, TextEmbedSettings, args)
    logs.setup()
    if not args.manifest.is_file():
        p.error(f"--manifest: no such file {args.manifest}")
    from ssmttm.data.manifest import ManifestError, read_manifest
    from ssmttm.text.encoder import TextEncoderError
    from ssmttm.weight_cache import MissingWeightError

    try:
        manifest = read_manifest(args.manifest)
        embed_manifest(manifest, args.text_encoder, args.out_dir, device=cfg.device, dtype=cfg.dtype,
                       batch_size=cfg.batch_size, max_length=cfg.max_length)
    except (ManifestError, TextEncoderError, MissingWeightError) as exc:
        log.error("%s", exc)
        return 2
    except ValueError as exc:
        if "--device" in str(exc) or "--dtype" in str(exc):
            p.error(str(exc))
        raise
    return 0
