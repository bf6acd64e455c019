"""Segment one shard: decode, validate, choose the clip window(s), resample and write FLAC clips.

Input: ``candidates.tsv`` (from ``select``) filtered to one shard, the shard's fetch receipt
(``{"shard", "status": "ok"|"missing", "reason", "tracks": {"NN/123.mp3": "ok"|"<reason>"}}``) and
the unpacked audio at ``<audio-dir>/<path>``, ``path`` being the track's column of the dataset source's
track table (``<shard>/<file>``; MTG-Jamendo: ``NN/<track_num>.mp3``, folder = track_num % 100).
Output: ``<out-dir>/<clip_id>.flac`` (clip_id = ``f"{track_num}_{k:03d}"``) and one TSV row per clip
or per rejected track (:data:`COLUMNS`; clip_id empty for a rejected track, set for a rejected window).
Reasons read ``"<category>: <detail naming the file>"`` (corrupt, too short after decoding, truncated,
silent, non-finite, silent clip, missing, fetch, and the source checks below), so the manifest can
count them by category.

Source checks (config ``segment.checks``, fields of :class:`~ssmttm.data.options.SegmentSettings`):
every row records what the source was (``source_format`` from the file's magic bytes,
``source_channels``, ``source_sample_rate``) and the clip's ``clipped_fraction`` (share of its samples
at ``|x| >= full_scale_level``, measured on the decoded window before downmix and resampling), and
carries a flag for each check it fails (:data:`FLAGS`: ``extension_mismatch`` content is not what
the extension says, ``downmixed`` more than 2 source channels, ``upsampled`` source rate below
``min_source_sample_rate``, ``clipped`` ``clipped_fraction`` above ``max_clipped_fraction``). A flag
rejects the track (the first three) or the clip (``clipped``) only when its ``reject_*`` key is
true; the reason names the check and the value.

The paper's 457 h is one 30 s clip per track (docs/reference.md §2); ``position`` picks which 30 s
(the paper does not say, default ``center``), ``all`` cuts every non-overlapping window instead.

Decoding streams the file block by block and keeps only the samples of the chosen windows, so a
one-hour track never sits in memory whole. The whole file is always decoded, because an MP3 header
can claim the full length of a file that was cut short (libsndfile reports the Xing length); windows
are planned from the header and re-planned (second pass) only when the decoded length differs.
Samples come from sequential decoding, never from seeking, because MP3 seeking is not sample-exact.
"""

from __future__ import annotations

import argparse
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssmttm import audio, settings
from ssmttm.data.options import SegmentSettings
from ssmttm.io import read_json, write_table

log = logging.getLogger("ssmttm.segment")

# What each row records about its source (None where not measured: fetch rejections, unreadable
# headers, windows never decoded). ``source_flags`` is the comma-joined FLAGS it raised, "" for a clean row.
SOURCE_COLUMNS = (
    "source_format", "extension_mismatch", "source_channels", "downmixed", "source_sample_rate",
    "upsampled", "clipped_fraction", "source_flags",
)
FLAGS = ("extension_mismatch", "downmixed", "upsampled", "clipped")
FLAG_CATEGORIES = {f: f.replace("_", " ") for f in FLAGS}  # reason category of a rejection by each check
COLUMNS = [
    "clip_id", "track_id", "track_num", "shard", "source_path", "offset", "seconds",
    "sample_rate", "channels", "status", "reason", "stage", "clip_path",
    *SOURCE_COLUMNS,
]
POSITIONS = ("start", "center", "random", "all")
# A decoded track shorter than this fraction of its TSV DURATION is a truncated download/file.
MIN_DECODED_FRACTION = 0.9
BLOCK_FRAMES = 1 << 18  # ~6 s at 44.1 kHz per decode block
CLIP_NAME = re.compile(r"^\d+_\d{3}\.flac$")
TMP_NAME = re.compile(r"^\..*\.tmp\.flac$")


