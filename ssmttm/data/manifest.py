"""The clip manifest: join every shard's stage tables into one schema-checked parquet file.

Inputs (contracts in docs/ARCHITECTURE.md): the selection (candidates.tsv, select rejected.tsv),
the licence audit's tracks.tsv, and per shard NN: the fetch receipt ``NN.json``, the segment table
``clips/NN.tsv``, the vocals table ``novocals/NN.tsv`` and the captions table ``captions/NN.tsv``.
The rule lists every one of these files (``--receipts``, ``--clip-tables``, ...); the shards are the
file names' ``NN``, and each list must name the same shards. A shard whose tar is missing has a
"missing" receipt and empty tables: its tracks are rejected at stage fetch and the rest goes on.

Outputs: ``manifest.parquet`` (one row per clip that survived everything, MANIFEST_COLUMNS, the
schema version in the parquet metadata), ``rejected.tsv`` (every rejected track or clip with its
stage and reason) and ``report.json`` (counts, and per source flag of the segment stage: the
clips and tracks kept with it, the rows rejected by it, and the list of flagged tracks/clips).

Split: by TRACK (all clips of a track share a split), from a hash of (seed, track_id): a track is
``valid`` when its hash falls below ``valid_fraction``. That depends on nothing but the seed and the
track id, so it is the same whatever the shard order, and a track keeps its split when more shards
are added. If that leaves no valid track (tiny runs), the track with the smallest hash is made valid.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

import pandas as pd

from ssmttm import io, logs
from ssmttm.constants import MANIFEST_VERSION
from ssmttm.data.options import ManifestSettings
from ssmttm.data.segment import FLAG_CATEGORIES, FLAGS
from ssmttm.data.select import REJECTED_COLUMNS as SELECT_REJECTED_COLUMNS
from ssmttm.errors import SsmttmError

log = logging.getLogger("ssmttm.manifest")

STR, FLOAT, INT, BOOL = "str", "float", "int", "bool"
# What the segment stage measured about each clip's source (ssmttm.data.segment SOURCE_COLUMNS):
# content format from magic bytes, original channels and rate, share of clipped samples, and the
# comma-joined source_flags (segment FLAGS) it raised, "" for a clean clip.
SOURCE_COLUMNS = {
    "source_format": STR, "extension_mismatch": BOOL, "source_channels": INT, "downmixed": BOOL,
    "source_sample_rate": INT, "upsampled": BOOL, "clipped_fraction": FLOAT, "source_flags": STR,
}
MANIFEST_COLUMNS = {
    "clip_id": STR, "track_id": STR, "shard": STR, "source_path": STR, "offset": FLOAT, "seconds": FLOAT,
    "licence": STR, "caption": STR, "captions": STR, "split": STR, "sha256": STR, "audio_path": STR,
    "sample_rate": INT, "channels": INT, "vocals": STR, "captioner": STR, **SOURCE_COLUMNS,
}
# Written for source columns a caller leaves out (fixtures and benches that build a manifest by hand):
# "not measured" (empty format, 0 channels and rate, no flags), never a missing value.
SOURCE_UNMEASURED = {
    "source_format": "", "extension_mismatch": False, "source_channels": 0, "downmixed": False,
    "source_sample_rate": 0, "upsampled": False, "clipped_fraction": 0.0, "source_flags": "",
}
SPLITS = ("train", "valid")
VERSION_KEY = b"ssmttm.manifest_version"
SCHEMA_KEY = b"ssmttm.manifest_columns"
REJECTED_COLUMNS = ("stage", "track_id", "clip_id", "path", "shard", "reason", "detail")
CLIPS_COLUMNS = ("clip_id", "track_id", "shard", "source_path", "offset", "seconds", "status", "reason", "clip_path",
                 *SOURCE_COLUMNS)
VOCALS_COLUMNS = ("clip_id", "audio_path", "sha256", "status", "reason", "vocals", "model_sha256")
CAPTIONS_COLUMNS = ("clip_id", "caption", "captions", "captioner")


class ManifestError(SsmttmError, ValueError):
    """A manifest file that fails its schema check; the message names the file and the problem."""


def track_unit(seed: int, track_id: str) -> float:
    """Uniform number in [0, 1) from sha256(seed:track_id): the split key of a track."""
    h = hashlib.sha256(f"{seed}:{track_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0 ** 64


def assign_splits(track_ids, valid_fraction: float, seed: int) -> dict[str, str]:
    """{track_id: "train" | "valid"}; see the module docstring for the rule."""
    ids = sorted(set(track_ids))
    u = {t: track_unit(seed, t) for t in ids}
    split = {t: "valid" if u[t] < valid_fraction else "train" for t in ids}
    if valid_fraction > 0 and len(ids) >= 2 and "valid" not in split.values():
        split[min(ids, key=lambda t: (u[t], t))] = "valid"
    return split


def _read_tsv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """A stage table as strings; a missing or empty file is an empty table with ``columns``."""
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame({c: pd.Series(dtype=str) for c in columns})
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing} (expected {list(columns)})")
    return df


def _category(reason: str) -> str:
    """Reason category for counting: the text before the first ':' (details vary per file)."""
    return reason.split(":", 1)[0].strip() or "unspecified"


class _Rejects:
    """Collects rejected rows; a track or clip is rejected once, at the first stage that drops it."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, stage, reason, track_id="", clip_id="", path="", shard="", detail="") -> None:
        self.rows.append({"stage": stage, "track_id": track_id, "clip_id": clip_id, "path": path,
                          "shard": shard, "reason": reason, "detail": detail})

    def frame(self, select_rejected: pd.DataFrame) -> pd.DataFrame:
        sel = select_rejected.reindex(columns=list(REJECTED_COLUMNS), fill_value="")
        sel["stage"] = sel["stage"].replace("", "select")
        return pd.concat([sel, pd.DataFrame(self.rows, columns=list(REJECTED_COLUMNS))], ignore_index=True)


