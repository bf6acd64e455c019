"""Metadata filter, step 1 of filtering: which tracks become clip candidates.

Audio validity (decodes, long enough, not silent) is checked later, per shard, by ``segment``.
Rules, applied in this order; a rejected track is listed once, with its FIRST failing rule:

1. ``malformed metadata``  the raw_30s_cleantags.tsv row could not be parsed;
2. ``shard not selected``  the track's tar is not among this run's shards (``--shards N`` = tars
   00..N-1); not an error, counted separately;
3. ``too short``           duration < ``--min-seconds`` (or no whole clip when ``--position all``);
4. ``song describer``      the track is in the Song Describer Dataset: the paper's 457 h excludes
   its 706 tracks so evaluation never overlaps training (``--keep-song-describer`` keeps them);
5. ``no licence record`` / ``licence not allowed``  from the licence audit's ``allowed`` column.

Planned clips: one per track (``center``/``start``/``random``), or floor(seconds / clip_seconds) for
``all``. docs/reference.md §2: 55,701 tracks - 706 SDD = 54,995 clips x 30 s = 458.3 h.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import pandas as pd

from ssmttm import io, logs
from ssmttm.constants import JAMENDO_N_TARS
from ssmttm.data.jamendo import AUDIO_PATH_RE, read_song_describer, read_tracks
from ssmttm.data.licenses import UNPARSABLE

log = logging.getLogger("ssmttm.select")

POSITIONS = ("center", "start", "random", "all")
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
    """Rejected rows for unparsable metadata lines, keeping whatever id/path the raw text shows."""
    rows = []
    for p in problems:
        fields = p.raw.split("\t")
        tid = fields[0].strip() if fields else ""
        path = fields[3].strip() if len(fields) > 3 else ""
        m = AUDIO_PATH_RE.match(path)
        rows.append({"track_id": tid, "path": path, "shard": m.group(1) if m else "",
                     "stage": "select", "reason": "malformed metadata", "detail": f"line {p.line}: {p.reason}"})
    return rows


def select(
    tracks: pd.DataFrame,
    problems: list,
    licences: pd.DataFrame,
    sdd: set[int],
    shards: list[str],
    min_seconds: float,
    clip_seconds: float,
    position: str,
    exclude_song_describer: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Apply the rules (module docstring) -> (candidates, rejected, report)."""
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
        reject(df["track_num"].isin(sdd), "song describer", "evaluation track (Song Describer Dataset)")
    no_record = df["licence_reason"].isna() | (df["licence"] == "unknown")
    lic_reason = df["licence_reason"].fillna("").astype(str)
    unparsable = no_record & lic_reason.str.startswith(UNPARSABLE)
    reject(unparsable, UNPARSABLE, lic_reason)
    reject(no_record, "no licence record", "track absent from audio_licenses.txt")
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
        "n_song_describer_ids": len(sdd),
        "per_licence": {k: int(v) for k, v in sorted(cand["licence"].value_counts().items())},
    }
    return cand, rej, report


def run(args) -> dict:
    """Read the inputs named by the CLI flags, select, and write candidates/rejected/report."""
    tracks, problems = read_tracks(args.tracks)
    licences = read_licence_table(args.licenses_table)
    sdd = read_song_describer(args.song_describer)
    shards = [f"{i:02d}" for i in range(args.shards)]
    cand, rej, report = select(tracks, problems, licences, sdd, shards, args.min_seconds, args.clip_seconds,
                               args.position, not args.keep_song_describer)
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
    p.add_argument("--tracks", type=Path, required=True, help="raw_30s_cleantags.tsv")
    p.add_argument("--licenses-table", type=Path, required=True, help="tracks.tsv of the licenses stage")
    p.add_argument("--song-describer", type=Path, required=True, help="Song Describer csv")
    p.add_argument("--shards", type=int, required=True, help=f"use tars 00..N-1 (1..{JAMENDO_N_TARS})")
    p.add_argument("--min-seconds", type=float, default=30.0)
    p.add_argument("--clip-seconds", type=float, default=30.0)
    p.add_argument("--position", choices=POSITIONS, default="center")
    p.add_argument("--keep-song-describer", action="store_true", help="do not exclude Song Describer tracks")
    p.add_argument("--out-dir", type=Path, required=True)
    args = p.parse_args(argv)
    logs.setup()
    if not 1 <= args.shards <= JAMENDO_N_TARS:
        p.error(f"--shards: {args.shards} is outside 1..{JAMENDO_N_TARS}")
    if not (math.isfinite(args.clip_seconds) and args.clip_seconds > 0):
        p.error(f"--clip-seconds: must be > 0, got {args.clip_seconds}")
    if not (math.isfinite(args.min_seconds) and args.min_seconds >= 0):
        p.error(f"--min-seconds: must be >= 0, got {args.min_seconds}")
    for flag, path in (("--tracks", args.tracks), ("--licenses-table", args.licenses_table),
                       ("--song-describer", args.song_describer)):
        if not path.is_file():
            p.error(f"{flag}: no such file {path}")
    try:
        run(args)
    except ValueError as exc:  # a wrong input file (header, columns): name it and stop
        log.error("%s", exc)
        return 2
    return 0
