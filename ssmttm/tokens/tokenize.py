"""Stage ``tokenize``: encode every manifest clip of one shard with the codec, once, all K codebooks.

Reads each clip's no-vocals FLAC (manifest ``audio_path``), brings it to the codec's input with
:meth:`ssmttm.codec.Codec.prepare` (mean downmix + soxr, the one way used everywhere), encodes in
batches and writes the shard's token store (:mod:`ssmttm.tokens.store`) with all K codebooks, so
any kappa can be trained later without re-encoding. caption_ids come from the text store's
``clips.parquet``. An unreadable, empty or non-finite clip is skipped with a reason naming it
(logged and listed in ``<out-dir>/rejected.tsv``); the shard's other clips are kept.

Determinism: a batch only ever holds clips of equal length (every 30 s clip, in practice), so no
clip's codes depend on zero padding added for a longer neighbour, and the same audio + weights give
identical ``codes_sha256`` whatever the batch size. On CUDA the codec runs in fp32 with TF32 off and
deterministic cuDNN kernels (:class:`ssmttm.codec.dac.DacCodec`). Decoding the next batch's FLACs
runs in a background thread while the current batch encodes.
"""

from __future__ import annotations

import argparse
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from ssmttm import io, logs, settings
from ssmttm.constants import SPECIAL_TOKEN
from ssmttm.tokens.options import TokenizeSettings

log = logging.getLogger("ssmttm.tokenize")
REJECTED_COLUMNS = ("clip_id", "reason")


def weights_identity(weights: str | os.PathLike) -> tuple[Path, str, str | None]:
    """(local file, weights key, sha256 pinned by the receipt or None) for a receipt or a plain file."""
    from ssmttm.weight_cache import local_path

    arg = Path(weights)
    path = local_path(arg)
    if arg.suffix == ".json":
        rec = io.read_json(arg)
        return path, str(rec.get("name") or arg.stem), rec.get("sha256")
    return path, arg.stem, None


def open_codec(codec_name: str, weights: str | os.PathLike, device: str):
    """Load the codec; returns (codec, weights key). Fails if the file no longer matches its receipt."""
    from ssmttm.codec import CodecError, load_codec

    path, key, pinned = weights_identity(weights)
    codec = load_codec(codec_name, path, device)
    if pinned and codec.weights_sha256 != pinned:
        raise CodecError(f"{path}: sha256 {codec.weights_sha256} differs from the receipt {weights} ({pinned})")
    return codec, key


def read_caption_ids(path: str | os.PathLike) -> dict[str, list[int]]:
    """clip_id -> caption_ids (primary first) from the text store's clips.parquet."""
    path = Path(path)
    try:
        df = pd.read_parquet(path, columns=["clip_id", "caption_ids"])
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: cannot read clip_id/caption_ids ({exc})") from exc
    return {str(c): [int(i) for i in ids] for c, ids in zip(df["clip_id"], df["caption_ids"])}


def load_clip(codec, audio_path: str) -> np.ndarray:
    """Decode and prepare one clip: ``[1, N]`` float32 at the codec rate; AudioError names the file."""
    from ssmttm.audio import AudioError, read

    x, sr = read(audio_path)
    y = codec.prepare(x, sr)
    if y.shape[-1] == 0:
        raise AudioError(f"{audio_path}: zero samples after resampling")
    if not np.all(np.isfinite(y)):
        raise AudioError(f"{audio_path}: non-finite samples")
    return y


def encode_batch(codec, audios: list[np.ndarray]) -> list[np.ndarray]:
    """Encode ``audios`` (each ``[1, N_i]``); returns codes ``[K, ceil(N_i / hop)]`` uint16 each.

    Clips are grouped by length and each group is one codec call, so a clip never sees padding
    from a longer neighbour (batch-size independent codes).
    """
    import torch

    out: list[np.ndarray | None] = [None] * len(audios)
    groups: dict[int, list[int]] = {}
    for i, a in enumerate(audios):
        groups.setdefault(int(a.shape[-1]), []).append(i)
    for n, idx in groups.items():
        x = torch.from_numpy(np.stack([audios[i] for i in idx]))  # [B, 1, N]
        codes = codec.encode(x).numpy()  # [B, K, T]
        t = codec.n_frames(n)
        if codes.shape[-1] < t:
            raise RuntimeError(f"codec returned {codes.shape[-1]} frames for {n} samples, expected {t}")
        for j, i in enumerate(idx):
            out[i] = np.ascontiguousarray(codes[j, :, :t], dtype=np.uint16)
    return out  # type: ignore[return-value]


def _load_many(codec, rows: list[dict]) -> list[tuple[dict, np.ndarray | None, str]]:
    """(row, audio or None, rejection reason) for each row; never raises for a bad clip."""
    from ssmttm.audio import AudioError

    out = []
    for r in rows:
        try:
            out.append((r, load_clip(codec, r["audio_path"]), ""))
        except (AudioError, OSError) as exc:
            out.append((r, None, f"unreadable audio: {exc}"))
    return out