def _fetch_status(receipt_path: Path, shard: str, paths: list[str], rej: _Rejects, tracks: pd.DataFrame) -> set[str]:
    """Candidate paths of ``shard`` that the fetch receipt marks ok; the rest are rejected (fetch)."""
    try:
        receipt = io.read_json(receipt_path)
        status, per_track = receipt.get("status"), receipt.get("tracks") or {}
    except FileNotFoundError:
        status, per_track, receipt = "missing", {}, {"reason": f"no fetch receipt {receipt_path}"}
    except (ValueError, AttributeError) as exc:
        status, per_track, receipt = "missing", {}, {"reason": f"unreadable fetch receipt {receipt_path}: {exc}"}
    ok = set()
    ids = dict(zip(tracks["path"], tracks["track_id"]))
    for p in paths:
        if status != "ok":
            rej.add("fetch", "missing tar", ids[p], path=p, shard=shard, detail=str(receipt.get("reason", "")))
        elif per_track.get(p) == "ok":
            ok.add(p)
        elif p not in per_track:
            rej.add("fetch", "missing from tar", ids[p], path=p, shard=shard, detail=f"{p} not in receipt")
        else:
            rej.add("fetch", _category(str(per_track[p])), ids[p], path=p, shard=shard, detail=str(per_track[p]))
    return ok


def _captions_ok(caption: str, captions: str) -> str:
    """'' when a caption row is usable, else the reason."""
    if not caption.strip():
        return "empty caption"
    try:
        value = json.loads(captions)
    except ValueError:
        return "captions column is not JSON"
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        return "captions column is not a JSON list of strings"
    return ""


_BOOLS = {"True": True, "False": False}


def _source(c: dict) -> dict:
    """The source columns of an ok segment row, typed; ValueError naming the column and value."""
    out = {}
    for col, kind in SOURCE_COLUMNS.items():
        v = c.get(col, "")
        try:
            if kind == BOOL:
                out[col] = _BOOLS[v]
            elif kind == INT:
                out[col] = int(float(v))  # pandas writes an int column with gaps as floats ("2.0")
            elif kind == FLOAT:
                out[col] = float(v)
                if out[col] != out[col] or out[col] in (float("inf"), float("-inf")):
                    raise ValueError
            else:
                out[col] = v
        except (KeyError, ValueError):
            raise ValueError(f"{col} {v!r} is not a {kind}") from None
    if unknown := sorted(set(_flag_list(out["source_flags"])) - set(FLAGS)):
        raise ValueError(f"flags {unknown} not among {list(FLAGS)}")
    return out


