"""Strict parsers for the MTG-Jamendo metadata files (formats: docs/ARCHITECTURE.md). The stages
reach them through the dataset source :class:`ssmttm.data.sources.jamendo.MtgJamendo`.

Every parser returns the rows it could read plus a list of :class:`Problem` (line number, raw text,
reason) for the rows it could not: a malformed row is reported, never silently dropped. A file
whose header is wrong is not a bad row but the wrong file, and raises :class:`JamendoFormatError`.

Facts encoded here (docs/reference.md §2):
- ``raw_30s_cleantags.tsv``: ``TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION`` then one tag per extra
  tab-separated column (``genre---rock``, ``instrument---piano``, ``mood/theme---happy``).
- ids look like ``track_0000214``; the audio path is ``NN/<track_num>.mp3`` with
  ``NN == track_num % 100``, which is also the tar archive (shard) holding the file.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

# Problem and its table are the dataset-source interface's; re-exported for the readers of this module
from ssmttm.data.sources import PROBLEM_COLUMNS, Problem, SourceFormatError, problems_frame  # noqa: F401

if TYPE_CHECKING:
    import pandas as pd  # imported where a table is built: the fetch stage reads checksum lists only

CLEANTAGS_HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")
META_HEADER = (
    "TRACK_ID", "ARTIST_ID", "ALBUM_ID", "TRACK_NAME", "ARTIST_NAME", "ALBUM_NAME", "RELEASEDATE", "URL",
)
SONG_DESCRIBER_COLUMNS = (
    "caption_id", "track_id", "caption", "is_valid_subset", "familiarity", "artist_id", "album_id",
    "path", "duration",
)
TRACK_ID_RE = re.compile(r"^track_(\d+)$")
# Audio path inside a tar: folder NN (two digits) / track number .mp3
AUDIO_PATH_RE = re.compile(r"^(\d{2})/(\d+)\.mp3$")
# Song Describer paths look like "14/214.mp3" or "14/214.2min.mp3": the number is the file stem.
SDD_PATH_RE = re.compile(r"(?:^|/)(\d+)(?:\.[A-Za-z0-9]+)*\.mp3$")
# One line of MTG-Jamendo's *_sha256_tars.txt / *_sha256_tracks.txt: "<sha256> <name>", one space in
# the real files; sha256sum's forms (two spaces, "*" binary marker) are accepted too. Names never
# hold whitespace (raw_30s_audio-NN.tar, NN/<track_num>.mp3), so a third field is a malformed line.
SHA256_LINE_RE = re.compile(r"^([0-9a-fA-F]{64})[ \t]+\*?(\S+)$")
SHA256_LINE_FORMAT = "'<sha256> <name>' (64 hex digits, whitespace, a name without spaces)"
# Tag categories of raw_30s_cleantags.tsv and the column each one fills.
TAG_CATEGORIES = {"genre": "genres", "instrument": "instruments", "mood/theme": "moods"}
TRACK_COLUMNS = (
    "track_id", "track_num", "artist_id", "album_id", "path", "shard", "seconds",
    "genres", "instruments", "moods", "tags",
)
META_COLUMNS = (
    "track_id", "track_num", "artist_id", "album_id", "title", "artist", "album", "release_date", "url",
)


class JamendoFormatError(SourceFormatError):
    """A metadata file is not the file it claims to be (wrong header, unreadable)."""


def track_num(track_id: str) -> int:
    """``"track_0000214" -> 214``; raises ValueError for anything else."""
    m = TRACK_ID_RE.match(track_id)
    if not m:
        raise ValueError(f"bad track id {track_id!r} (expected track_<digits>)")
    return int(m.group(1))


def shard_of(num: int) -> str:
    """Shard (tar archive and folder) of a track number: MTG-Jamendo puts track n in folder n % 100."""
    return f"{num % 100:02d}"


def _lines(path: str | Path):
    """Yield (line_number, text) with the line ending (LF or CRLF) removed; a BOM is dropped."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for i, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if i == 1:
                line = line.lstrip("\ufeff")
            yield i, line


def _check_header(path, got: str, want: tuple[str, ...]) -> None:
    fields = tuple(f.strip() for f in got.rstrip().split("\t"))
    if fields != want:
        raise JamendoFormatError(
            f"{path}: header {list(fields)} is not the expected {list(want)}"
        )