def tokenize_clips(codec, clips: pd.DataFrame, caption_ids: dict[str, list[int]], batch_size: int = 8):
    """Encode manifest rows ``clips``; returns (``[(index row, codes [K, T] uint16)]``, rejected rows).

    Clips are processed in ``clip_id`` order; while batch ``i`` encodes, batch ``i + 1`` is decoded
    from disk in a background thread.
    """
    rows = clips.sort_values("clip_id").to_dict("records")
    batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    done, rejected = [], []
    bar = logs.progress(total=len(rows), desc="tokenize", unit="clip")
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_load_many, codec, batches[0]) if batches else None
        for b in range(len(batches)):
            loaded = pending.result()
            pending = pool.submit(_load_many, codec, batches[b + 1]) if b + 1 < len(batches) else None
            good = [(r, a) for r, a, why in loaded if a is not None]
            for r, _, why in loaded:
                if why:
                    log.warning("clip %s rejected: %s", r["clip_id"], why)
                    rejected.append({"clip_id": r["clip_id"], "reason": why})
            codes = encode_batch(codec, [a for _, a in good]) if good else []
            for (r, _), c in zip(good, codes):
                done.append((index_row(r, caption_ids), c))
            bar.update(len(loaded))
    bar.close()
    return done, rejected


def index_row(r: dict, caption_ids: dict[str, list[int]]) -> dict:
    """The token-store index fields taken from a manifest row (offset/length/codes_sha256 come later)."""
    return {"clip_id": str(r["clip_id"]), "track_id": str(r["track_id"]), "shard": str(r["shard"]),
            "split": str(r["split"]), "licence": str(r["licence"]), "caption_ids": caption_ids[str(r["clip_id"])],
            "audio_sha256": str(r["sha256"])}


def run(shard: str, manifest: str, text_clips: str, codec_name: str, weights: str, device: str,
        batch_size: int, out_dir: str) -> dict:
    """The stage: tokenize shard ``shard`` into ``out_dir``; returns the shard's meta.json content."""
    from ssmttm.codec import CodecError
    from ssmttm.data.manifest import read_manifest
    from ssmttm.tokens.store import write_shard

    df = read_manifest(manifest)
    clips = df[df["shard"] == shard]
    captions = read_caption_ids(text_clips)
    missing = sorted(set(clips["clip_id"]) - set(captions))
    if missing:
        raise ValueError(f"{text_clips}: no caption ids for {len(missing)} clip(s) of shard {shard} "
                         f"(e.g. {missing[:3]}); the text store was built from another manifest")
    codec, key = open_codec(codec_name, weights, device)
    if codec.cardinality > SPECIAL_TOKEN:
        # codes must stay below the special token (BOS/filler/padding id) of the language model
        raise CodecError(f"{weights}: codebook size {codec.cardinality} > {SPECIAL_TOKEN} (the special token id)")
    log.info("shard %s: %d clips, codec %s (%s, K=%d, %.2f frames/s) on %s, batch %d", shard, len(clips),
             codec_name, key, codec.n_codebooks, codec.frame_rate, codec.device, batch_size)
    done, rejected = tokenize_clips(codec, clips, captions, batch_size)
    meta = {**codec.describe(), "weights": key, "device": codec.device, "shard": shard,
            "n_rejected": len(rejected)}
    rej = pd.DataFrame(rejected, columns=list(REJECTED_COLUMNS)).to_csv(sep="\t", index=False)
    full = write_shard(out_dir, done, meta, extra_files={"rejected.tsv": rej})
    log.info("shard %s: %d clips, %d frames, %d rejected -> %s", shard, full["n_clips"], full["total_frames"],
             len(rejected), out_dir)
    return full


def main(argv: list[str]) -> int | None:
    """``tokenize``: encode one shard's clips with the codec into a uint16 token store."""
    p = argparse.ArgumentParser(prog="ssmttm tokenize", description=main.__doc__)
    p.add_argument("--shard", required=True, help="shard id (e.g. 00)")
    p.add_argument("--manifest", required=True, help="results/data/manifest.parquet")
    p.add_argument("--text-clips", required=True, help="results/text/<encoder>/clips.parquet (clip -> caption ids)")
    p.add_argument("--codec-weights", required=True, help="codec weights receipt results/weights/<key>.json, or a weights file")
    p.add_argument("--out-dir", required=True, help="results/tokens/<key>/<NN>")
    settings.add_arguments(p, TokenizeSettings)
    args = p.parse_args(argv)
    cfg = settings.from_args(p, TokenizeSettings, args)
    logs.setup()
    from ssmttm.codec import CodecError
    from ssmttm.data.manifest import ManifestError
    from ssmttm.tokens.store import TokenStoreError
    from ssmttm.weight_cache import MissingWeightError

    try:
        run(args.shard, args.manifest, args.text_clips, cfg.codec, args.codec_weights, cfg.device, cfg.batch_size,
            args.out_dir)
    except (CodecError, ManifestError, TokenStoreError, MissingWeightError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    return 0