def clip_starts(total_frames: int, clip_frames: int, position: str, seed: int, track_num: int) -> list[int]:
    """Start frames of the clip windows for a track of ``total_frames`` (empty if it is too short).

    ``random`` draws from a generator seeded by ``(seed, track_num)`` only, so a track's window does
    not depend on which other tracks are in the shard or on the processing order.
    """
    if clip_frames <= 0 or total_frames < clip_frames:
        return []
    slack = total_frames - clip_frames
    if position == "start":
        return [0]
    if position == "center":
        return [slack // 2]
    if position == "random":
        rng = np.random.default_rng([int(seed), int(track_num)])
        return [int(rng.integers(0, slack + 1))]
    if position == "all":
        return [k * clip_frames for k in range(total_frames // clip_frames)]
    raise ValueError(f"unknown position {position!r} (known: {POSITIONS})")


@dataclass
class Decoded:
    """Result of one streaming decode: true length, whole-track level stats and window samples."""

    sample_rate: int
    frames: int
    channels: int
    finite: bool
    rms_dbfs: float
    windows: dict[int, np.ndarray]  # start frame -> [C, clip_frames] float32


def decode_windows(path: Path, starts: list[int], clip_frames: int, block: int = BLOCK_FRAMES) -> Decoded:
    """Decode the whole file sequentially, keeping the samples of windows ``[s, s + clip_frames)``.

    Windows that run past the decoded end come back shorter. Raises AudioError naming the file.
    """
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            sr, ch = int(f.samplerate), int(f.channels)
            bufs = {s: np.zeros((clip_frames, ch), dtype=np.float32) for s in starts}
            pos, sumsq, finite = 0, 0.0, True
            while True:
                x = f.read(frames=block, dtype="float32", always_2d=True)
                n = len(x)
                if n == 0:
                    break
                if finite and not np.all(np.isfinite(x)):
                    finite = False
                if finite:
                    sumsq += float(np.sum(np.square(x, dtype=np.float64)))
                for s, buf in bufs.items():
                    lo, hi = max(s, pos), min(s + clip_frames, pos + n)
                    if lo < hi:
                        buf[lo - s:hi - s] = x[lo - pos:hi - pos]
                pos += n
    except Exception as exc:  # libsndfile raises RuntimeError / LibsndfileError mid-stream too
        raise audio.AudioError(f"{path}: cannot decode audio ({exc})") from exc
    if pos == 0:
        raise audio.AudioError(f"{path}: decodes to zero samples")
    rms = np.sqrt(sumsq / (pos * ch)) if finite else float("nan")
    level = 20.0 * np.log10(rms) if finite and rms > 0 else float("-inf")
    windows = {s: np.ascontiguousarray(b[: max(0, min(clip_frames, pos - s))].T) for s, b in bufs.items()}
    return Decoded(sr, pos, ch, finite, float(level), windows)


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad ``x: [C, M]`` to exactly ``n`` samples (resampling rounds by a sample)."""
    if x.shape[1] >= n:
        return x[:, :n]
    return np.pad(x, ((0, 0), (0, n - x.shape[1])))


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _reject(base: dict, reason: str, stage: str) -> dict:
    return {**base, "status": "rejected", "reason": reason, "stage": stage}


def _flags(row: dict, clipped: bool = False) -> str:
    """The comma-joined FLAGS that ``row``'s source columns (and ``clipped``) raise; "" when clean."""
    return ",".join(f for f in FLAGS if (clipped if f == "clipped" else row.get(f) is True))


def source_checks(path: Path, fmt: str, sr: int, channels: int, checks: SegmentSettings) -> tuple[dict, str | None]:
    """Track-level source columns of ``path`` (content ``fmt``, header rate ``sr``, ``channels``) and
    the reason to reject it, or None. In FLAGS order: the first check set to reject gives the reason."""
    cols = {
        "source_format": fmt, "extension_mismatch": audio.extension_mismatch(path, fmt),
        "source_channels": channels, "downmixed": channels > 2,
        "source_sample_rate": sr, "upsampled": sr < checks.min_source_sample_rate,
    }
    ext = path.suffix.lower() or "(no extension)"
    why = None
    if cols["extension_mismatch"] and checks.reject_extension_mismatch:
        why = (f"extension mismatch: {path} holds {fmt} data, not what {ext} promises "
               "(segment.checks.reject_extension_mismatch)")
    elif cols["downmixed"] and checks.reject_downmixed:
        why = f"downmixed: {path} has {channels} channels (> 2) (segment.checks.reject_downmixed)"
    elif cols["upsampled"] and checks.reject_upsampled:
        why = (f"upsampled: {path} is {sr} Hz (< segment.checks.min_source_sample_rate "
               f"{checks.min_source_sample_rate} Hz) (segment.checks.reject_upsampled)")
    return cols, why


def segment_track(row: dict, path: Path, out_dir: Path, cfg: SegmentSettings) -> list[dict]:
    """Cut the clips of one track that passed the fetch checks; one row per clip or one rejection."""
    track_num = int(row["track_num"])
    base = {
        "clip_id": "", "track_id": row["track_id"], "track_num": track_num, "shard": row["shard"],
        "source_path": row["path"], "offset": None, "seconds": None, "sample_rate": None,
        "channels": None, "status": "", "reason": "", "stage": "segment", "clip_path": "",
        **{c: None for c in SOURCE_COLUMNS},
    }
    if not path.is_file():
        return [_reject(base, f"missing: {path} not found after fetch", "segment")]
    try:
        fmt = audio.sniff_format(path)
        base.update(source_format=fmt, extension_mismatch=audio.extension_mismatch(path, fmt))
        base["source_flags"] = _flags(base)  # known even when the header turns out unreadable
        sr, channels, header_s = audio.info(path)
        cols, why = source_checks(path, fmt, sr, channels, cfg)
        base.update(cols)
        base["source_flags"] = _flags(base)
        if why is not None:
            return [_reject(base, why, "segment")]
        clip_frames = int(round(cfg.clip_seconds * sr))
        planned = clip_starts(int(round(header_s * sr)), clip_frames, cfg.position, cfg.seed, track_num)
        dec = decode_windows(path, planned, clip_frames)
    except audio.AudioError as exc:
        return [_reject(base, f"corrupt: {exc}", "segment")]
    decoded_s = dec.frames / dec.sample_rate
    # A cut file still carries its full-length header (MP3 headers lie): decoding far less than the
    # header declares is truncation, whatever the clip length; a complete file that is simply short
    # is "too short"; a complete file much shorter than its metadata says is truncated upstream.
    if np.isfinite(header_s) and decoded_s < MIN_DECODED_FRACTION * header_s:
        return [_reject(base, f"truncated: decoded {decoded_s:.1f} s of the {header_s:.1f} s its header declares ({path})", "segment")]
    if dec.frames < clip_frames:
        return [_reject(base, f"too short after decoding: {decoded_s:.1f} s < {cfg.clip_seconds:g} s clip ({path})", "segment")]
    tsv_s = _as_float(row.get("seconds"))
    if np.isfinite(tsv_s) and decoded_s < MIN_DECODED_FRACTION * tsv_s:
        return [_reject(base, f"truncated: decoded {decoded_s:.1f} s of {tsv_s:.1f} s listed in metadata ({path})", "segment")]
    if not dec.finite:
        return [_reject(base, f"non-finite: {path} decodes to NaN/inf samples", "segment")]
    if dec.rms_dbfs < cfg.silence_dbfs:
        return [_reject(base, f"silent: {path} (RMS {dec.rms_dbfs:.1f} dBFS < {cfg.silence_dbfs} dBFS)", "segment")]

    starts = clip_starts(dec.frames, clip_frames, cfg.position, cfg.seed, track_num)
    if starts != planned:  # header length was wrong: decode again for the re-planned windows
        try:
            dec = decode_windows(path, starts, clip_frames)
        except audio.AudioError as exc:
            return [_reject(base, f"corrupt: {exc}", "segment")]
    n_out = int(round(cfg.clip_seconds * cfg.sample_rate))
    rows = []
    for k, s in enumerate(starts):
        clip_id = f"{track_num}_{k:03d}"
        clip_path = out_dir / f"{clip_id}.flac"
        offset = round(s / dec.sample_rate, 6)
        r = {**base, "clip_id": clip_id, "offset": offset, "seconds": cfg.clip_seconds,
             "sample_rate": cfg.sample_rate, "channels": cfg.channels}
        x = dec.windows[s]
        if x.shape[1] < clip_frames:  # file ended early on the second pass (unstable decoder)
            rows.append(_reject(r, f"corrupt: {path}: window at {offset:.2f} s runs past the decoded end", "segment"))
            continue
        # Clipping is measured on the decoded samples, before downmix and resampling smooth it away.
        frac = audio.clipped_fraction(x, cfg.full_scale_level)
        clipped = frac > cfg.max_clipped_fraction
        r.update(clipped_fraction=frac, source_flags=_flags(r, clipped))
        if clipped and cfg.reject_clipped:
            rows.append(_reject(r, f"clipped: {path} clip {clip_id} at {offset:.2f} s has {frac:.2%} of its samples at "
                                   f"|x| >= {cfg.full_scale_level:g} of full scale (> segment.checks."
                                   f"max_clipped_fraction {cfg.max_clipped_fraction:.2%}; "
                                   f"segment.checks.reject_clipped)", "segment"))
            continue
        x = _fit_length(audio.resample(audio.to_channels(x, cfg.channels), dec.sample_rate, cfg.sample_rate), n_out)
        try:
            audio.check_usable(x, f"{path} clip {clip_id} at {offset:.2f} s", cfg.silence_dbfs)
        except audio.AudioError as exc:
            kind = "silent clip" if "silent" in str(exc) else "non-finite clip"
            rows.append(_reject(r, f"{kind}: {exc}", "segment"))
            continue
        audio.write(clip_path, x, cfg.sample_rate)
        rows.append({**r, "status": "ok", "clip_path": str(clip_path)})
    return rows


def load_candidates(path: str | Path, shard: str) -> list[dict]:
    """Rows of ``candidates.tsv`` whose shard is ``shard`` (compared as integers: "03" == 3)."""
    import pandas as pd

    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = {"track_id", "track_num", "shard", "path", "seconds"} - set(df.columns)
    if missing:
        raise ValueError(f"--candidates {path}: missing columns {sorted(missing)}")
    want = int(shard)
    keep = [int(s) == want for s in df["shard"]]
    out = df[keep].to_dict("records")
    for r in out:
        r["shard"] = f"{want:02d}"
    return out


def read_receipt(path: str | Path) -> dict:
    """The fetch receipt of one shard; fails fast (ValueError naming the file) when malformed."""
    rec = read_json(path)
    if not isinstance(rec, dict) or "status" not in rec:
        raise ValueError(f"--receipt {path}: not a fetch receipt (needs keys shard, status, tracks)")
    if not isinstance(rec.get("tracks", {}), dict):
        raise ValueError(f"--receipt {path}: 'tracks' must map <shard>/<file> to 'ok' or a reason")
    return rec


def fetch_rejection(row: dict, receipt: dict) -> str | None:
    """Reason a track never arrived (missing tar, bad hash, absent from the tar), else None."""
    if receipt.get("status") != "ok":
        return f"fetch: shard {row['shard']} {receipt.get('status')}: {receipt.get('reason') or 'no reason given'}"
    state = receipt.get("tracks", {}).get(row["path"])
    if state is None:
        return f"fetch: {row['path']} not in the fetch receipt of shard {row['shard']}"
    if state != "ok":
        return f"fetch: {row['path']}: {state}"
    return None


def _clean_stale(out_dir: Path, keep: set[str]) -> None:
    """Remove clip files of an earlier run that this run did not write (clip names only)."""
    for p in out_dir.iterdir():
        if p.is_file() and (TMP_NAME.match(p.name) or (CLIP_NAME.match(p.name) and p.name not in keep)):
            log.info("removing stale %s", p)
            p.unlink()


def segment_shard(
    shard: str, candidates: str | Path, receipt: str | Path, audio_dir: str | Path,
    out_dir: str | Path, table: str | Path, cfg: SegmentSettings,
):
    """Segment every candidate of ``shard``; write the clips and the table; return the table."""
    import pandas as pd

    from ssmttm.logs import progress

    out_dir, audio_dir = Path(out_dir), Path(audio_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows_in = load_candidates(candidates, shard)
    rec = read_receipt(receipt)
    rows: list[dict] = []
    for row in progress(rows_in, desc=f"segment {shard}", unit="track"):
        reason = fetch_rejection(row, rec)
        if reason is not None:
            rows.append({
                **{c: None for c in COLUMNS}, "clip_id": "", "track_id": row["track_id"],
                "track_num": int(row["track_num"]), "shard": row["shard"], "source_path": row["path"],
                "status": "rejected", "reason": reason, "stage": "fetch", "clip_path": "",
            })
            continue
        rows.extend(segment_track(row, audio_dir / row["path"], out_dir, cfg))
    for r in rows:
        if r["status"] == "rejected":
            log.warning("%s %s: %s", r["track_id"], r["clip_id"] or "(track)", r["reason"])
        elif r["source_flags"]:
            log.info("%s %s: kept, flagged %s (%s)", r["track_id"], r["clip_id"], r["source_flags"], r["source_path"])
    _clean_stale(out_dir, {Path(r["clip_path"]).name for r in rows if r["status"] == "ok"})
    df = pd.DataFrame(rows, columns=COLUMNS)
    write_table(table, df)
    n_ok = int((df["status"] == "ok").sum()) if len(df) else 0
    log.info("shard %s: %d tracks, %d clips written, %d rejected rows", shard, len(rows_in), n_ok, len(df) - n_ok)
    return df


def main(argv: list[str]) -> int | None:
    from ssmttm.logs import setup

    p = argparse.ArgumentParser(prog="ssmttm segment", description=__doc__.split("\n")[0])
    p.add_argument("--shard", required=True, help="two-digit shard id (MTG-Jamendo: tar raw_30s_audio-NN.tar)")
    p.add_argument("--candidates", required=True, help="candidates.tsv from the select stage")
    p.add_argument("--receipt", required=True, help="fetch receipt JSON of this shard")
    p.add_argument("--audio-dir", required=True, help="folder holding <shard>/<file> (the fetch stage's out dir)")
    p.add_argument("--out-dir", required=True, help="folder for <clip_id>.flac")
    p.add_argument("--table", required=True, help="output TSV, one row per clip or rejected track")
    settings.add_arguments(p, SegmentSettings)
    args = p.parse_args(argv)
    cfg = settings.from_args(p, SegmentSettings, args)
    setup()
    if not re.fullmatch(r"\d{1,2}", args.shard):
        p.error(f"--shard must be a shard id like 07, got {args.shard!r}")
    for flag, value in (("--candidates", args.candidates), ("--receipt", args.receipt)):
        if not Path(value).is_file():
            p.error(f"{flag}: {value} does not exist")
    segment_shard(f"{int(args.shard):02d}", args.candidates, args.receipt, args.audio_dir,
                  args.out_dir, args.table, cfg)
    return 0