def _tsv_rows(path, header: tuple[str, ...]):
    """Yield (line_number, raw line, tab-split fields) of a TSV after checking its header; blank
    lines (e.g. a trailing one) carry no row."""
    lines = _lines(path)
    try:
        _, got = next(lines)
    except StopIteration:
        raise JamendoFormatError(f"{path}: empty file (expected header {list(header)})") from None
    _check_header(path, got, header)
    for ln, raw in lines:
        if raw.strip():
            yield ln, raw, raw.split("\t")


def _check_audio_path(p: str, num: int) -> str:
    """Return the shard of audio path ``p`` or raise ValueError when it disagrees with ``num``."""
    m = AUDIO_PATH_RE.match(p)
    if not m:
        raise ValueError(f"bad path {p!r} (expected NN/<track_num>.mp3)")
    if int(m.group(2)) != num:
        raise ValueError(f"path {p!r} does not match track number {num}")
    if m.group(1) != shard_of(num):
        raise ValueError(f"path folder {m.group(1)!r} is not track_num % 100 = {shard_of(num)!r}")
    return m.group(1)


def _row_problem(ln: int, raw: str, reason: str, file: str, fields: list[str]) -> Problem:
    """A rejected cleantags row, with the track id, path and shard it still shows."""
    tid = fields[0].strip() if fields else ""
    apath = fields[3].strip() if len(fields) > 3 else ""
    m = AUDIO_PATH_RE.match(apath)
    return Problem(line=ln, raw=raw, reason=reason, file=file, track_id=tid, path=apath,
                   shard=m.group(1) if m else "")


def read_tracks(path: str | Path) -> tuple[pd.DataFrame, list[Problem]]:
    """Parse ``raw_30s_cleantags.tsv`` strictly.

    Returns ``(tracks, problems)``: ``tracks`` has one row per good line with TRACK_COLUMNS
    (``track_num`` int64, ``seconds`` float64, tag lists ";"-joined, ``shard`` "NN"); ``problems``
    names every line that was rejected (too few fields, bad id, non-numeric/negative/non-finite
    duration, path that disagrees with the id, tag without a ``<category>---`` prefix, duplicate
    id). A row with five fields and no tag is accepted with empty tags: the paper's 457 h counts
    every raw_30s track, tagged or not. Plain Python over lines (no per-row pandas work): the real
    55,701-row file parses in a fraction of a second.
    """
    import pandas as pd

    name = Path(path).name
    cols: dict[str, list] = {c: [] for c in TRACK_COLUMNS}
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for ln, raw, fields in _tsv_rows(path, CLEANTAGS_HEADER):
        try:
            if len(fields) < 5:
                raise ValueError(f"too few fields ({len(fields)}; need TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION)")
            tid, artist, album, apath, dur = (f.strip() for f in fields[:5])
            num = track_num(tid)
            if not artist or not album:
                raise ValueError("empty ARTIST_ID or ALBUM_ID")
            shard = _check_audio_path(apath, num)
            try:
                seconds = float(dur)
            except ValueError:
                raise ValueError(f"non-numeric duration {dur!r}") from None
            if not math.isfinite(seconds) or seconds < 0:
                raise ValueError(f"invalid duration {dur!r}")
            tags = [t.strip() for t in fields[5:] if t.strip()]
            by_cat: dict[str, list[str]] = {c: [] for c in TAG_CATEGORIES.values()}
            for t in tags:
                cat, sep, value = t.partition("---")
                if not sep or not value:
                    raise ValueError(f"tag {t!r} is not <category>---<name>")
                if cat in TAG_CATEGORIES:
                    by_cat[TAG_CATEGORIES[cat]].append(value)
            if tid in seen:
                raise ValueError(f"duplicate track id {tid} (first at line {seen[tid]})")
        except ValueError as exc:
            problems.append(_row_problem(ln, raw, str(exc), name, fields))
            continue
        seen[tid] = ln
        cols["track_id"].append(tid)
        cols["track_num"].append(num)
        cols["artist_id"].append(artist)
        cols["album_id"].append(album)
        cols["path"].append(apath)
        cols["shard"].append(shard)
        cols["seconds"].append(seconds)
        for c, values in by_cat.items():
            cols[c].append(";".join(values))
        cols["tags"].append(";".join(tags))
    df = pd.DataFrame(cols, columns=list(TRACK_COLUMNS))
    df["track_num"] = df["track_num"].astype("int64")
    df["seconds"] = df["seconds"].astype("float64")
    return df, problems


