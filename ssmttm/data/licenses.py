"""Licence audit: parse ``audio_licenses.txt``, join it to the tracks, apply the allow-list.

Every MTG-Jamendo track carries its own Creative Commons licence (docs/reference.md §2: reported
mix ~70 % NC, ~34 % ND, licences as of the dataset's compile date). This stage makes that visible:
a per-track table, a per-licence summary, a ready-to-paste ATTRIBUTION.md and ``licenses.json``,
the machine-readable summary that later stages copy into every model card.

THE FORMAT THIS PARSER EXPECTS (all of it lives in the constants below; the real file could not be
checked offline, so if it differs, change them here and nowhere else). One record per track:

    <PATH>                                              e.g. 14/214.mp3
    <Title> by <Artist> from Jamendo: <track URL>
    Available under a Creative Commons <words> license: <licence URL>
    <blank line>

Tolerated: trailing whitespace, CRLF, a BOM, a missing final blank line, runs of blank lines.
A line that looks like a PATH also starts a new record, so one lost blank line costs no record.
Reported (record number, line, raw text, reason): a record with missing or extra lines, a bad path,
a licence URL that is not ``creativecommons.org/licenses/<code>/<version>/``, an unknown code, words
that name a different licence or version than the URL, a track URL naming another track, a
duplicate path.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import pandas as pd

from ssmttm import io, logs
from ssmttm.constants import CC_CODES, LICENCE_PRESETS
from ssmttm.data.jamendo import (
    PROBLEM_COLUMNS, Problem, problems_frame, read_meta, read_tracks, shard_of,
)

log = logging.getLogger("ssmttm.licenses")

# ---- the expected record format (the one place to change if the real file differs) -----------
UNPARSABLE = "licence record unparsable"
LIC_PATH_RE = re.compile(r"^(?:.*/)?(\d{2})/(\d+)\.mp3$")  # an optional leading folder is dropped
LIC_TITLE_RE = re.compile(r"^(?P<ta>.*\S) from Jamendo: (?P<url>\S+)$")
LIC_LINE_RE = re.compile(
    r"^Available under a Creative Commons(?: (?P<words>.*?))? licen[sc]e: (?P<url>\S+)$", re.IGNORECASE
)
LIC_URL_RE = re.compile(
    r"^https?://(?:www\.)?creativecommons\.org/licen[sc]es/(?P<code>[A-Za-z-]+)/(?P<version>\d+(?:\.\d+)?)"
    r"(?:/[A-Za-z-]{2,})?/?$"  # optional jurisdiction port, e.g. /3.0/es/
)
TRACK_URL_NUM_RE = re.compile(r"/track/(\d+)")
TITLE_ARTIST_SEP = " by "

UNKNOWN = "unknown"
TRACK_TABLE_COLUMNS = (
    "track_id", "track_num", "path", "shard", "seconds", "licence", "licence_version", "licence_url",
    "title", "artist", "track_url", "attribution", "allowed", "reason",
)
SUMMARY_COLUMNS = (
    "licence", "tracks_total", "hours_total", "tracks_included", "hours_included",
    "tracks_excluded", "hours_excluded",
)
RECORD_COLUMNS = (
    "path", "record", "line", "title_artist", "track_url", "licence", "licence_version",
    "licence_url", "licence_words",
)


def _words_code(words: str) -> str | None:
    """CC code named by the human-readable words, or None when the words name no known terms."""
    w = words.lower()
    if "attribution" not in w and not re.search(r"\bby\b", w):
        return None
    nc = re.search(r"non-?\s?commercial|\bnc\b", w)
    nd = re.search(r"no-?\s?deriv|\bnd\b", w)
    sa = re.search(r"share-?\s?alike|\bsa\b", w)
    return "by" + ("-nc" if nc else "") + ("-sa" if sa else "") + ("-nd" if nd else "")


def parse_licence_url(url: str) -> tuple[str, str]:
    """``http://creativecommons.org/licenses/by-nc-sa/3.0/`` -> ``("by-nc-sa", "3.0")``.

    Raises ValueError when the URL is not a CC licence URL or names a code outside CC_CODES.
    """
    m = LIC_URL_RE.match(url)
    if not m:
        raise ValueError(f"licence URL {url!r} is not creativecommons.org/licenses/<code>/<version>/")
    code = m.group("code").lower()
    version = m.group("version")
    if "." not in version:
        version += ".0"
    if code not in CC_CODES:
        raise ValueError(f"unknown licence code {code!r} in {url!r} (known: {', '.join(CC_CODES)})")
    return code, version


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
    words = (ml.group("words") or "").strip()
    code, version = parse_licence_url(ml.group("url"))
    wcode = _words_code(words)
    if wcode is not None and wcode != code:
        raise ValueError(f"licence words {words!r} name {wcode}, URL names {code}")
    wver = re.search(r"\b(\d+\.\d+)\b", words)
    if wver and wver.group(1) != version:
        raise ValueError(f"licence words name version {wver.group(1)}, URL names {version}")
    return {
        "path": f"{folder}/{num}.mp3", "line": ln, "title_artist": mt.group("ta"), "track_url": track_url,
        "licence": code, "licence_version": version, "licence_url": ml.group("url"), "licence_words": words,
    }


def parse_licences(path: str | Path) -> tuple[pd.DataFrame, list[Problem]]:
    """Parse ``audio_licenses.txt`` into one row per record (RECORD_COLUMNS) plus problems.

    Records are split at blank lines and at any line that looks like a track path.
    """
    name = Path(path).name
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
    rows, problems, seen = [], [], {}
    for rec, block in enumerate(blocks, start=1):
        try:
            row = _parse_record(block)
            if row["path"] in seen:
                raise ValueError(f"duplicate record for {row['path']} (first at line {seen[row['path']]})")
        except ValueError as exc:
            raw = " | ".join(t for _, t in block)
            problems.append(Problem(line=block[0][0], raw=raw, reason=str(exc), record=rec, file=name))
            continue
        seen[row["path"]] = row["line"]
        row["record"] = rec
        rows.append(row)
    return pd.DataFrame(rows, columns=list(RECORD_COLUMNS)), problems


def _split_title_artist(text: str, title: str, artist: str) -> tuple[str, str]:
    """Split ``"<Title> by <Artist>"``; the metadata names decide when " by " occurs twice."""
    if title and artist and text == f"{title}{TITLE_ARTIST_SEP}{artist}":
        return title, artist
    t, _, a = text.rpartition(TITLE_ARTIST_SEP)  # titles ("Stand by Me") hold " by " more than names
    return t, a


def attribution(title: str, artist: str, track_url: str, code: str, version: str, licence_url: str) -> str:
    """Ready-to-paste CC attribution: “Title” by Artist (URL), licensed under CC BY-NC-SA 3.0 (URL)."""
    return (f"\u201c{title}\u201d by {artist} ({track_url}), licensed under "
            f"CC {code.upper()} {version} ({licence_url})")


def unparsed_paths(problems: list[Problem]) -> dict[str, str]:
    """Track path -> parse error, for unparsable licence records whose first line is a track path."""
    out = {}
    for p in problems:
        m = LIC_PATH_RE.match(p.raw.split(" | ", 1)[0].strip())
        if m:
            out.setdefault(f"{m.group(1)}/{m.group(2)}.mp3", p.reason)
    return out


def audit(
    tracks: pd.DataFrame,
    records: pd.DataFrame,
    meta: pd.DataFrame,
    allow: tuple[str, ...],
    unparsed: dict[str, str] | None = None,
) -> pd.DataFrame:
    """One row per track (TRACK_TABLE_COLUMNS): licence joined by PATH, names from meta, gate applied.

    A track with no licence record gets licence ``unknown`` and is excluded ("no licence record");
    one whose record could not be parsed (``unparsed``: path -> reason) says so instead.
    """
    unparsed = unparsed or {}
    df = tracks[["track_id", "track_num", "path", "shard", "seconds"]].merge(
        records.drop(columns=["record", "line"]), on="path", how="left")
    names = meta[["track_id", "title", "artist"]].rename(columns={"title": "m_title", "artist": "m_artist"})
    df = df.merge(names, on="track_id", how="left")
    for c in ("licence", "licence_version", "licence_url", "track_url", "title_artist", "m_title", "m_artist"):
        df[c] = df[c].fillna("").astype(str)
    titles, artists, attrs, allowed, reasons = [], [], [], [], []
    for path, ta, mtitle, martist, code, ver, lurl, turl in zip(
        df["path"], df["title_artist"], df["m_title"], df["m_artist"], df["licence"], df["licence_version"],
        df["licence_url"], df["track_url"],
    ):
        if code:
            t, a = _split_title_artist(ta, mtitle, martist)
        else:
            t, a = mtitle, martist
        titles.append(t)
        artists.append(a)
        attrs.append(attribution(t, a, turl, code, ver, lurl) if code else "")
        if not code:
            allowed.append(False)
            why = unparsed.get(path)
            reasons.append(f"{UNPARSABLE}: {why}" if why else "no licence record")
        elif code in allow:
            allowed.append(True)
            reasons.append("")
        else:
            allowed.append(False)
            reasons.append(f"licence {code} not allowed (allow: {','.join(allow)})")
    df["title"], df["artist"], df["attribution"] = titles, artists, attrs
    df["allowed"], df["reason"] = allowed, reasons
    df["licence"] = df["licence"].where(df["licence"] != "", UNKNOWN)
    return df[list(TRACK_TABLE_COLUMNS)].sort_values("track_num", kind="stable").reset_index(drop=True)


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per-licence (CC_CODES order, then unknown, then TOTAL) track counts and hours, in/excluded."""
    rows = []
    for code in (*CC_CODES, UNKNOWN, "TOTAL"):
        sub = table if code == "TOTAL" else table[table["licence"] == code]
        inc = sub[sub["allowed"]]
        exc = sub[~sub["allowed"]]
        rows.append({
            "licence": code,
            "tracks_total": len(sub), "hours_total": round(float(sub["seconds"].sum()) / 3600, 4),
            "tracks_included": len(inc), "hours_included": round(float(inc["seconds"].sum()) / 3600, 4),
            "tracks_excluded": len(exc), "hours_excluded": round(float(exc["seconds"].sum()) / 3600, 4),
        })
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def attribution_markdown(table: pd.DataFrame, allow: tuple[str, ...], preset: str) -> str:
    """ATTRIBUTION.md: header explaining the allow-list, then one line per included track by id."""
    inc = table[table["allowed"]].sort_values("track_num")
    head = [
        "# Attribution: MTG-Jamendo tracks used for training",
        "",
        f"Licence allow-list: {', '.join('CC ' + c.upper() for c in allow)} (preset: {preset}).",
        f"{len(inc)} of {len(table)} tracks are included; the others are excluded because their",
        "licence is not on the allow-list or they have no licence record (see tracks.tsv).",
        "Licences are those recorded in MTG-Jamendo's audio_licenses.txt, as of the dataset's compile",
        "date. The MTG-Jamendo metadata is licensed CC BY-NC-SA 4.0.",
        "",
    ]
    return "\n".join(head + [f"- {a}" for a in inc["attribution"]]) + "\n"


