"""Licence audit: the source's licence records, joined to its tracks, through the allow-list.

Every track carries its own Creative Commons licence (MTG-Jamendo, docs/reference.md §2.2: reported
mix ~70 % NC, ~34 % ND, licences as of the dataset's compile date). This stage makes that visible:
a per-track table, a per-licence summary, a ready-to-paste ATTRIBUTION.md and ``licenses.json``.
These describe the whole AUDIT (every track of the metadata); what a model was trained on is its
training split, summarised by :func:`training_licences` next to each checkpoint.

Reading the source's files is the dataset source's (``ssmttm.data.sources``, config key
``source.kind``): it lists the tracks and hands over one row per licence record (track, licence URL,
the licence in words if the record has them, title, artist, track URL). Everything from there is here:

Licence URLs: ``creativecommons.org/licenses/<code>/<version>/``, optionally followed by a
jurisdiction port (``/3.0/es/``) and/or a deed or legal-code page (``/deed.en``, ``/legalcode``).
Reported (record number, line, raw text, reason): a licence URL of another shape, an unknown code,
words that name a different licence or version than the URL, besides what the source reports.

Several records for one track: identical ones (same licence; names equal up to whitespace) are merged
into one. Records that name different licences (code, version or jurisdiction port) are a conflict:
the track is excluded under every allow-list with reason ``licence_conflict`` and every record is
listed in unparsed.tsv, since picking one would guess the licence. A track with one readable record
and one unreadable record is excluded as unparsable for the same reason. Records that agree on the
licence but not on title, artist or track URL keep the track (first record's names) and are listed.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from ssmttm import io, logs, settings
from ssmttm.constants import CC_CODES, LICENCE_PRESETS
from ssmttm.data.sources import (
    PROBLEM_COLUMNS, DatasetSource, Problem, add_metadata_argument, get_source, metadata_from_args, problems_frame,
)
from ssmttm.errors import SsmttmError

log = logging.getLogger("ssmttm.licenses")

UNPARSABLE = "licence record unparsable"
LIC_URL_RE = re.compile(
    r"^https?://(?:www\.)?creativecommons\.org/licen[sc]es/(?P<code>[A-Za-z-]+)/(?P<version>\d+(?:\.\d+)?)"
    # optional jurisdiction port (/3.0/es/, /2.5/scotland/); a deed or legal-code page is not a port
    r"(?:/(?!(?:deed|legalcode)(?:[./]|$))(?P<port>[A-Za-z-]{2,}))?"
    # optional page of the same licence: /deed, /deed.en, /deed.pt_BR, /legalcode, /legalcode.fr
    r"(?:/(?:deed|legalcode)(?:\.[A-Za-z]{2,3}(?:[_-][A-Za-z0-9]+)?)?)?"
    r"/?$"
)

UNKNOWN = "unknown"
# Records of one track that name different licences: the track's licence column and its reason.
CONFLICT = "conflict"
LICENCE_CONFLICT = "licence_conflict"
# A duplicate record naming the same licence under other names: listed, the track is kept.
DUPLICATE_NAMES = "duplicate record with other names"
TRACK_TABLE_COLUMNS = (
    "track_id", "track_num", "path", "shard", "seconds", "licence", "licence_version", "licence_url",
    "title", "artist", "track_url", "attribution", "allowed", "reason",
)
SUMMARY_COLUMNS = (
    "licence", "tracks_total", "hours_total", "tracks_included", "hours_included",
    "tracks_excluded", "hours_excluded",
)
# read_licences(): one row per track that has a readable record
LICENCE_COLUMNS = (
    "track_id", "record", "line", "title", "artist", "track_url", "licence", "licence_version",
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


def licence_key(url: str) -> tuple[str, str, str]:
    """(code, version, jurisdiction port or "") of a CC licence URL: what makes two licences the same.

    Scheme, ``www.``, a trailing slash and a deed or legal-code page (``/deed.en``, ``/legalcode``)
    only point at another page of the same licence; a port (``/3.0/es/``) is a different licence text.
    Raises ValueError when the URL is not a CC licence URL or names a code outside CC_CODES.
    """
    m = LIC_URL_RE.match(url)
    if not m:
        raise ValueError(f"licence URL {url!r} is not creativecommons.org/licenses/<code>/<version>/"
                         "[<port>/][deed.<lang>|legalcode]")
    code = m.group("code").lower()
    version = m.group("version")
    if "." not in version:
        version += ".0"
    if code not in CC_CODES:
        raise ValueError(f"unknown licence code {code!r} in {url!r} (known: {', '.join(CC_CODES)})")
    return code, version, (m.group("port") or "").lower()


def parse_licence_url(url: str) -> tuple[str, str]:
    """``http://creativecommons.org/licenses/by-nc-sa/3.0/deed.en`` -> ``("by-nc-sa", "3.0")``.

    Raises ValueError when the URL is not a CC licence URL or names a code outside CC_CODES.
    """
    code, version, _ = licence_key(url)
    return code, version


def _licence_of(url: str, words: str) -> tuple[str, str]:
    """(code, version) of one record; ValueError when the URL is not a known CC licence or the words
    name another licence or version than it."""
    code, version = parse_licence_url(url)
    wcode = _words_code(words)
    if wcode is not None and wcode != code:
        raise ValueError(f"licence words {words!r} name {wcode}, URL names {code}")
    wver = re.search(r"\b(\d+\.\d+)\b", words)
    if wver and wver.group(1) != version:
        raise ValueError(f"licence words name version {wver.group(1)}, URL names {version}")
    return code, version


def _problem(row: dict, reason: str) -> Problem:
    return Problem(line=int(row["line"]), raw=row["raw"], reason=reason, record=int(row["record"]), file=row["file"],
                   track_id=row["track_id"])


def read_licences(records: pd.DataFrame, problems: list[Problem]) -> tuple[pd.DataFrame, list[Problem]]:
    """A source's licence records (``licence_records()``) -> one row per track (LICENCE_COLUMNS) + problems.

    Each record's URL is read as a CC licence and checked against its words; a record that fails is a
    problem (with its track id: the audit excludes that track as unparsable). Several records of one
    track are settled by :func:`_resolve_duplicates`. ``problems`` (the source's) come back with the
    new ones, in record order; the table's ``attrs["n_duplicates_merged"]`` counts identical records merged.
    """
    problems = list(problems)
    by_track: dict[str, list[dict]] = {}  # track id -> its readable records, in file order
    for row in records.to_dict("records"):
        try:
            row["licence"], row["licence_version"] = _licence_of(row["licence_url"], row["licence_words"])
        except ValueError as exc:
            problems.append(_problem(row, str(exc)))
            continue
        by_track.setdefault(row["track_id"], []).append(row)
    rows, n_merged = [], 0
    for track_id, group in by_track.items():
        row, extra = _resolve_duplicates(track_id, group)
        problems += extra
        if row["licence"] != CONFLICT:
            n_merged += len(group) - 1 - len(extra)
        rows.append(row)
    if n_merged:
        log.info("%d identical duplicate licence record(s) merged into their first record", n_merged)
    problems.sort(key=lambda p: (p.record is None, p.record or 0))  # stable: one file's records in order
    df = pd.DataFrame(rows, columns=list(LICENCE_COLUMNS)).sort_values("record", kind="stable")
    df = df.reset_index(drop=True)
    df.attrs["n_duplicates_merged"] = n_merged
    return df, problems


def _licence_label(row: dict) -> str:
    """``CC BY-NC 3.0 (<url>, line 12)``: one record's licence, for conflict reports."""
    return f"CC {row['licence'].upper()} {row['licence_version']} ({row['licence_url']}, line {row['line']})"


def _names(row: dict) -> tuple[str, str, str]:
    """What an attribution copies from a record, whitespace-normalised: (title, artist, track URL)."""
    return " ".join(row["title"].split()), " ".join(row["artist"].split()), row["track_url"]


def _resolve_duplicates(track_id: str, group: list[dict]) -> tuple[dict, list[Problem]]:
    """One licence row for ``track_id`` from all its readable records, plus the problems to report.

    - one record, or identical ones: that record (merged silently);
    - different licences (:func:`licence_key`): a row with licence ``conflict``; every record is
      reported, since which one is right cannot be told from the file;
    - same licence, other title/artist/track URL: the first record, the others reported (the licence
      is not in doubt, the attribution names are).
    """
    first = group[0]
    if len(group) == 1:
        return first, []
    keys = [licence_key(r["licence_url"]) for r in group]
    if len(set(keys)) > 1:
        seen, labels = set(), []
        for r, k in zip(group, keys):
            if k not in seen:
                seen.add(k)
                labels.append(_licence_label(r))
        reason = (f"{LICENCE_CONFLICT}: {len(group)} records for {track_id} name different licences: "
                  + " vs ".join(labels) + "; the track is excluded, its licence is not guessed")
        return ({**first, "licence": CONFLICT, "licence_version": "", "licence_url": "", "licence_words": ""},
                [_problem(r, reason) for r in group])
    problems = [
        _problem(r, f"{DUPLICATE_NAMES}: record for {track_id} reads {r['title']!r} by {r['artist']!r} "
                    f"({r['track_url']}), the first one (line {first['line']}) {first['title']!r} by "
                    f"{first['artist']!r} ({first['track_url']}); both name "
                    f"{_licence_label(first).split(' (')[0]}, the first record's names are kept")
        for r in group[1:] if _names(r) != _names(first)
    ]
    return first, problems


def attribution(title: str, artist: str, track_url: str, code: str, version: str, licence_url: str) -> str:
    """Ready-to-paste CC attribution: “Title” by Artist (URL), licensed under CC BY-NC-SA 3.0 (URL)."""
    return (f"\u201c{title}\u201d by {artist} ({track_url}), licensed under "
            f"CC {code.upper()} {version} ({licence_url})")


def unparsed_tracks(problems: list[Problem]) -> dict[str, str]:
    """Track id -> reason, for the unreadable licence records that still name their track.

    Conflicts and renamed duplicates are left out: the licence table already says what they mean.
    """
    out: dict[str, str] = {}
    for p in problems:
        if p.track_id and not p.reason.startswith((LICENCE_CONFLICT, DUPLICATE_NAMES)):
            out.setdefault(p.track_id, p.reason)
    return out


def audit(
    tracks: pd.DataFrame,
    licences: pd.DataFrame,
    allow: tuple[str, ...],
    unparsed: dict[str, str] | None = None,
) -> pd.DataFrame:
    """One row per track (TRACK_TABLE_COLUMNS): its licence (:func:`read_licences`) joined by track id,
    the allow-list applied.

    A track with no licence record gets licence ``unknown`` and is excluded ("no licence record");
    one whose record could not be parsed (``unparsed``: track id -> reason) says so instead, also when
    another record of it could be read (the unreadable one may name another licence). A track whose
    records conflict (licence ``conflict``) is excluded with reason ``licence_conflict`` whatever
    ``allow`` holds: no allow-list can admit a licence that is not known.
    """
    unparsed = unparsed or {}
    df = tracks[["track_id", "track_num", "path", "shard", "seconds"]].merge(
        licences.drop(columns=["record", "line"]), on="track_id", how="left")
    for c in ("licence", "licence_version", "licence_url", "track_url", "title", "artist"):
        df[c] = df[c].fillna("").astype(str)
    attrs, allowed, reasons = [], [], []
    for tid, t, a, code, ver, lurl, turl in zip(
        df["track_id"], df["title"], df["artist"], df["licence"], df["licence_version"], df["licence_url"],
        df["track_url"],
    ):
        known = bool(code) and code != CONFLICT
        attrs.append(attribution(t, a, turl, code, ver, lurl) if known else "")
        why = unparsed.get(tid)
        if code == CONFLICT:
            allowed.append(False)
            reasons.append(LICENCE_CONFLICT)  # the licences it names: unparsed.tsv
        elif not code:
            allowed.append(False)
            reasons.append(f"{UNPARSABLE}: {why}" if why else "no licence record")
        elif why:
            allowed.append(False)
            reasons.append(f"{UNPARSABLE}: another record of this track could not be read ({why}); "
                           f"its CC {code.upper()} {ver} record alone is not trusted")
        elif code in allow:
            allowed.append(True)
            reasons.append("")
        else:
            allowed.append(False)
            reasons.append(f"licence {code} not allowed (allow: {','.join(allow)})")
    df["attribution"], df["allowed"], df["reason"] = attrs, allowed, reasons
    df["licence"] = df["licence"].where(df["licence"] != "", UNKNOWN)
    return df[list(TRACK_TABLE_COLUMNS)].sort_values("track_num", kind="stable").reset_index(drop=True)


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per-licence (CC_CODES order, then unknown, conflict, TOTAL) track counts and hours, in/excluded."""
    rows = []
    for code in (*CC_CODES, UNKNOWN, CONFLICT, "TOTAL"):
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


def _dataset(title: str) -> str:
    return f"{title} " if title else ""


def attribution_markdown(table: pd.DataFrame, allow: tuple[str, ...], preset: str, title: str = "",
                         note: str = "") -> str:
    """The audit's ATTRIBUTION.md: header explaining the allow-list, then one line per allowed track by id.

    ``title`` and ``note``: the dataset source's name and the lines on where its licences come from
    (:attr:`~ssmttm.data.sources.DatasetSource.attribution_note`). This lists what the licence gate
    lets through, not what a model was trained on (a model's training split is a subset:
    :func:`training_licences` writes its own list next to each checkpoint).
    """
    inc = table[table["allowed"]].sort_values("track_num")
    head = [
        f"# Licence audit: {_dataset(title)}tracks allowed by the licence gate",
        "",
        "This is the licence audit of every track in the metadata, not a list of training data: each",
        "model is trained on a subset (its training split), listed in the ATTRIBUTION.md next to its",
        "checkpoint.",
        "",
        f"Licence allow-list: {', '.join('CC ' + c.upper() for c in allow)} (preset: {preset}).",
        f"{len(inc)} of {len(table)} tracks are allowed; the others are excluded because their licence",
        "is not on the allow-list, they have no readable licence record, or their records name",
        "conflicting licences (see tracks.tsv and unparsed.tsv).",
        *note.splitlines(),
        "",
    ]
    return "\n".join(head + [f"- {a}" for a in inc["attribution"]]) + "\n"


def licence_summary(table: pd.DataFrame, allow, preset, n_unparsed: int, sha: dict) -> dict:
    """The licenses.json object: the whole audit (a checkpoint carries :func:`training_licences` instead)."""
    inc = table[table["allowed"]]
    per = {}
    for code in (*CC_CODES, UNKNOWN, CONFLICT):
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
        "n_licence_conflicts": int((table["licence"] == CONFLICT).sum()),
        # fractions of the INCLUDED tracks whose licence forbids commercial use / derivatives
        "nc_fraction": round(float(inc["licence"].str.contains("nc").sum()) / n, 6) if n else 0.0,
        "nd_fraction": round(float(inc["licence"].str.contains("nd").sum()) / n, 6) if n else 0.0,
        **sha,
    }


class LicenceError(SsmttmError, ValueError):
    """A training split the licence audit does not cover or does not allow, or an unreadable audit table."""


TRAIN_SCOPE = "train split"
_TABLE_NEEDS = ("track_id", "licence", "licence_version", "seconds", "allowed", "reason", "attribution")


def _parts(code: str) -> set[str]:
    return set(code.split("-"))


def training_licences(
    tracks_tsv: str | os.PathLike, track_ids: Iterable[str], audit: dict | None = None,
) -> tuple[dict, str]:
    """(summary, attribution markdown) for exactly these tracks: the training split of one model.

    ``tracks_tsv`` is the audit's results/licenses/tracks.tsv; ``track_ids`` the split's ids as in its
    ``track_id`` column, which is also the manifest's (``track_0000214``; repeats are ignored);
    ``audit`` the audit's licenses.json, for the allow-list, preset and source hashes.

    Summary keys: ``scope`` ("train split"), ``n_tracks``, ``hours`` and ``hours_basis``,
    ``per_licence`` (code -> {tracks, hours}, codes present only, CC_CODES order),
    ``per_licence_version`` ("cc-by-nc-sa-3.0" -> {tracks, hours}), ``nc_fraction`` and
    ``nd_fraction`` (share of the split's tracks), ``allow``, ``preset``, ``audit_n_tracks``,
    ``audit_n_included`` (None without ``audit``), ``source_sha256`` (the audit's inputs, or None),
    ``tracks_tsv_sha256``, ``track_ids_sha256`` (of the sorted ids, one per line) and
    ``attribution_sha256`` (of the markdown, UTF-8).

    Raises LicenceError naming ``tracks_tsv`` and the track when an id is not in the table or the
    table does not allow it: a training set must never contain an excluded track.
    """
    path = Path(tracks_tsv)
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise LicenceError(f"{path}: cannot read the licence audit table ({exc})") from exc
    if missing := [c for c in _TABLE_NEEDS if c not in table.columns]:
        raise LicenceError(f"{path}: lacks column(s) {missing} (is it the licenses stage's tracks.tsv?)")
    dup = table.loc[table["track_id"].duplicated(), "track_id"]
    if len(dup):
        raise LicenceError(f"{path}: track {dup.iloc[0]} has {int((table['track_id'] == dup.iloc[0]).sum())} "
                           "rows; the audit table must hold one row per track")
    if isinstance(track_ids, (str, bytes)):  # one id would be read as its characters
        raise TypeError(f"training_licences: track_ids must be a collection of ids, not {track_ids!r}")
    ids = sorted({str(t).strip() for t in track_ids})
    if not ids:
        raise LicenceError(f"{path}: no track ids given for the training split")
    rows = table.set_index("track_id")
    absent = [t for t in ids if t not in rows.index]
    if absent:
        example = f" (its ids look like {table['track_id'].iloc[0]!r})" if len(table) else " (it is empty)"
        raise LicenceError(f"{path}: track {absent[0]} of the training split is not in the licence audit table"
                           f"{example}; {len(absent)} such track(s): {absent[:5]}")
    sub = rows.loc[ids]
    allow = list((audit or {}).get("allow") or []) or None
    bad = sub[(sub["allowed"].str.strip().str.lower() != "true")
              | (sub["licence"].isin([UNKNOWN, CONFLICT]))
              | (~sub["licence"].isin(allow) if allow else False)]
    if len(bad):
        t, r = bad.index[0], bad.iloc[0]
        why = r["reason"] or (f"licence {r['licence']} not in the audit's allow-list {allow}" if allow else "")
        raise LicenceError(f"{path}: track {t} is in the training split but excluded by the licence audit "
                           f"(licence {r['licence']}, allowed {r['allowed']}, reason: {why or '-'}); "
                           f"{len(bad)} such track(s): {list(bad.index[:5])}. A training set must never "
                           "contain an excluded track: rebuild the manifest from this audit")
    seconds = pd.to_numeric(sub["seconds"], errors="coerce")
    if seconds.isna().any() or not sub["attribution"].str.strip().all():
        t = sub.index[seconds.isna() | ~sub["attribution"].str.strip().astype(bool)][0]
        raise LicenceError(f"{path}: track {t} has no duration or no attribution text")
    sha = io.sha256_file(path)
    recorded = ((audit or {}).get("sha256") or {}).get("tracks.tsv")
    if recorded and recorded != sha:
        raise LicenceError(f"{path}: sha256 {sha} differs from the {recorded} its licenses.json recorded; the "
                           "two files come from different audit runs")

    def hours(mask) -> float:
        return round(float(seconds[mask].sum()) / 3600, 4)

    order = {c: i for i, c in enumerate(CC_CODES)}
    per, per_version = {}, {}
    for code in sorted(set(sub["licence"]), key=lambda c: (order.get(c, len(order)), c)):
        m = sub["licence"] == code
        per[code] = {"tracks": int(m.sum()), "hours": hours(m)}
        for ver in sorted(set(sub.loc[m, "licence_version"]), key=lambda v: [int(x) for x in v.split(".")
                                                                             if x.isdigit()]):
            mv = m & (sub["licence_version"] == ver)
            per_version[f"cc-{code}-{ver}"] = {"tracks": int(mv.sum()), "hours": hours(mv)}
    n = len(ids)
    nc = sum(v["tracks"] for c, v in per.items() if "nc" in _parts(c))
    nd = sum(v["tracks"] for c, v in per.items() if "nd" in _parts(c))
    total_h = hours(slice(None))
    a = audit or {}
    dataset = a.get("dataset_source") or {}  # the audit's source: its name and where its licences come from
    head = [
        f"# Attribution: the {n} {_dataset(dataset.get('title', ''))}tracks of this model's training split",
        "",
        f"This model was trained on clips of exactly these {n} tracks ({total_h} h of whole source tracks),",
        "the training split of its data manifest; validation tracks and tracks the licence audit",
        "excluded are not listed."
        + (f" Licence allow-list: {', '.join('CC ' + c.upper() for c in allow)} (preset: {a.get('preset')})."
           if allow else ""),
        *(dataset.get("attribution_note") or "").splitlines(),
        "",
        "| licence | tracks | hours |",
        "|---|---|---|",
        *(f"| CC {k[3:].rsplit('-', 1)[0].upper()} {k.rsplit('-', 1)[1]} | {v['tracks']} | {v['hours']} |"
          for k, v in per_version.items()),
        f"| total | {n} | {total_h} |",
        "",
        f"Non-commercial (NC): {nc} of {n} tracks; no-derivatives (ND): {nd} of {n} tracks.",
        "",
    ]
    markdown = "\n".join(head + [f"- {sub.at[t, 'attribution']}" for t in ids]) + "\n"
    summary = {
        "scope": TRAIN_SCOPE, "n_tracks": n, "hours": total_h,
        "hours_basis": "whole-track DURATION of tracks.tsv (the clips trained on may be shorter)",
        "per_licence": per, "per_licence_version": per_version,
        "nc_fraction": round(nc / n, 6), "nd_fraction": round(nd / n, 6),
        "allow": allow, "preset": a.get("preset"),
        "audit_n_tracks": a.get("n_tracks"), "audit_n_included": a.get("n_included"),
        "source_sha256": a.get("source_sha256"), "tracks_tsv_sha256": sha,
        "track_ids_sha256": hashlib.sha256("".join(t + "\n" for t in ids).encode()).hexdigest(),
        "attribution_sha256": hashlib.sha256(markdown.encode()).hexdigest(),
    }
    return summary, markdown


def resolve_allow(allow: Iterable[str], preset: str) -> tuple[tuple[str, ...], str]:
    """(allow-list, preset name) from config keys ``licenses.allow`` and ``licenses.preset``: a named
    preset's codes, or with ``custom`` the ``allow`` codes. An ``allow`` list given with a named preset
    must agree with it (it would otherwise be ignored). ValueError names the flag and the key."""
    codes = tuple(dict.fromkeys(c.strip().lower() for c in allow if c.strip()))
    bad = [c for c in codes if c not in CC_CODES]
    if bad:
        raise ValueError(f"--allow / config key licenses.allow: unknown licence code(s) {bad} "
                         f"(known: {', '.join(CC_CODES)})")
    if preset != "custom":
        if preset not in LICENCE_PRESETS:
            raise ValueError(f"--preset / config key licenses.preset: unknown preset {preset!r} "
                             f"(known: {', '.join(LICENCE_PRESETS)}, custom)")
        if codes and set(codes) != set(LICENCE_PRESETS[preset]):
            raise ValueError(f"--allow / config key licenses.allow {list(codes)} disagrees with preset {preset} "
                             f"({', '.join(LICENCE_PRESETS[preset])}); use preset custom for an allow-list of "
                             f"your own")
        return tuple(LICENCE_PRESETS[preset]), preset
    if not codes:
        raise ValueError("--allow / config key licenses.allow: required when the preset is custom")
    return codes, preset


def run(source: DatasetSource, files: Mapping[str, Path], allow: tuple[str, ...], preset: str, out_dir: Path) -> dict:
    """Run the audit of ``source`` over its metadata ``files`` ({``source.metadata`` key: path}, the
    keys its ``tracks`` and ``licences`` operations read) and write every output into ``out_dir``;
    returns the licenses.json object."""
    tr, p_tracks = source.list_tracks(files)
    records, p_records = source.licence_records(files)
    licences, p_lic = read_licences(records, p_records)
    table = audit(tr, licences, allow, unparsed_tracks(p_lic))
    orphans = len(set(licences["track_id"]) - set(tr["track_id"]))
    problems = p_lic + p_tracks
    out_dir.mkdir(parents=True, exist_ok=True)
    io.write_table(out_dir / "tracks.tsv", table)
    io.write_table(out_dir / "summary.tsv", summarize(table))
    io.write_text(out_dir / "ATTRIBUTION.md", attribution_markdown(table, allow, preset, source.title,
                                                                   source.attribution_note))
    io.write_table(out_dir / "unparsed.tsv", problems_frame(problems)[list(PROBLEM_COLUMNS)])
    names = [Path(f).name for f in files.values()]
    sha = {
        "sha256": {"tracks.tsv": io.sha256_file(out_dir / "tracks.tsv"),
                   "ATTRIBUTION.md": io.sha256_file(out_dir / "ATTRIBUTION.md")},
        "source_sha256": {Path(f).name: io.sha256_file(f) for f in files.values()},
        "n_unparsed_by_file": {f: sum(p.file == f for p in problems) for f in names},
        "n_records_without_track": orphans,
        "n_duplicates_merged": int(licences.attrs.get("n_duplicates_merged", 0)),
        "dataset_source": {"kind": source.name, "title": source.title, "attribution_note": source.attribution_note},
    }
    summary = licence_summary(table, allow, preset, len(problems), sha)
    io.write_json(out_dir / "licenses.json", summary)
    for p in problems[:20]:
        log.warning("unparsed %s line %d: %s", p.file, p.line, p.reason)
    if problems:
        log.warning("%d unparsable, conflicting or duplicate records/rows in total (%s); all listed in %s",
                    len(problems), summary["n_unparsed_by_file"], out_dir / "unparsed.tsv")
    log.info("licences: %d/%d tracks included (%.1f h), %d unparsed, %d licence conflict(s), NC %.1f %%, "
             "ND %.1f %%", summary["n_included"], summary["n_tracks"], summary["hours_included"], len(problems),
             summary["n_licence_conflicts"],
             100 * summary["nc_fraction"], 100 * summary["nd_fraction"])
    return summary


def main(argv: list[str]) -> int | None:
    from ssmttm.data.options import LicensesSettings, SourceSettings

    p = argparse.ArgumentParser(prog="ssmttm licenses", description=__doc__.split("\n")[0])
    add_metadata_argument(p, "licenses=audio_licenses.txt cleantags=raw_30s_cleantags.tsv meta=raw.meta.tsv")
    p.add_argument("--out-dir", type=Path, required=True)
    settings.add_arguments(p, LicensesSettings)
    settings.add_arguments(p, SourceSettings, prefix="source-")
    args = p.parse_args(argv)
    cfg = settings.from_args(p, LicensesSettings, args)
    source = get_source(settings.from_args(p, SourceSettings, args, prefix="source-").kind)
    logs.setup()
    try:
        allow, preset = resolve_allow(cfg.allow, cfg.preset)
    except ValueError as exc:
        p.error(str(exc))
    files = metadata_from_args(p, source, args.metadata, "tracks", "licences")
    run(source, files, allow, preset, args.out_dir)
    return 0
