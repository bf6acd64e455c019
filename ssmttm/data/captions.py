"""Stage ``captions``: caption the vocal-free clips of one shard.

Inputs: the ``vocals`` stage table of the shard (clip_id, track_id, shard, audio_path, sha256,
status, reason, ...) and the selection's ``candidates.tsv`` (track_id, genres, instruments, moods,
tags, ...; tag lists ";"-joined). Output: ``results/data/captions/NN.tsv`` with columns
:data:`COLUMNS`; ``caption`` is the primary caption (the paper's ``rephrased_caption`` when a
rephrase model is used) and ``captions`` a JSON list of every variant, primary first. The output
file is the per-shard cache: Snakemake reruns the shard only when its inputs or params change.

Rejected input rows pass through as rejected; a clip whose audio is missing or unreadable, or
whose caption comes out empty, is rejected with a reason and the rest of the shard goes on.
Captioners live in :mod:`ssmttm.data.captioners` (registry name -> lazy factory).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import re
from pathlib import Path

from ssmttm import audio as audio_io
from ssmttm import settings
from ssmttm.data.captioners import Captioner, ClipError, ClipInfo, build
from ssmttm.data.options import CaptionsSettings
from ssmttm.data.captioners.tiny import build_tiny_qwen2_audio, build_tiny_text_lm  # noqa: F401 (re-export)
from ssmttm.weight_cache import local_path

log = logging.getLogger("ssmttm.captions")

COLUMNS = ["clip_id", "track_id", "shard", "caption", "captions", "captioner", "status", "reason"]
CLIP_COLUMNS = ("clip_id", "track_id", "audio_path", "status")
TAG_COLUMNS = ("genres", "instruments", "moods")
# raw_30s_cleantags.tsv tag prefixes (used when candidates.tsv only has the combined `tags` column).
TAG_PREFIXES = {"genre---": "genres", "instrument---": "instruments", "mood/theme---": "moods"}
# Errors that concern one clip only; anything else is a bug or a bad setup and stops the stage.
CLIP_ERRORS = (audio_io.AudioError, ClipError)


def split_list(value) -> tuple[str, ...]:
    """``"rock;pop"`` -> ``("rock", "pop")``; empty / NaN / None -> ``()``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ()
    return tuple(t.strip() for t in str(value).split(";") if t.strip())


def read_table(path: str | Path, required: tuple[str, ...], flag: str):
    """A TSV read as strings (shard "00" stays "00"); missing columns fail naming the flag and file."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {path}: file not found")
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{flag} {path}: missing column(s) {', '.join(missing)} (has: {', '.join(df.columns)})")
    return df


def read_tags(path: str | Path) -> dict[str, dict[str, tuple[str, ...]]]:
    """track_id -> {"genres": (...), "instruments": (...), "moods": (...)} from candidates.tsv."""
    df = read_table(path, ("track_id",), "--candidates")
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for row in df.to_dict("records"):
        tags = {k: split_list(row.get(k)) for k in TAG_COLUMNS}
        if not any(k in df.columns for k in TAG_COLUMNS) and "tags" in df.columns:
            for tag in split_list(row["tags"]):
                for prefix, key in TAG_PREFIXES.items():
                    if tag.startswith(prefix):
                        tags[key] += (tag[len(prefix):],)
        out[str(row["track_id"])] = tags
    return out


def resolve_audio(path: str, table_dir: Path) -> Path:
    """An audio path as written by the vocals stage: absolute, relative to the working directory
    (the Snakemake workflow root), or else relative to the clips table's folder."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    q = table_dir / p
    return q if q.exists() else p


def check_audio(path: Path) -> str | None:
    """None when ``path`` holds readable audio (header only), else a reason naming the file."""
    if not path.is_file():
        return f"{path}: audio file not found"
    try:
        _, _, seconds = audio_io.info(path)
    except audio_io.AudioError as exc:
        return str(exc)
    return None if seconds > 0 else f"{path}: zero-length audio"


def clean_caption(text: str) -> str:
    """One printable line: control characters dropped, whitespace runs collapsed (TSV-safe)."""
    text = "".join(ch if ch.isprintable() or ch.isspace() else " " for ch in str(text))
    return " ".join(text.split())


def clean_captions(captions: list[str]) -> list[str]:
    """Cleaned captions with empties and repeats dropped, order (primary first) kept."""
    return list(dict.fromkeys(c for c in map(clean_caption, captions) if c))