def licence_summary(table: pd.DataFrame, allow, preset, n_unparsed: int, sha: dict) -> dict:
    """The licenses.json object (copied into every model card)."""
    inc = table[table["allowed"]]
    per = {}
    for code in (*CC_CODES, UNKNOWN):
        s = table[table["licence"] == code]
        si, se = s[s["allowed"]], s[~s["allowed"]]
        per[code] = {"tracks_included": len(si), "hours_included": round(float(si["seconds"].sum()) / 3600, 4),
                     "tracks_excluded": len(se), "hours_excluded": round(float(se["seconds"].sum()) / 3600, 4)}
    n = len(inc)
    return {
        "allow": list(allow), "preset": preset, "per_licence": per,
        "n_tracks": len(table), "n_included": n,
        "hours_included": round(float(inc["seconds"].sum()) / 3600, 4),
        "n_excluded": len(table) - n, "n_unparsed": n_unparsed,
        # fractions of the INCLUDED tracks whose licence forbids commercial use / derivatives
        "nc_fraction": round(float(inc["licence"].str.contains("nc").sum()) / n, 6) if n else 0.0,
        "nd_fraction": round(float(inc["licence"].str.contains("nd").sum()) / n, 6) if n else 0.0,
        **sha,
    }


def resolve_allow(allow: str | None, preset: str | None) -> tuple[tuple[str, ...], str]:
    """(allow-list, preset name) from the flags; ValueError names the flag when they are wrong."""
    codes = None
    if allow:
        codes = tuple(dict.fromkeys(c.strip().lower() for c in allow.split(",") if c.strip()))
        bad = [c for c in codes if c not in CC_CODES]
        if bad or not codes:
            raise ValueError(f"--allow: unknown licence code(s) {bad} (known: {', '.join(CC_CODES)})")
    if preset and preset != "custom":
        if preset not in LICENCE_PRESETS:
            raise ValueError(f"--preset: unknown preset {preset!r} (known: {', '.join(LICENCE_PRESETS)}, custom)")
        if codes is not None and set(codes) != set(LICENCE_PRESETS[preset]):
            raise ValueError(f"--allow {','.join(codes)} disagrees with --preset {preset} "
                             f"({','.join(LICENCE_PRESETS[preset])})")
        return tuple(LICENCE_PRESETS[preset]), preset
    if codes is None:
        raise ValueError("--allow: required unless --preset names a preset")
    return codes, preset or "custom"


