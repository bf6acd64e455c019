"""MTG-Jamendo, the first dataset source (github.com/MTG/mtg-jamendo-dataset; docs/reference.md §2).

What is MTG-Jamendo's here, and nowhere else in the stages:

- tracks: ``raw_30s_cleantags.tsv`` (parsed by :func:`ssmttm.data.jamendo.read_tracks`); track
  ``track_0000214`` is number 214, its audio ``14/214.mp3`` in shard (tar) ``14 == 214 % 100``;
- licences: ``audio_licenses.txt``, one record per track (format below), names split with
  ``raw.meta.tsv``;
- held-out tracks: the Song Describer Dataset (706 Jamendo tracks the paper evaluates on);
- audio: ``<base_url>/<dataset>/<audio_type>/<dataset>_<audio_type>-NN.tar`` holding ``NN/<num>.mp3``,
  verified against ``*_sha256_tars.txt`` and ``*_sha256_tracks.txt``.

THE LICENCE RECORD FORMAT (all of it lives in the constants below; the real file could not be
checked offline, so if it differs, change them here and nowhere else). One record per track:

    <PATH>                                              e.g. 14/214.mp3
    <Title> by <Artist> from Jamendo: <track URL>
    Available under a Creative Commons <words> license: <licence URL>
    <blank line>

Tolerated: trailing whitespace, CRLF, a BOM, a missing final blank line, runs of blank lines.
A line that looks like a PATH also starts a new record, so one lost blank line costs no record.
Reported here (record number, line, raw text, reason): a record with missing or extra lines, a bad
path, a title line or licence line of another shape, a track URL naming another track. The licence
URL itself, the words against it and several records of one track are the generic audit's
(:func:`ssmttm.data.licenses.read_licences`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from ssmttm.constants import JAMENDO_N_TARS, METADATA_FILES
from ssmttm.data import fetch
from ssmttm.data.jamendo import (
    CLEANTAGS_HEADER, META_HEADER, SHA256_LINE_FORMAT, SHA256_LINE_RE, SONG_DESCRIBER_COLUMNS, JamendoFormatError,
    read_meta, read_sha256_list, read_song_describer, read_tracks, shard_of,
)
from ssmttm.data.sources import LICENCE_RECORD_COLUMNS, DatasetSource, Problem

if TYPE_CHECKING:
    import pandas as pd

    from ssmttm.data.options import FetchShardSettings

# ---- the licence record format (the one place to change if the real file differs) -------------
LIC_PATH_RE = re.compile(r"^(?:.*/)?(\d{2})/(\d+)\.mp3$")  # an optional leading folder is dropped
LIC_TITLE_RE = re.compile(r"^(?P<ta>.*\S) from Jamendo: (?P<url>\S+)$")
LIC_LINE_RE = re.compile(
    r"^Available under a Creative Commons(?: (?P<words>.*?))? licen[sc]e: (?P<url>\S+)$", re.IGNORECASE
)
TRACK_URL_NUM_RE = re.compile(r"/track/(\d+)")
TITLE_ARTIST_SEP = " by "
ATTRIBUTION_NOTE = (
    "Licences are those recorded in MTG-Jamendo's audio_licenses.txt, as of the dataset's compile\n"
    "date (docs/reference.md §2.2). The MTG-Jamendo metadata is licensed CC BY-NC-SA 4.0."
)


def track_id_of(num: int) -> str:
    """``214 -> "track_0000214"``: the id MTG-Jamendo gives track number ``num``."""
    return f"track_{num:07d}"


def split_title_artist(text: str, title: str = "", artist: str = "") -> tuple[str, str]:
    """Split ``"<Title> by <Artist>"``; the metadata names decide when " by " occurs twice."""
    if title and artist and text == f"{title}{TITLE_ARTIST_SEP}{artist}":
        return title, artist
    t, _, a = text.rpartition(TITLE_ARTIST_SEP)  # titles ("Stand by Me") hold " by " more than names
    return t, a


def _parse_record(lines: list[tuple[int, str]]) -> dict:
    """One record's (line number, text) lines -> record dict; raises ValueError with the reason."""
    if len(lines) < 3:
        raise ValueError(f"record has {len(lines)} line(s), expected 3 (path, title line, licence line)")
    if len(lines) > 3:
        raise ValueError(f"record has {len(lines)} lines, expected 3 (path, title line, licence line)")
    (ln, p), (_, title_line), (_, lic_line) = lines
    m = LIC_PATH_RE.match(p)
    if not m:
        raise ValueError(f"bad path {p!r} (expected NN/<track_num>.mp3)")
    folder, num = m.group(1), int(m.group(2))
    if folder != shard_of(num):
        raise ValueError(f"path folder {folder!r} is not track_num % 100 for {p!r}")
    mt = LIC_TITLE_RE.match(title_line)
    if not mt:
        raise ValueError("second line is not '<Title> by <Artist> from Jamendo: <track URL>'")
    if TITLE_ARTIST_SEP not in mt.group("ta"):
        raise ValueError("second line has no ' by ' between title and artist")
    track_url = mt.group("url")
    if not track_url.startswith(("http://", "https://")):
        raise ValueError(f"track URL {track_url!r} is not http(s)")
    mu = TRACK_URL_NUM_RE.search(track_url)
    if mu and int(mu.group(1)) != num:
        raise ValueError(f"track URL {track_url!r} names track {mu.group(1)}, path names {num}")
    ml = LIC_LINE_RE.match(lic_line)
    if not ml:
        raise ValueError("third line is not 'Available under a Creative Commons <words> license: <URL>'")
    return {"path": f"{folder}/{num}.mp3", "num": num, "line": ln, "title_artist": mt.group("ta"),
            "track_url": track_url, "licence_url": ml.group("url"), "licence_words": (ml.group("words") or "").strip()}