def read_meta(path: str | Path) -> tuple[pd.DataFrame, list[Problem]]:
    """Parse ``raw.meta.tsv`` (8 tab-separated fields) into META_COLUMNS, plus problem rows.

    Names are free text; a row with a wrong field count or a bad track id is a problem.
    """
    import pandas as pd

    name = Path(path).name
    rows: list[tuple] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for ln, raw, fields in _tsv_rows(path, META_HEADER):
        try:
            if len(fields) != len(META_HEADER):
                raise ValueError(f"{len(fields)} fields, expected {len(META_HEADER)}")
            tid = fields[0].strip()
            num = track_num(tid)
            if tid in seen:
                raise ValueError(f"duplicate track id {tid} (first at line {seen[tid]})")
        except ValueError as exc:
            problems.append(Problem(line=ln, raw=raw, reason=str(exc), file=name))
            continue
        seen[tid] = ln
        rows.append((tid, num, *(f.strip() for f in fields[1:])))
    df = pd.DataFrame(rows, columns=list(META_COLUMNS))
    df["track_num"] = df["track_num"].astype("int64")
    return df, problems


def _sdd_track_num(track_id: str, path: str) -> int | None:
    t = track_id.strip()
    if t.isdigit():
        return int(t)
    m = TRACK_ID_RE.match(t)
    if m:
        return int(m.group(1))
    m = SDD_PATH_RE.search(path.strip())
    return int(m.group(1)) if m else None


def read_song_describer(path: str | Path) -> set[int]:
    """Jamendo track numbers of the Song Describer Dataset csv (706 tracks, 1,106 captions).

    ``track_id`` may be ``214``, ``"214"`` or ``track_0000214``; when it is neither, the number is
    taken from ``path`` (``14/214.mp3`` or ``14/214.2min.mp3``). A row with no usable id raises
    JamendoFormatError: silently missing an evaluation track would let it leak into training.
    """
    out: set[int] = set()
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip().lstrip("\ufeff") for c in (reader.fieldnames or [])]
        reader.fieldnames = fields
        if "track_id" not in fields and "path" not in fields:
            raise JamendoFormatError(
                f"{path}: no track_id or path column (columns: {fields}; expected {list(SONG_DESCRIBER_COLUMNS)})"
            )
        for row in reader:
            num = _sdd_track_num(str(row.get("track_id") or ""), str(row.get("path") or ""))
            if num is None:
                raise JamendoFormatError(
                    f"{path}: line {reader.line_num}: no Jamendo track number in track_id "
                    f"{row.get('track_id')!r} or path {row.get('path')!r}"
                )
            out.add(num)
    return out


def read_sha256_list(path: str | Path) -> dict[str, str]:
    """``<sha256> <name>`` lines (MTG-Jamendo's ``*_sha256_*.txt``) -> {name: lower-case sha256}.

    The one parser of these files: the fetch stage verifies tars and tracks against it. Blank lines
    are skipped; any other line that is not :data:`SHA256_LINE_RE`, or a name listed twice with
    different hashes, raises JamendoFormatError naming the file, the line number and what was
    expected: a checksum list with a bad line is not trusted to verify anything.
    """
    out: dict[str, str] = {}
    first: dict[str, int] = {}
    for ln, raw in _lines(path):
        line = raw.strip()
        if not line:
            continue
        m = SHA256_LINE_RE.match(line)
        if m is None:
            raise JamendoFormatError(f"{path}: line {ln}: expected {SHA256_LINE_FORMAT}, got {raw[:200]!r}")
        digest, name = m.group(1).lower(), m.group(2)
        if name in out and out[name] != digest:
            raise JamendoFormatError(
                f"{path}: line {ln}: {name} listed twice with different sha256 (first at line {first[name]})"
            )
        out[name] = digest
        first.setdefault(name, ln)
    return out