def run(licenses: Path, tracks: Path, meta: Path, allow: tuple[str, ...], preset: str, out_dir: Path) -> dict:
    """Run the audit and write every output into ``out_dir``; returns the licenses.json object."""
    tr, p_tracks = read_tracks(tracks)
    me, p_meta = read_meta(meta)
    records, p_lic = parse_licences(licenses)
    table = audit(tr, records, me, allow, unparsed_paths(p_lic))
    orphans = len(set(records["path"]) - set(tr["path"]))
    problems = p_lic + p_tracks + p_meta
    out_dir.mkdir(parents=True, exist_ok=True)
    io.write_table(out_dir / "tracks.tsv", table)
    io.write_table(out_dir / "summary.tsv", summarize(table))
    io.write_text(out_dir / "ATTRIBUTION.md", attribution_markdown(table, allow, preset))
    io.write_table(out_dir / "unparsed.tsv", problems_frame(problems)[list(PROBLEM_COLUMNS)])
    sha = {
        "sha256": {"tracks.tsv": io.sha256_file(out_dir / "tracks.tsv"),
                   "ATTRIBUTION.md": io.sha256_file(out_dir / "ATTRIBUTION.md")},
        "source_sha256": {licenses.name: io.sha256_file(licenses), tracks.name: io.sha256_file(tracks),
                          meta.name: io.sha256_file(meta)},
        "n_unparsed_by_file": {f: sum(p.file == f for p in problems) for f in (licenses.name, tracks.name, meta.name)},
        "n_records_without_track": orphans,
    }
    summary = licence_summary(table, allow, preset, len(problems), sha)
    io.write_json(out_dir / "licenses.json", summary)
    for p in problems[:20]:
        log.warning("unparsed %s line %d: %s", p.file, p.line, p.reason)
    if problems:
        log.warning("%d unparsable records/rows in total (%s); all listed in %s", len(problems),
                    summary["n_unparsed_by_file"], out_dir / "unparsed.tsv")
    log.info("licences: %d/%d tracks included (%.1f h), %d unparsed, NC %.1f %%, ND %.1f %%",
             summary["n_included"], summary["n_tracks"], summary["hours_included"], len(problems),
             100 * summary["nc_fraction"], 100 * summary["nd_fraction"])
    return summary


def main(argv: list[str]) -> int | None:
    p = argparse.ArgumentParser(prog="ssmttm licenses", description=__doc__.split("\n")[0])
    p.add_argument("--licenses", type=Path, required=True, help="audio_licenses.txt")
    p.add_argument("--tracks", type=Path, required=True, help="raw_30s_cleantags.tsv")
    p.add_argument("--meta", type=Path, required=True, help="raw.meta.tsv")
    p.add_argument("--allow", default=None, help="comma-separated CC codes, e.g. by,by-sa")
    p.add_argument("--preset", default=None, help=f"allow-list preset ({', '.join(LICENCE_PRESETS)}, custom)")
    p.add_argument("--out-dir", type=Path, required=True)
    args = p.parse_args(argv)
    logs.setup()
    try:
        allow, preset = resolve_allow(args.allow, args.preset)
    except ValueError as exc:
        p.error(str(exc))
    for flag, path in (("--licenses", args.licenses), ("--tracks", args.tracks), ("--meta", args.meta)):
        if not path.is_file():
            p.error(f"{flag}: no such file {path}")
    run(args.licenses, args.tracks, args.meta, allow, preset, args.out_dir)
    return 0