def _flag_list(flags: str) -> list[str]:
    return [f for f in flags.split(",") if f]


def join_shard(shard: str, cand: pd.DataFrame, files: dict[str, dict[str, Path]], rej: _Rejects,
               flagged: list[dict] | None = None) -> list[dict]:
    """Rows of manifest candidates (before split/audio checks) for one shard; rejects the rest.
    ``files``: kind (fetch, clips, vocals, captions) -> shard -> that stage's file of the shard.

    Every segment row (kept or rejected) of a fetched track that carries source flags is appended
    to ``flagged`` (track_id, clip_id, shard, source_path, flags) for the data report.
    """
    cand = cand[cand["shard"] == shard]
    ok_paths = _fetch_status(files["fetch"][shard], shard, list(cand["path"]), rej, cand)
    ok_tracks = set(cand.loc[cand["path"].isin(ok_paths), "track_id"])
    clips = _read_tsv(files["clips"][shard], CLIPS_COLUMNS)
    vocals = {r["clip_id"]: r for r in _read_tsv(files["vocals"][shard], VOCALS_COLUMNS).to_dict("records")}
    caps_df = _read_tsv(files["captions"][shard], CAPTIONS_COLUMNS)
    has_status = "status" in caps_df.columns and "reason" in caps_df.columns
    caps = {r["clip_id"]: r for r in caps_df.to_dict("records")}
    rows, seen_tracks, seen_clips, cand_ids = [], set(), set(), set(cand["track_id"])
    for c in clips.to_dict("records"):
        tid, cid = c["track_id"], c["clip_id"]
        if tid not in ok_tracks:
            if tid not in cand_ids:
                rej.add("manifest", "track not among candidates", tid, cid, c["source_path"], shard)
            continue  # a fetch rejection is already recorded for the track
        seen_tracks.add(tid)
        if cid:  # rejected tracks have no clip id
            if cid in seen_clips:
                rej.add("manifest", "duplicate clip id", tid, cid, c["source_path"], shard)
                continue
            seen_clips.add(cid)
        if flagged is not None and _flag_list(c["source_flags"]):
            flagged.append({"track_id": tid, "clip_id": cid, "shard": shard, "source_path": c["source_path"],
                            "flags": _flag_list(c["source_flags"])})
        if c["status"] != "ok":
            rej.add("segment", _category(c["reason"]), tid, cid, c["source_path"], shard, c["reason"])
            continue
        try:
            offset, seconds = float(c["offset"]), float(c["seconds"])
        except ValueError:
            rej.add("manifest", "bad clip row", tid, cid, c["source_path"], shard,
                    f"offset {c['offset']!r} / seconds {c['seconds']!r} not numbers")
            continue
        try:
            source = _source(c)
        except ValueError as exc:
            rej.add("manifest", "bad clip row", tid, cid, c["source_path"], shard,
                    f"{files['clips'][shard]}: {exc}")
            continue
        if cid not in vocals:
            rej.add("vocals", "no vocals output", tid, cid, c["source_path"], shard)
            continue
        v = vocals[cid]
        if v["status"] != "ok":
            rej.add("vocals", _category(v["reason"]), tid, cid, c["source_path"], shard, v["reason"])
            continue
        if cid not in caps:
            rej.add("captions", "no caption", tid, cid, c["source_path"], shard)
            continue
        k = caps[cid]
        why = (k["reason"] or "rejected") if has_status and k["status"] != "ok" else _captions_ok(k["caption"], k["captions"])
        if why:
            rej.add("captions", _category(why), tid, cid, c["source_path"], shard, why)
            continue
        rows.append({"clip_id": cid, "track_id": tid, "shard": shard, "source_path": c["source_path"],
                     "offset": offset, "seconds": seconds, "caption": k["caption"],
                     "captions": k["captions"], "sha256": v["sha256"], "audio_path": v["audio_path"],
                     "vocals": v["vocals"], "captioner": k["captioner"], **source})
    for r in cand[cand["track_id"].isin(ok_tracks - seen_tracks)].itertuples(index=False):
        rej.add("segment", "no clips produced", r.track_id, path=r.path, shard=shard)
    return rows