def _blocks(path: str | Path) -> list[list[tuple[int, str]]]:
    """The records of ``audio_licenses.txt``: runs of (line number, text), split at blank lines and at
    any line that looks like a track path."""
    blocks: list[list[tuple[int, str]]] = []
    cur: list[tuple[int, str]] = []
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for ln, raw in enumerate(f, start=1):
            text = raw.rstrip("\r\n").rstrip()
            if ln == 1:
                text = text.lstrip("\ufeff")
            if not text:
                if cur:
                    blocks.append(cur)
                cur = []
                continue
            if cur and LIC_PATH_RE.match(text):
                blocks.append(cur)  # a lost blank line: the path starts the next record
                cur = []
            cur.append((ln, text))
    if cur:
        blocks.append(cur)  # no final blank line
    return blocks


def parse_licence_file(
    path: str | Path,
    ids: Mapping[str, str] | None = None,
    names: Mapping[str, tuple[str, str]] | None = None,
) -> tuple[pd.DataFrame, list[Problem]]:
    """``audio_licenses.txt`` -> (one row per readable record, LICENCE_RECORD_COLUMNS, plus problems).

    ``ids``: audio path -> track id (from raw_30s_cleantags.tsv; a path it lacks gets
    :func:`track_id_of` its number); ``names``: track id -> (title, artist) from raw.meta.tsv, which
    decide where ``"<Title> by <Artist>"`` splits. A problem whose first line is a track path carries
    that track's id (only from ``ids``: the audit then excludes the track as unparsable).
    """
    import pandas as pd

    ids, names = ids or {}, names or {}
    name = Path(path).name
    rows, problems = [], []
    for rec, block in enumerate(_blocks(path), start=1):
        raw = " | ".join(t for _, t in block)
        try:
            r = _parse_record(block)
        except ValueError as exc:
            m = LIC_PATH_RE.match(block[0][1].strip())
            where = f"{m.group(1)}/{m.group(2)}.mp3" if m else ""
            problems.append(Problem(line=block[0][0], raw=raw, reason=str(exc), record=rec, file=name,
                                    track_id=ids.get(where, ""), path=where, shard=m.group(1) if m else ""))
            continue
        tid = ids.get(r["path"]) or track_id_of(r["num"])
        title, artist = split_title_artist(r["title_artist"], *names.get(tid, ("", "")))
        rows.append({"track_id": tid, "licence_url": r["licence_url"], "licence_words": r["licence_words"],
                     "title": title, "artist": artist, "track_url": r["track_url"], "file": name, "record": rec,
                     "line": r["line"], "raw": raw})
    return pd.DataFrame(rows, columns=list(LICENCE_RECORD_COLUMNS)), problems


# ---- light checks of each metadata file before its sha256 is pinned -------------------------------

def _check_cleantags(lines):
    return fetch.tsv_header_problem(lines, CLEANTAGS_HEADER)


def _check_meta(lines):
    return fetch.tsv_header_problem(lines, META_HEADER)


def _check_licences(lines):
    if not LIC_PATH_RE.match(lines[0].strip()):
        return f"first line {lines[0][:80]!r} is not a track path NN/<track_num>.mp3 (the start of a licence record)"
    # the record's next lines: "<Title> by <Artist> from Jamendo: <URL>", "Available under a Creative Commons ..."
    if not any("jamendo" in ln.lower() or "creative commons" in ln.lower() for ln in lines[1:4]):
        return "the first record has no 'from Jamendo:' or 'Creative Commons' line"
    return None


def _check_sha256_list(lines):
    # the first lines against the same line format the full parser (read_sha256_list) enforces later
    for i, ln in enumerate(lines[:20], 1):
        if not SHA256_LINE_RE.match(ln.strip()):
            return f"line {i} {ln[:80]!r} is not {SHA256_LINE_FORMAT}"
    return None


