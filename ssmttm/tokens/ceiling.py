"""Stages ``ceiling`` and ``ceiling-summary``: how good can audio rebuilt from stored codes be?

For a seeded sample of clips per shard, the stored codes are decoded with the first kappa codebooks
(kappa = 1, 4, 9 by default; a kappa above the codec's K is reported as skipped) and compared with
the clip itself, prepared exactly as the tokenize stage prepared it (mono mean, soxr to the codec
rate) and trimmed to the same length. That is the "codec re-synthesis" row of later metric tables:
no language model can beat it, so it separates codec limits from model errors.

Metrics (numpy, no extra dependency):

- multi-resolution log-mel distance: for n_fft in 512 / 1024 / 2048, hop n_fft / 4, periodic Hann
  window, centred frames (zero padded by n_fft / 2), magnitude STFT, n_fft / 16 triangular mel bands
  (HTK mel scale, 0 Hz to Nyquist), ``log10(max(mel, 1e-5))``; the mean absolute difference between
  reference and estimate, averaged over the three resolutions (0 for identical signals);
- SI-SDR (dB): both signals made zero-mean, the estimate projected on the reference,
  ``10 log10(|target|^2 / |estimate - target|^2)`` (Le Roux et al., 2019).

``ceiling-summary`` joins every shard's table into ``ceiling.tsv`` + ``ceiling.json``: per kappa the
number of clips, mean and 95 % confidence half-width (normal approximation, 1.96 standard errors).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ssmttm import io, logs, settings
from ssmttm.tokens.options import CeilingSettings

log = logging.getLogger("ssmttm.ceiling")

MEL_FFTS = (512, 1024, 2048)
LOG_FLOOR = 1e-5
PROTOCOL = {
    "mel_distance": "mean |log10(max(mel,1e-5))| difference, averaged over n_fft 512/1024/2048, hop n_fft/4, "
                    "hann, n_fft/16 HTK mel bands 0..Nyquist, magnitude STFT",
    "si_sdr_db": "scale-invariant SDR, zero-mean signals, reference = prepared clip",
    "reference": "clip audio, mono mean + soxr to the codec rate, trimmed to the decoded length",
    "ci95": "1.96 x standard error (normal approximation)",
}
COLUMNS = ("shard", "clip_id", "kappa", "n_codebooks", "mel_distance", "si_sdr_db", "seconds", "codec", "weights",
           "weights_sha256", "status")
SUMMARY_COLUMNS = ("kappa", "n", "mel_distance_mean", "mel_distance_ci95", "si_sdr_db_mean", "si_sdr_db_ci95",
                   "n_skipped", "codec", "weights", "weights_sha256")


# --- metrics --------------------------------------------------------------------------------------

def mel_filterbank(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular filters on the HTK mel scale from 0 Hz to sr/2: ``[n_mels, n_fft // 2 + 1]``."""
    mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(0.0), mel(sr / 2.0), n_mels + 2))
    freqs = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


