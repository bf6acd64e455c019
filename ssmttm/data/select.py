"""Metadata filter, step 1 of filtering: which tracks become clip candidates.

Audio validity (decodes, long enough, not silent) is checked later, per shard, by ``segment``.
Rules, applied in this order; a rejected track is listed once, with its FIRST failing rule:

1. ``malformed metadata``  the source's track row could not be parsed (MTG-Jamendo: raw_30s_cleantags.tsv);
2. ``shard not selected``  the track's shard is not among this run's shards (``--shards N`` = shards
   00..N-1); not an error, counted separately;
3. ``too short``           duration < ``--min-seconds`` (or no whole clip when ``--position all``);
4. held out               an evaluation track of the source (its ``held_out_reason``; MTG-Jamendo:
   ``song describer``, the Song Describer Dataset: the paper's 457 h excludes its 706 tracks so
   evaluation never overlaps training); ``--exclude-song-describer false`` keeps them;
5. ``no licence record`` / ``licence not allowed``  from the licence audit's ``allowed`` column.

The tracks and the held-out ids come from the dataset source (``--source-kind``, config key
``source.kind``), which reads the metadata files handed over as ``--metadata KEY=PATH``.

Planned clips: one per track (``center``/``start``/``random``), or floor(seconds / clip_seconds) for
``all``. docs/reference.md §2: 55,701 tracks - 706 SDD = 54,995 clips x 30 s = 458.3 h.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import pandas as pd

from ssmttm import io, logs, settings
from ssmttm.data.licenses import UNPARSABLE
from ssmttm.data.options import SelectSettings, SourceSettings
from ssmttm.data.sources import (
    DatasetSource, SourceFormatError, add_metadata_argument, get_source, metadata_from_args,
)

log = logging.getLogger("ssmttm.select")

CANDIDATE_COLUMNS = (
    "track_id", "track_num", "shard", "path", "seconds", "licence", "genres", "instruments", "moods",
    "tags", "n_clips_planned",
)
REJECTED_COLUMNS = ("track_id", "path", "shard", "stage", "reason", "detail")
NOT_SELECTED = "shard not selected"
LICENCE_TABLE_COLUMNS = ("track_id", "licence", "allowed", "reason")


def planned_clips(seconds: pd.Series, clip_seconds: float, position: str) -> pd.Series:
    """Clips planned per track: floor(seconds / clip_seconds) for ``all``, else 1 (int64)."""
    if position == "all":
        return (seconds // clip_seconds).astype("int64")
    return pd.Series(1, index=seconds.index, dtype="int64")


def read_licence_table(path: str | Path) -> pd.DataFrame:
    """The licence audit's tracks.tsv -> track_id, licence, allowed (bool), reason."""
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in LICENCE_TABLE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: licence table lacks column(s) {missing} (is it the licenses stage's tracks.tsv?)")
    bad = sorted(set(df["allowed"]) - {"True", "False"})
    if bad:
        raise ValueError(f"{path}: column 'allowed' holds {bad[:5]}, expected True/False")
    out = df[list(LICENCE_TABLE_COLUMNS)].copy()
    out["allowed"] = out["allowed"] == "True"
    return out


def _malformed_rows(problems) -> list[dict]:
    """Rejected rows for unparsable metadata lines, keeping whatever id/path/shard the row still shows."""
    return [{"track_id": p.track_id, "path": p.path, "shard": p.shard, "stage": "select",
             "reason": "malformed metadata", "detail": f"line {p.line}: {p.reason}"} for p in problems]


def select(
    tracks: pd.DataFrame,
    problems: list,
    licences: pd.DataFrame,
    held_out: set[str],
    shards: list[str],
    min_seconds: float,
    clip_seconds: float,
    position: str,
    exclude_song_describer: bool,
    held_out_reason: tuple[str, str] = ("held out", "evaluation track of the dataset"),
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Apply the rules (module docstring) -> (candidates, rejected, report).

    ``tracks`` / ``problems``: the source's ``list_tracks()``; ``held_out``: the ids its
    ``held_out()`` names, rejected with ``held_out_reason`` (reason, detail) when ``exclude_song_describer``.
    """
    df = tracks.merge(licences.rename(columns={"reason": "licence_reason"}), on="track_id", how="left")
    df["licence"] = df["licence"].fillna("unknown")
    df["allowed"] = df["allowed"].fillna(False).astype(bool)
    df["n_clips_planned"] = planned_clips(df["seconds"], clip_seconds, position)
    reason = pd.Series("", index=df.index, dtype=object)
    detail = pd.Series("", index=df.index, dtype=object)

    def reject(mask: pd.Series, why: str, what: pd.Series | str) -> None:
        m = mask & (reason == "")
        reason[m] = why
        detail[m] = what[m] if isinstance(what, pd.Series) else what

    reject(~df["shard"].isin(shards), NOT_SELECTED, "shard " + df["shard"] + f" not in 00..{len(shards) - 1:02d}")
    secs = df["seconds"].map(lambda s: f"{s:g} s")
    reject(df["seconds"] < min_seconds, "too short", secs + f" < {min_seconds:g} s")
    reject(df["n_clips_planned"] < 1, "too short", secs + f" holds no whole {clip_seconds:g} s clip")
    if exclude_song_describer:
        reject(df["track_id"].isin(held_out), *held_out_reason)
    no_record = df["licence_reason"].isna() | (df["licence"] == "unknown")
    lic_reason = df["licence_reason"].fillna("").astype(str)
    unparsable = no_record & lic_reason.str.startswith(UNPARSABLE)
    reject(unparsable, UNPARSABLE, lic_reason)
    reject(no_record, "no licence record", "the source has no licence record of the track")
    reject(~df["allowed"], "licence not allowed", df["licence_reason"].fillna("").astype(str))

    ok = reason == ""
    cand = df.loc[ok, list(CANDIDATE_COLUMNS)].sort_values("track_num", kind="stable").reset_index(drop=True)
    rej = df.loc[~ok, ["track_id", "path", "shard"]].assign(stage="select", reason=reason[~ok], detail=detail[~ok])
    rej = pd.concat([pd.DataFrame(_malformed_rows(problems), columns=list(REJECTED_COLUMNS)), rej],
                    ignore_index=True)[list(REJECTED_COLUMNS)]
    counts = rej["reason"].value_counts().to_dict()
    n_clips = int(cand["n_clips_planned"].sum())
    report = {
        "n_rows": len(tracks) + len(problems),
        "n_candidates": len(cand),
        "n_shard_not_selected": int(counts.pop(NOT_SELECTED, 0)),
        "rejected": {k: int(v) for k, v in sorted(counts.items())},
        "n_rejected": int(sum(counts.values())),
        "planned_clips": n_clips,
        "planned_hours": round(n_clips * clip_seconds / 3600, 4),
        "candidate_track_hours": round(float(cand["seconds"].sum()) / 3600, 4),
        "clip_seconds": clip_seconds, "position": position, "min_seconds": min_seconds,
        "shards": len(shards), "exclude_song_describer": exclude_song_describer,
        "n_held_out_ids": len(held_out),
        "per_licence": {k: int(v) for k, v in sorted(cand["licence"].value_counts().items())},
    }
    return cand, rej, report


def run(args, cfg: SelectSettings, source: DatasetSource, files) -> dict:
    """Read ``source``'s metadata ``files`` and the licence table, select with ``cfg``, and write
    candidates/rejected/report into ``args.out_dir``."""
    tracks, problems = source.list_tracks(files)
    licences = read_licence_table(args.licenses_table)
    held_out = source.held_out(files, tracks)
    shards = [f"{i:02d}" for i in range(args.shards)]
    cand, rej, report = select(tracks, problems, licences, held_out, shards, cfg.min_seconds, cfg.clip_seconds,
                               cfg.position, cfg.exclude_song_describer, source.held_out_reason)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    io.write_table(args.out_dir / "candidates.tsv", cand)
    io.write_table(args.out_dir / "rejected.tsv", rej)
    io.write_json(args.out_dir / "report.json", report)
    log.info("select: %d candidates, %d clips planned = %.1f h; rejected %s; %d in unselected shards",
             report["n_candidates"], report["planned_clips"], report["planned_hours"], report["rejected"],
             report["n_shard_not_selected"])
    return report


def main(argv: list[str]) -> int | None:
    p = argparse.ArgumentParser(prog="ssmttm select", description=__doc__.split("\n")[0])
    add_metadata_argument(p, "cleantags=raw_30s_cleantags.tsv song_describer=song_describer.csv")
    p.add_argument("--licenses-table", type=Path, required=True, help="tracks.tsv of the licenses stage")
    p.add_argument("--shards", type=int, required=True,
                   help="config key shards: use shards 00..N-1 (at most the source's shard count); the run's "
                        "shard count, which also shapes the DAG")
    p.add_argument("--out-dir", type=Path, required=True)
    settings.add_arguments(p, SelectSettings)
    settings.add_arguments(p, SourceSettings, prefix="source-")
    args = p.parse_args(argv)
    cfg = settings.from_args(p, SelectSettings, args)
    source = get_source(settings.from_args(p, SourceSettings, args, prefix="source-").kind)
    logs.setup()
    if not 1 <= args.shards <= source.n_shards:
        p.error(f"--shards: {args.shards} is outside 1..{source.n_shards} (source {source.name})")
    for flag, value in (("--clip-seconds", cfg.clip_seconds), ("--min-seconds", cfg.min_seconds)):
        if not math.isfinite(value):
            p.error(f"{flag}: must be finite, got {value}")
    files = metadata_from_args(p, source, args.metadata, "tracks", "held_out")
    if not args.licenses_table.is_file():
        p.error(f"--licenses-table: no such file {args.licenses_table}")
    try:
        run(args, cfg, source, files)
    except (ValueError, SourceFormatError) as exc:  # a wrong input file (header, columns): name it and stop
        log.error("%s", exc)
        return 2
    return 0