def caption_clips(
    captioner: Captioner, clips: list[ClipInfo], batch_size: int
) -> dict[str, tuple[list[str], str]]:
    """clip_id -> (captions, reason); reason is "" on success.

    Batches go to the captioner whole; when one clip of a batch fails (unreadable audio) the batch
    is retried clip by clip so only that clip is rejected.
    """
    from ssmttm.logs import progress

    results: dict[str, tuple[list[str], str]] = {}
    batches = [clips[i : i + batch_size] for i in range(0, len(clips), batch_size)]
    for batch in progress(batches, desc=f"captions ({captioner.name})", unit="batch"):
        try:
            outs = [(caps, "") for caps in captioner.caption(batch)]
        except CLIP_ERRORS:
            outs = []
            for clip in batch:
                try:
                    outs.append((captioner.caption([clip])[0], ""))
                except CLIP_ERRORS as exc:
                    log.warning("%s: rejected: %s", clip.clip_id, exc)
                    outs.append(([], str(exc)))
        if len(outs) != len(batch):
            raise RuntimeError(f"captioner {captioner.name} returned {len(outs)} results for {len(batch)} clips")
        for clip, (caps, reason) in zip(batch, outs):
            caps = clean_captions(caps)
            results[clip.clip_id] = (caps, reason or ("" if caps else "empty caption"))
    return results


def run(args: argparse.Namespace, cfg: CaptionsSettings) -> dict[str, int]:
    """Caption one shard (files from ``args``, settings ``cfg``) and write ``args.out``; returns counts of
    ok / rejected rows."""
    import pandas as pd

    from ssmttm.io import write_table

    clips_df = read_table(args.clips, CLIP_COLUMNS, "--clips")
    tags = read_tags(args.candidates)
    table_dir = Path(args.clips).parent
    rows: list[dict] = []
    todo: list[ClipInfo] = []
    no_tags = 0
    for rec in clips_df.to_dict("records"):
        row = {
            "clip_id": rec["clip_id"],
            "track_id": rec["track_id"],
            "shard": rec.get("shard") or args.shard,
            "caption": "",
            "captions": "[]",
            "captioner": cfg.captioner,
            "status": "rejected",
            "reason": "",
        }
        rows.append(row)
        if rec["status"] != "ok":
            row["reason"] = rec.get("reason") or f"input status {rec['status']!r}"
            continue
        path = resolve_audio(rec["audio_path"], table_dir)
        bad = check_audio(path)
        if bad:
            row["reason"] = bad
            continue
        t = tags.get(rec["track_id"])
        if t is None:
            no_tags += 1
            t = {k: () for k in TAG_COLUMNS}
        todo.append(ClipInfo(rec["clip_id"], rec["track_id"], row["shard"], str(path), **t))
    if no_tags:
        log.warning("%d clip(s) have no row in %s; captioned without tags", no_tags, args.candidates)

    results: dict[str, tuple[list[str], str]] = {}
    if todo:
        opts = dataclasses.replace(
            cfg,
            # a weights receipt (results/weights/<name>.json) or a local folder
            model_path=str(local_path(cfg.model_path)) if cfg.model_path else None,
            rephrase_path=str(local_path(cfg.rephrase_path)) if cfg.rephrase_path else None,
        )
        results = caption_clips(build(opts), todo, cfg.batch_size)
    for row in rows:
        if row["clip_id"] in results:
            caps, reason = results[row["clip_id"]]
            if caps:
                row.update(caption=caps[0], captions=json.dumps(caps, ensure_ascii=False), status="ok")
            else:
                row["reason"] = reason
    write_table(args.out, pd.DataFrame(rows, columns=COLUMNS))
    counts = {"ok": sum(r["status"] == "ok" for r in rows), "rejected": sum(r["status"] != "ok" for r in rows)}
    log.info("shard %s: %d captioned, %d rejected -> %s", args.shard, counts["ok"], counts["rejected"], args.out)
    return counts


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssmttm captions", description="Caption the vocal-free clips of one shard.")
    p.add_argument("--shard", required=True, help="two-digit shard id (MTG-Jamendo tar NN)")
    p.add_argument("--clips", required=True, help="vocals stage table of the shard (TSV)")
    p.add_argument("--candidates", required=True, help="selection candidates.tsv (track_id, genres, instruments, moods)")
    p.add_argument("--model-path", nargs="?", default=None,
                   help="qwen2-audio: local Qwen2-Audio folder or its weights receipt (config key "
                        "captions.qwen2_audio.model names it); no value = none")
    p.add_argument("--rephrase-path", nargs="?", default=None,
                   help="qwen2-audio: local causal text LM folder or its weights receipt (config key "
                        "captions.qwen2_audio.rephrase_model); no value = no rephrase")
    p.add_argument("--out", required=True, help="output captions TSV (results/data/captions/NN.tsv)")
    settings.add_arguments(p, CaptionsSettings)
    return p


def main(argv: list[str]) -> int:
    from ssmttm.logs import setup

    p = parser()
    args = p.parse_args(argv)
    cfg = settings.from_args(p, CaptionsSettings, args, model_path=args.model_path, rephrase_path=args.rephrase_path)
    if not re.fullmatch(r"\d{2}", args.shard):
        p.error(f"--shard must be two digits (00..99), got {args.shard!r}")
    if not args.out.endswith(".tsv"):
        p.error(f"--out must be a .tsv file, got {args.out!r}")
    if cfg.captioner == "qwen2-audio" and not cfg.model_path:
        p.error("--model-path is required with --captioner qwen2-audio")
    setup()
    run(args, cfg)
    return 0