def _check_audio(rows: list[dict], rej: _Rejects, verify_sha256: bool) -> list[dict]:
    """Fill sample_rate/channels from each audio header; reject missing/unreadable files (stage manifest)."""
    from ssmttm.audio import AudioError, info

    out = []
    for r in rows:
        try:
            sr, ch, _ = info(r["audio_path"])
            if verify_sha256 or not r["sha256"]:
                digest = io.sha256_file(r["audio_path"])
                if r["sha256"] and digest != r["sha256"]:
                    raise AudioError(f"{r['audio_path']}: sha256 {digest} differs from the vocals table")
                r["sha256"] = digest
        except (AudioError, OSError) as exc:
            rej.add("manifest", "unreadable audio", r["track_id"], r["clip_id"], r["audio_path"], r["shard"], str(exc))
            continue
        out.append({**r, "sample_rate": sr, "channels": ch})
    return out


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """Columns in MANIFEST_COLUMNS order with their dtypes (str / float64 / int64 / bool).

    Source columns left out or empty are written as SOURCE_UNMEASURED.
    """
    df = df.reindex(columns=list(MANIFEST_COLUMNS))
    for c, value in SOURCE_UNMEASURED.items():
        df[c] = df[c].astype(object).where(df[c].notna(), value)
    for c, kind in MANIFEST_COLUMNS.items():
        df[c] = df[c].astype({STR: str, FLOAT: "float64", INT: "int64", BOOL: bool}[kind])
    return df