def _check_song_describer(lines):
    cols = fetch.csv_columns(lines)
    if "track_id" not in cols and "path" not in cols:
        return f"csv header {cols[:10]} has no track_id or path column (expected {list(SONG_DESCRIBER_COLUMNS)})"
    return None


# ---- one shard: tar raw_30s_audio-NN.tar ----------------------------------------------------------

def tar_name(shard: str, dataset: str, audio_type: str) -> str:
    """``raw_30s_audio-07.tar``: the tar of shard ``07``."""
    return f"{dataset}_{audio_type}-{shard}.tar"


def fetch_shard(
    shard: str,
    base_url: str,
    dataset: str,
    audio_type: str,
    tar_sums_path,
    track_sums_path,
    out_dir,
    receipt_path,
    keep_tars: bool = False,
    mirrors=(),
    retries: int = 5,
    timeout: float = 60,
    backoff: float = 1.0,
) -> dict:
    """Download, verify and unpack tar ``<dataset>_<audio_type>-<shard>.tar`` into ``out_dir/<shard>/``.

    The tar's sha256 comes from the tar list, the tracks' from the track list (its ``<shard>/`` lines);
    both are read first, so a malformed line raises :class:`~ssmttm.data.jamendo.JamendoFormatError`
    before anything is fetched or unpacked. :func:`ssmttm.data.fetch.fetch_archive` does the rest.
    """
    fetch.check_shard(shard)
    tar = tar_name(shard, dataset, audio_type)
    tar_sha = read_sha256_list(tar_sums_path).get(tar)
    listed = {k: v for k, v in read_sha256_list(track_sums_path).items() if k.startswith(f"{shard}/")}
    urls = [fetch.join_url(base, dataset, audio_type, tar) for base in (base_url, *mirrors)]
    return fetch.fetch_archive(shard, tar, urls, tar_sha, listed, out_dir, receipt_path,
                               archive_list=str(tar_sums_path), track_list=Path(track_sums_path).name,
                               keep_archive=keep_tars, retries=retries, timeout=timeout, backoff=backoff)


class MtgJamendo(DatasetSource):
    """MTG-Jamendo raw_30s (55,701 tracks in 100 tars); see the module docstring."""

    name = "mtg-jamendo"
    title = "MTG-Jamendo"
    metadata = {k: METADATA_FILES[k] for k in
                ("cleantags", "meta", "licenses", "tar_sha256", "track_sha256", "song_describer")}
    reads = {
        "tracks": ("cleantags",),
        "licences": ("licenses", "cleantags", "meta"),  # cleantags: path -> id; meta: where names split
        "held_out": ("song_describer",),
        "shard": ("tar_sha256", "track_sha256"),
    }
    n_shards = JAMENDO_N_TARS
    # the paper's 457 h excludes the Song Describer Dataset's 706 tracks: evaluation never overlaps training
    held_out_reason = ("song describer", "evaluation track (Song Describer Dataset)")
    attribution_note = ATTRIBUTION_NOTE

    def list_tracks(self, files):
        return read_tracks(files["cleantags"])

    def licence_records(self, files):
        tracks, _ = read_tracks(files["cleantags"])  # its bad rows are list_tracks' to report
        meta, p_meta = read_meta(files["meta"])
        ids = dict(zip(tracks["path"], tracks["track_id"]))
        names = {t: (a, b) for t, a, b in zip(meta["track_id"], meta["title"], meta["artist"])}
        records, problems = parse_licence_file(files["licenses"], ids, names)
        return records, problems + p_meta

    def held_out(self, files, tracks):
        nums = read_song_describer(files["song_describer"])
        return set(tracks.loc[tracks["track_num"].isin(nums), "track_id"])

    def shard_audio(self, shard, cfg):
        return tar_name(shard, cfg.dataset, cfg.audio_type)

    def fetch_shard(self, shard, files, out_dir, receipt_path, cfg):
        return fetch_shard(shard, cfg.base_url, cfg.dataset, cfg.audio_type, files["tar_sha256"],
                           files["track_sha256"], out_dir, receipt_path, keep_tars=cfg.keep_tars,
                           mirrors=cfg.mirrors, retries=cfg.retries, timeout=cfg.timeout_s, backoff=cfg.backoff_s)

    def metadata_checks(self):
        m = self.metadata
        return {
            m["cleantags"]: ("a tab-separated track table", _check_cleantags),
            m["meta"]: ("a tab-separated track metadata table", _check_meta),
            m["licenses"]: ("the licence records (path, title line, licence line)", _check_licences),
            m["tar_sha256"]: ("a checksum list", _check_sha256_list),
            m["track_sha256"]: ("a checksum list", _check_sha256_list),
            m["song_describer"]: ("the Song Describer csv", _check_song_describer),
        }


__all__ = ["JamendoFormatError", "MtgJamendo", "fetch_shard", "parse_licence_file",
           "split_title_artist", "tar_name", "track_id_of"]