def log_mel(x: np.ndarray, sr: int, n_fft: int) -> np.ndarray:
    """``x: [N]`` -> ``log10(max(mel magnitude, 1e-5))``: ``[n_fft // 16, frames]``."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    hop = n_fft // 4
    pad = np.pad(x, (n_fft // 2, n_fft // 2))
    if pad.shape[0] < n_fft:
        pad = np.pad(pad, (0, n_fft - pad.shape[0]))
    frames = np.lib.stride_tricks.sliding_window_view(pad, n_fft)[::hop]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)  # periodic Hann
    mag = np.abs(np.fft.rfft(frames * window, axis=-1)).astype(np.float32)  # [frames, bins]
    mel = mel_filterbank(sr, n_fft, n_fft // 16) @ mag.T
    return np.log10(np.maximum(mel, LOG_FLOOR))


def mel_distance(ref: np.ndarray, est: np.ndarray, sr: int, ffts=MEL_FFTS) -> float:
    """Multi-resolution log-mel L1 distance between ``ref`` and ``est`` (same length, mono)."""
    ref, est = np.asarray(ref).reshape(-1), np.asarray(est).reshape(-1)
    if ref.shape != est.shape:
        raise ValueError(f"mel_distance: lengths differ ({ref.shape[0]} vs {est.shape[0]})")
    return float(np.mean([np.mean(np.abs(log_mel(ref, sr, n) - log_mel(est, sr, n))) for n in ffts]))


def si_sdr(ref: np.ndarray, est: np.ndarray, eps: float = 1e-12) -> float:
    """Scale-invariant SDR in dB of ``est`` against ``ref`` (same length, mono)."""
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    est = np.asarray(est, dtype=np.float64).reshape(-1)
    if ref.shape != est.shape:
        raise ValueError(f"si_sdr: lengths differ ({ref.shape[0]} vs {est.shape[0]})")
    ref, est = ref - ref.mean(), est - est.mean()
    target = (np.dot(est, ref) / (np.dot(ref, ref) + eps)) * ref
    noise = est - target
    return float(10.0 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


# --- stage ----------------------------------------------------------------------------------------

def sample_clips(n: int, k: int, seed: int, shard: str) -> list[int]:
    """``min(n, k)`` clip indices of a shard, sorted; depends only on (seed, shard, n)."""
    key = int.from_bytes(hashlib.sha256(f"{seed}:{shard}".encode()).digest()[:8], "big")
    rng = np.random.default_rng(key)
    return sorted(int(i) for i in rng.choice(n, size=min(n, k), replace=False)) if n else []


def ceiling_rows(shard_dir: str, manifest: str, codec, weights_key: str, clips_per_shard: int, seed: int,
                 kappas: list[int]) -> list[dict]:
    """Decode the sampled clips of one token shard for each kappa and score them; one row per (clip, kappa)."""
    from ssmttm.audio import AudioError
    from ssmttm.codec import CodecError
    from ssmttm.data.manifest import read_manifest
    from ssmttm.tokens.store import TokenShard
    from ssmttm.tokens.tokenize import load_clip

    shard = TokenShard(shard_dir)
    if shard.meta["weights_sha256"] != codec.weights_sha256:
        raise CodecError(f"{shard_dir}: tokens were made with weights {shard.meta['weights_sha256'][:12]}, "
                         f"the codec given has {codec.weights_sha256[:12]}")
    shard_id = str(shard.meta.get("shard", Path(shard_dir).name))
    paths = dict(zip(*(read_manifest(manifest)[c] for c in ("clip_id", "audio_path"))))
    base = {"shard": shard_id, "n_codebooks": shard.n_codebooks, "codec": shard.meta["codec"],
            "weights": weights_key, "weights_sha256": codec.weights_sha256}
    rows = []
    for i in logs.progress(sample_clips(len(shard), clips_per_shard, seed, shard_id), desc="ceiling", unit="clip"):
        clip_id = str(shard.index["clip_id"].iloc[i])
        codes = shard.codes(i)
        try:
            if clip_id not in paths:
                raise AudioError(f"clip {clip_id} is not in {manifest}")
            ref = load_clip(codec, paths[clip_id])[0]
            status = "ok"
        except (AudioError, OSError) as exc:
            ref, status = None, f"unreadable audio: {exc}"
        for kappa in kappas:
            row = {**base, "clip_id": clip_id, "kappa": int(kappa), "mel_distance": math.nan, "si_sdr_db": math.nan,
                   "seconds": math.nan if ref is None else ref.shape[-1] / codec.sample_rate, "status": status}
            if kappa > shard.n_codebooks:
                row["status"] = f"skipped: kappa {kappa} > {shard.n_codebooks} codebooks"
            elif ref is not None:
                est = codec.decode(codes[None, :kappa].astype(np.int64))[0, 0].numpy()
                n = min(ref.shape[-1], est.shape[-1])
                row["mel_distance"] = mel_distance(ref[:n], est[:n], codec.sample_rate)
                row["si_sdr_db"] = si_sdr(ref[:n], est[:n])
            rows.append(row)
    for kappa in kappas:
        if kappa > shard.n_codebooks:
            log.warning("kappa %d skipped: the codec has %d codebooks", kappa, shard.n_codebooks)
    return rows


def main(argv: list[str]) -> int | None:
    """``ceiling``: codec re-synthesis quality of one token shard (log-mel distance, SI-SDR per kappa)."""
    p = argparse.ArgumentParser(prog="ssmttm ceiling", description=main.__doc__)
    p.add_argument("--shard", required=True, help="shard id (recorded in the rows)")
    p.add_argument("--tokens", required=True, help="token shard folder results/tokens/<key>/<NN>")
    p.add_argument("--manifest", required=True, help="results/data/manifest.parquet (the clips' audio)")
    p.add_argument("--codec-weights", required=True, help="codec weights receipt results/weights/<key>.json, or a weights file")
    p.add_argument("--out", required=True, help="results/tokens/<key>/ceiling/<NN>.tsv")
    settings.add_arguments(p, CeilingSettings)
    args = p.parse_args(argv)
    cfg = settings.from_args(p, CeilingSettings, args)
    logs.setup()
    from ssmttm.codec import CodecError
    from ssmttm.data.manifest import ManifestError
    from ssmttm.tokens.store import TokenStoreError
    from ssmttm.tokens.tokenize import open_codec
    from ssmttm.weight_cache import MissingWeightError

    try:
        codec, key = open_codec(cfg.codec, args.codec_weights, cfg.device)
        rows = ceiling_rows(args.tokens, args.manifest, codec, key, cfg.clips_per_shard, cfg.seed, cfg.kappas)
        for r in rows:
            r["shard"] = args.shard
    except (CodecError, ManifestError, TokenStoreError, MissingWeightError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    io.write_table(args.out, pd.DataFrame(rows, columns=list(COLUMNS)))
    log.info("ceiling shard %s: %d rows -> %s", args.shard, len(rows), args.out)
    return 0


# --- summary --------------------------------------------------------------------------------------

def _mean_ci(values: pd.Series) -> tuple[float, float]:
    v = values.dropna().to_numpy(np.float64)
    if not len(v):
        return math.nan, math.nan
    ci = 1.96 * float(np.std(v, ddof=1)) / math.sqrt(len(v)) if len(v) > 1 else math.nan
    return float(np.mean(v)), ci


def summarize(paths, out_tsv: str, out_json: str) -> dict:
    """Join per-shard ceiling tables; write per-kappa mean +- 95 % CI to ``out_tsv`` and ``out_json``."""
    paths = list(paths)
    frames = [pd.read_csv(p, sep="\t", dtype={"shard": str, "clip_id": str}, keep_default_na=True) for p in paths]
    frames = [f for f in frames if len(f)]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
    ident = {c: (sorted(set(map(str, df[c]))) if len(df) else []) for c in ("codec", "weights", "weights_sha256")}
    for c, vals in ident.items():
        if len(vals) > 1:
            raise ValueError(f"ceiling tables mix several {c} values: {vals}")
    ident = {c: (v[0] if v else "") for c, v in ident.items()}
    rows, per_kappa = [], {}
    for kappa in sorted(set(int(k) for k in df["kappa"])) if len(df) else []:
        sub = df[df["kappa"].astype(int) == kappa]
        ok = sub[sub["status"] == "ok"]
        mel_m, mel_ci = _mean_ci(ok["mel_distance"])
        sdr_m, sdr_ci = _mean_ci(ok["si_sdr_db"])
        row = {"kappa": kappa, "n": int(len(ok)), "mel_distance_mean": mel_m, "mel_distance_ci95": mel_ci,
               "si_sdr_db_mean": sdr_m, "si_sdr_db_ci95": sdr_ci, "n_skipped": int(len(sub) - len(ok)), **ident}
        rows.append(row)
        per_kappa[str(kappa)] = {k: v for k, v in row.items() if k not in ident and k != "kappa"}
        if not len(ok):
            per_kappa[str(kappa)]["status"] = sorted(set(sub["status"]))[0] if len(sub) else "no rows"
    io.write_table(out_tsv, pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS)))
    report = {**ident, "n_tables": len(paths), "n_clips": int(df["clip_id"].nunique()) if len(df) else 0,
              "kappas": per_kappa, "protocol": PROTOCOL}
    report = _finite(report)
    io.write_json(out_json, report)
    return report


def _finite(obj):
    """NaN -> None for JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def main_summary(argv: list[str]) -> int | None:
    """``ceiling-summary``: join every shard's ceiling table into ceiling.tsv + ceiling.json."""
    p = argparse.ArgumentParser(prog="ssmttm ceiling-summary", description=main_summary.__doc__)
    p.add_argument("--inputs", nargs="*", default=[], help="results/tokens/<key>/ceiling/<NN>.tsv ...")
    p.add_argument("--out-tsv", required=True, help="results/tokens/<key>/ceiling.tsv")
    p.add_argument("--out-json", required=True, help="results/tokens/<key>/ceiling.json")
    args = p.parse_args(argv)
    logs.setup()
    try:
        report = summarize(args.inputs, args.out_tsv, args.out_json)
    except (OSError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    log.info("ceiling summary: %d clips, kappas %s -> %s", report["n_clips"], list(report["kappas"]), args.out_tsv)
    return 0