def write_manifest(path: Path, df: pd.DataFrame) -> None:
    """Write ``df`` as parquet with the schema version and column kinds in the file metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(_typed(df), preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[VERSION_KEY] = str(MANIFEST_VERSION).encode()
    meta[SCHEMA_KEY] = json.dumps(MANIFEST_COLUMNS).encode()
    table = table.replace_schema_metadata(meta)
    with io.atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read and schema-check a manifest; raise ManifestError naming the file and the problem.

    Checks: the format version in the parquet metadata, required columns and their dtypes, no
    missing values, unique clip ids, split values in SPLITS, each track in a single split.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        pf = pq.ParquetFile(path)
        meta = pf.schema_arrow.metadata or {}
        df = pf.read().to_pandas()
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) on non-parquet
        raise ManifestError(f"{path}: not a readable parquet file ({exc})") from exc
    version = meta.get(VERSION_KEY)
    if version is None:
        raise ManifestError(f"{path}: no {VERSION_KEY.decode()} in the parquet metadata (not an ssmttm manifest?)")
    if version.decode() != str(MANIFEST_VERSION):
        raise ManifestError(f"{path}: manifest version {version.decode()}, this code reads version {MANIFEST_VERSION}")
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}")
    checks = {STR: pd.api.types.is_string_dtype, FLOAT: pd.api.types.is_float_dtype,
              INT: pd.api.types.is_integer_dtype, BOOL: pd.api.types.is_bool_dtype}
    for c, kind in MANIFEST_COLUMNS.items():
        if not checks[kind](df[c]):
            raise ManifestError(f"{path}: column {c!r} has dtype {df[c].dtype}, expected {kind}")
        if df[c].isna().any():
            raise ManifestError(f"{path}: column {c!r} has {int(df[c].isna().sum())} missing value(s)")
    dup = df["clip_id"][df["clip_id"].duplicated()]
    if len(dup):
        raise ManifestError(f"{path}: duplicate clip_id(s) {sorted(set(dup))[:5]}")
    bad = sorted(set(df["split"]) - set(SPLITS))
    if bad:
        raise ManifestError(f"{path}: split values {bad} (allowed: {list(SPLITS)})")
    mixed = df.groupby("track_id")["split"].nunique()
    if (mixed > 1).any():
        raise ManifestError(f"{path}: track(s) in both splits: {list(mixed[mixed > 1].index[:5])}")
    return df


def _hours(seconds: pd.Series) -> float:
    return round(float(seconds.sum()) / 3600, 4)


def flag_report(df: pd.DataFrame, flagged: list[dict], rejected: pd.DataFrame) -> tuple[dict, list[dict]]:
    """Per-flag counts and the list of flagged tracks/clips, for report.json.

    Counts per flag: ``clips`` and ``tracks`` kept in the manifest ``df`` with it, ``rejected`` rows
    the segment stage rejected because of it (its reject_* key). The list holds every flagged row of
    the segment tables: ``status`` "kept", or "rejected" with the ``stage``, ``reason`` and ``detail`` that
    dropped it (a flag may be kept at segment and the clip still lost later, e.g. to vocals).
    """
    kept = df[df["source_flags"] != ""]
    per_flag = {}
    seg_reasons = rejected.loc[rejected["stage"] == "segment", "reason"]
    for f in FLAGS:
        has = kept["source_flags"].map(lambda s, f=f: f in _flag_list(s)).astype(bool)
        per_flag[f] = {"clips": int(has.sum()), "tracks": int(kept.loc[has, "track_id"].nunique()),
                       "rejected": int((seg_reasons == FLAG_CATEGORIES[f]).sum())}
    kept_ids = set(df["clip_id"])
    why = {}
    for r in rejected.itertuples(index=False):
        why.setdefault((r.track_id, r.clip_id), (r.stage, r.reason, r.detail))
    items = []
    for item in sorted(flagged, key=lambda r: (r["shard"], r["track_id"], r["clip_id"])):
        if item["clip_id"] and item["clip_id"] in kept_ids:
            items.append({**item, "status": "kept"})
        else:
            stage, reason, detail = why.get((item["track_id"], item["clip_id"]), ("", "", ""))
            items.append({**item, "status": "rejected", "stage": stage, "reason": reason, "detail": detail})
    return per_flag, items


# kind -> (flag, file name of shard NN)
SHARD_FILES = {"fetch": ("--receipts", "{}.json"), "clips": ("--clip-tables", "{}.tsv"),
               "vocals": ("--vocals-tables", "{}.tsv"), "captions": ("--captions-tables", "{}.tsv")}


def shard_files(args) -> dict[str, dict[str, Path]]:
    """kind -> shard -> file, from the per-shard file lists of the command line; ManifestError when a
    name is not ``NN.json`` / ``NN.tsv``, a shard is listed twice, or the lists name different shards."""
    out: dict[str, dict[str, Path]] = {}
    for kind, (flag, pattern) in SHARD_FILES.items():
        out[kind] = {}
        for path in getattr(args, flag[2:].replace("-", "_")):
            shard = path.name[:2]
            if path.name != pattern.format(shard) or not shard.isdigit():
                raise ManifestError(f"{flag} {path}: expected a file named {pattern.format('NN')} (NN: the shard)")
            if shard in out[kind]:
                raise ManifestError(f"{flag}: shard {shard} listed twice ({out[kind][shard]}, {path})")
            out[kind][shard] = path
    shards = set(out["fetch"])
    for kind, (flag, _) in SHARD_FILES.items():
        if set(out[kind]) != shards:
            raise ManifestError(f"{flag} names shards {sorted(out[kind])}, --receipts names {sorted(shards)}: "
                                "every stage's file of every shard is needed")
    return out


def build(args, cfg: ManifestSettings) -> dict:
    """Join the files named by ``args``, split by ``cfg``, write manifest.parquet, rejected.tsv and
    report.json; returns the report."""
    cand = pd.read_csv(args.candidates, sep="\t", dtype=str, keep_default_na=False)
    sel_rej = _read_tsv(args.select_rejected, SELECT_REJECTED_COLUMNS[:5])
    lic = pd.read_csv(args.licenses_table, sep="\t", dtype=str, keep_default_na=False)
    for name, df, cols in (("--candidates", cand, ("track_id", "shard", "path")),
                           ("--licenses-table", lic, ("track_id", "licence", "allowed"))):
        if missing := [c for c in cols if c not in df.columns]:
            raise ManifestError(f"{name}: missing column(s) {missing}")
    files = shard_files(args)
    shards = sorted(files["fetch"])
    rej = _Rejects()
    rows, flagged = [], []
    for shard in logs.progress(shards, desc="manifest shards"):
        rows += join_shard(shard, cand, files, rej, flagged)
    extra = sorted(set(cand["shard"]) - set(shards))
    if extra:
        log.warning("candidates hold shards %s whose files were not passed; their tracks are left out", extra)
    licence = dict(zip(lic["track_id"], lic["licence"]))
    allowed = dict(zip(lic["track_id"], lic["allowed"] == "True"))
    kept = []
    for r in rows:  # defence in depth: the licence gate is re-applied against the audit table
        if not allowed.get(r["track_id"], False):
            rej.add("manifest", "licence not allowed", r["track_id"], r["clip_id"], r["source_path"], r["shard"],
                    f"licence {licence.get(r['track_id'], 'unknown')}")
            continue
        kept.append({**r, "licence": licence[r["track_id"]]})
    kept = _check_audio(kept, rej, cfg.verify_sha256)
    df = pd.DataFrame(kept, columns=[c for c in MANIFEST_COLUMNS if c != "split"])
    split = assign_splits(df["track_id"], cfg.valid_fraction, cfg.seed)
    df["split"] = df["track_id"].map(split)
    df = _typed(df).sort_values("clip_id", kind="stable").reset_index(drop=True)
    out = args.out_dir
    write_manifest(out / "manifest.parquet", df)
    read_manifest(out / "manifest.parquet")  # what we wrote must pass our own check
    rejected = rej.frame(sel_rej)
    io.write_table(out / "rejected.tsv", rejected)
    per_stage: dict = {}
    for (stage, reason), n in rejected.groupby(["stage", "reason"]).size().items():
        per_stage.setdefault(stage, {})[reason] = int(n)
    per_flag, flagged = flag_report(df, flagged, rejected)
    report = {
        "manifest_version": MANIFEST_VERSION, "manifest_sha256": io.sha256_file(out / "manifest.parquet"),
        "clips": len(df), "hours": _hours(df["seconds"]), "tracks": int(df["track_id"].nunique()),
        "splits": {s: {"clips": int((df["split"] == s).sum()), "hours": _hours(df.loc[df["split"] == s, "seconds"]),
                       "tracks": int(df.loc[df["split"] == s, "track_id"].nunique())} for s in SPLITS},
        "per_licence": {k: {"clips": len(g), "hours": _hours(g["seconds"])} for k, g in df.groupby("licence")},
        "rejected": per_stage, "n_rejected": len(rejected),
        "flags": per_flag, "flagged": flagged,
        "shards": shards, "valid_fraction": cfg.valid_fraction, "seed": cfg.seed,
    }
    io.write_json(out / "report.json", report)
    if not len(df):
        log.warning("manifest is empty: no clip survived (see %s)", out / "rejected.tsv")
    log.info("manifest: %d clips, %.2f h, %d tracks (valid %d clips); %d rejected rows",
             report["clips"], report["hours"], report["tracks"], report["splits"]["valid"]["clips"], len(rejected))
    for f, n in per_flag.items():
        if n["clips"] or n["rejected"]:
            log.info("flag %s: %d clips kept (%d tracks), %d rejected", f, n["clips"], n["tracks"], n["rejected"])
    return report


def main(argv: list[str]) -> int | None:
    from ssmttm import settings

    p = argparse.ArgumentParser(prog="ssmttm manifest", description=__doc__.split("\n")[0])
    p.add_argument("--candidates", type=Path, required=True)
    p.add_argument("--select-rejected", type=Path, required=True)
    p.add_argument("--licenses-table", type=Path, required=True)
    p.add_argument("--receipts", type=Path, nargs="+", required=True, help="fetch receipt NN.json of every shard")
    p.add_argument("--clip-tables", type=Path, nargs="+", required=True, help="segment table NN.tsv of every shard")
    p.add_argument("--vocals-tables", type=Path, nargs="+", required=True, help="vocals table NN.tsv of every shard")
    p.add_argument("--captions-tables", type=Path, nargs="+", required=True,
                   help="captions table NN.tsv of every shard")
    p.add_argument("--out-dir", type=Path, required=True)
    settings.add_arguments(p, ManifestSettings)
    args = p.parse_args(argv)
    cfg = settings.from_args(p, ManifestSettings, args)
    logs.setup()
    for flag, path in (("--candidates", args.candidates), ("--select-rejected", args.select_rejected),
                       ("--licenses-table", args.licenses_table)):
        if not path.is_file():
            p.error(f"{flag}: no such file {path}")
    try:
        build(args, cfg)
    except ManifestError as exc:
        log.error("%s", exc)
        return 2
    return 0
