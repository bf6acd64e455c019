"""Evaluation prompt sets parsed from the datasets' own csv files (docs/reference.md §3).

- ``musiccaps``: ``musiccaps-public.csv`` (5,521 rows; columns :data:`MUSICCAPS_COLUMNS`; CC BY-SA
  4.0). One prompt per row: ``prompt_id = ref_id = ytid`` (YouTube ids are ``[A-Za-z0-9_-]{11}``,
  safe file names) and the clip bounds ``start_s``/``end_s`` (10 s) kept in the record, for the
  ``reference-audio`` stage. Subsets (option ``subset``):

  * ``all``: every well-formed row;
  * ``balanced``: ``is_balanced_subset == True``, the 1k genre-balanced subset;
  * ``no_singing``: rows whose caption and aspect list name no singing or voice. The published
    2,218-row "no-singing" subset's exact definition is (unknown); this is a keyword filter
    (``exclude_words``, whole words, case-insensitive, over the caption and each aspect) where a word
    preceded within ``negation_window`` words by a negation (``no vocals``, ``without a singer``)
    does not count. CHECK its count on the real file against 2,218 and tune the words if needed;
  * ``random``: ``n`` rows (default 200, the size of the subset in the authors' code; the paper's
    exact subset is (unknown)) drawn with ``seed``.

  ``n``/``seed`` also draw a random sample from any other subset. Kept in file order.
- ``song_describer``: the Song Describer Dataset csv (706 Jamendo tracks, 1,106 captions; columns
  :data:`SONG_DESCRIBER_COLUMNS`). ``prompt_id = sdd_<caption_id>``, ``ref_id = str(track number)``.
  Options ``valid_only`` (only ``is_valid_subset == True``), ``one_per_track`` (the first valid
  caption of each track, else its first caption), ``n``/``seed``.

Parsing is strict: a malformed row is logged with its line number and skipped, a duplicate id is
logged and its later rows skipped; a file with the wrong header is the wrong file
(:class:`~ssmttm.generate.prompts.PromptError`).
"""

from __future__ import annotations

import ast
import csv
import logging
import math
import os
import re
from pathlib import Path

from ssmttm.constants import MUSICCAPS_COLUMNS
from ssmttm.data.jamendo import SONG_DESCRIBER_COLUMNS, Problem
from ssmttm.generate.prompts import PromptError

log = logging.getLogger(__name__)

MUSICCAPS_SUBSETS = ("all", "balanced", "no_singing", "random")
YTID_RE = re.compile(r"^[A-Za-z0-9_-]{11}$")
RANDOM_N = 200  # the authors' code evaluates a 200-caption subset (docs/reference.md §3)
# Default words that mark singing/voice in a MusicCaps caption or aspect (whole words).
NO_SINGING_WORDS = (
    "sing", "sings", "singer", "singers", "singing", "sung", "vocal", "vocals",
    "vocalist", "vocalists", "vocalizing", "vocalising", "voice", "voices", "rap", "raps", "rapper",
    "rappers", "rapping", "choir", "choirs", "choral", "lyrics", "lyric", "humming", "hums", "chant",
    "chants", "chanting", "cappella", "acapella", "yodel", "yodeling", "beatbox", "beatboxing",
)
NEGATION_WORDS = ("no", "without", "not", "lacks", "lacking", "absent", "absence", "zero", "non")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")  # hyphens split words: "non-vocal", "a-cappella"
_CLAUSE = re.compile(r"[.,;:!?()\[\]|]")
_BOOL = {"true": True, "false": False}


def _bool(value: str, col: str) -> bool:
    v = value.strip().lower()
    if v not in _BOOL:
        raise ValueError(f"{col} {value!r} is not True/False")
    return _BOOL[v]


def _csv_rows(path: str | os.PathLike, columns: tuple[str, ...], where: str):
    """Yield (first line number, fields) of each csv record after checking the header; the csv module
    handles quoted commas and newlines inside captions."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        try:
            header = [c.strip().lstrip("\ufeff") for c in next(reader)]
        except StopIteration:
            raise PromptError(f"{where}: empty file (expected header {list(columns)})") from None
        if tuple(header) != columns:
            raise PromptError(f"{where}: header {header} is not the expected {list(columns)}")
        line = reader.line_num + 1
        for fields in reader:
            if any(f.strip() for f in fields):
                yield line, fields
            line = reader.line_num + 1


def _report(problems: list[Problem], where: str) -> None:
    for p in problems:
        log.warning("%s: line %d: %s (skipped)", where, p.line, p.reason)
    if problems:
        log.warning("%s: %d malformed or duplicate rows skipped", where, len(problems))


def _sample(rows: list[dict], n, seed, where: str) -> list[dict]:
    """``n`` of ``rows`` drawn without replacement by ``seed`` (file order kept); all rows if n is None."""
    if n is None:
        return rows
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise PromptError(f"--options n: expected a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise PromptError(f"--options seed: expected an integer, got {seed!r}")
    if n > len(rows):
        raise PromptError(f"--options n: {n} asked for, but {where} has only {len(rows)} prompts")
    import numpy as np

    keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=n, replace=False))
    return [rows[int(i)] for i in keep]


# --- MusicCaps --------------------------------------------------------------------------------------------
def read_musiccaps(path: str | os.PathLike) -> tuple[list[dict], list[Problem]]:
    """Parse ``musiccaps-public.csv`` strictly: (rows, problems).

    Each row: {ytid, start_s, end_s (float seconds), labels (str), aspects (list[str]), caption,
    author_id, is_balanced_subset, is_audioset_eval (bool), line}. ``aspect_list`` is a Python list
    literal in the file (``['low quality', 'piano']``), read with ``ast.literal_eval`` (literals only,
    never code). A problem: wrong field count, bad ytid, non-numeric or reversed bounds, empty caption,
    unreadable aspect list or flag, duplicate ytid.
    """
    name = Path(path).name
    rows: list[dict] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for ln, fields in _csv_rows(path, MUSICCAPS_COLUMNS, f"--prompts-file {path}"):
        try:
            if len(fields) != len(MUSICCAPS_COLUMNS):
                raise ValueError(f"{len(fields)} fields, expected {len(MUSICCAPS_COLUMNS)}")
            ytid, start, end, labels, aspects, caption, author, balanced, ase = (f.strip() for f in fields)
            if not YTID_RE.match(ytid):
                raise ValueError(f"bad ytid {ytid!r} (expected 11 characters of [A-Za-z0-9_-])")
            try:
                start_s, end_s = float(start), float(end)
            except ValueError:
                raise ValueError(f"non-numeric start_s/end_s {start!r}/{end!r}") from None
            if not (math.isfinite(start_s) and math.isfinite(end_s) and 0 <= start_s < end_s):
                raise ValueError(f"invalid clip bounds start_s={start!r} end_s={end!r}")
            if not caption:
                raise ValueError("empty caption")
            try:
                aspect_list = ast.literal_eval(aspects) if aspects else []
            except (ValueError, SyntaxError):
                raise ValueError(f"aspect_list {aspects[:60]!r} is not a list literal") from None
            if not isinstance(aspect_list, list) or not all(isinstance(a, str) for a in aspect_list):
                raise ValueError(f"aspect_list {aspects[:60]!r} is not a list of strings")
            row = {"ytid": ytid, "start_s": start_s, "end_s": end_s, "labels": labels, "aspects": aspect_list,
                   "caption": caption, "author_id": author, "is_balanced_subset": _bool(balanced, "is_balanced_subset"),
                   "is_audioset_eval": _bool(ase, "is_audioset_eval"), "line": ln}
            if ytid in seen:
                raise ValueError(f"duplicate ytid {ytid} (first at line {seen[ytid]})")
        except ValueError as exc:
            problems.append(Problem(line=ln, raw=",".join(fields)[:200], reason=str(exc), file=name))
            continue
        seen[ytid] = ln
        rows.append(row)
    return rows, problems


def mentions_singing(texts: list[str], words=NO_SINGING_WORDS, negations=NEGATION_WORDS, window: int = 2) -> bool:
    """True when a word of ``words`` occurs in ``texts`` (whole words, case-insensitive) without one of
    ``negations`` among the ``window`` words before it in the same clause ("no vocals" does not count)."""
    words, negations = {w.lower() for w in words}, {w.lower() for w in negations}
    for text in texts:
        for clause in _CLAUSE.split(text.lower()):
            toks = _WORD.findall(clause)
            for i, t in enumerate(toks):
                if t in words and not any(p in negations for p in toks[max(0, i - window):i]):
                    return True
    return False


def musiccaps_set(prompts=None, prompts_file=None, *, subset: str = "all", n: int | None = None, seed: int = 0,
                  exclude_words: list[str] | None = None, negation_words: list[str] | None = None,
                  negation_window: int = 2) -> list[dict]:
    """The ``musiccaps`` prompt set from ``prompts_file`` (musiccaps-public.csv); see the module docstring.

    Returns records {prompt_id = ytid, text = caption, ref_id = ytid, start_s, end_s, is_balanced_subset}.
    """
    if prompts:
        raise PromptError("--prompt is for --prompt-set demo; musiccaps reads --prompts-file only")
    if not prompts_file:
        raise PromptError("--prompt-set musiccaps needs --prompts-file musiccaps-public.csv")
    if subset not in MUSICCAPS_SUBSETS:
        raise PromptError(f"--options subset: {subset!r} is not one of {', '.join(MUSICCAPS_SUBSETS)}")
    for key, val in (("exclude_words", exclude_words), ("negation_words", negation_words)):
        if val is not None and (not isinstance(val, list) or not all(isinstance(w, str) and w for w in val)):
            raise PromptError(f"--options {key}: expected a list of words, got {val!r}")
    if isinstance(negation_window, bool) or not isinstance(negation_window, int) or negation_window < 0:
        raise PromptError(f"--options negation_window: expected an integer >= 0, got {negation_window!r}")
    where = f"--prompts-file {prompts_file}"
    if not Path(prompts_file).is_file():
        raise PromptError(f"{where}: no such file")
    rows, problems = read_musiccaps(prompts_file)
    _report(problems, where)
    if subset == "balanced":
        rows = [r for r in rows if r["is_balanced_subset"]]
    elif subset == "no_singing":
        words = NO_SINGING_WORDS if exclude_words is None else exclude_words
        neg = NEGATION_WORDS if negation_words is None else negation_words
        rows = [r for r in rows if not mentions_singing([r["caption"], *r["aspects"]], words, neg, negation_window)]
    elif subset == "random" and n is None:
        n = RANDOM_N
    rows = _sample(rows, n, seed, f"musiccaps subset {subset!r}")
    log.info("musiccaps: subset %s: %d prompts (%d malformed rows skipped)", subset, len(rows), len(problems))
    return [{"prompt_id": r["ytid"], "text": r["caption"], "ref_id": r["ytid"], "start_s": r["start_s"],
             "end_s": r["end_s"], "is_balanced_subset": r["is_balanced_subset"]} for r in rows]


# --- Song Describer -----------------------------------------------------------------------------------------
def _track_number(track_id: str, path: str) -> int | None:
    """Jamendo track number from ``track_id`` (``214`` or ``track_0000214``) else from ``path``."""
    from ssmttm.data.jamendo import SDD_PATH_RE, TRACK_ID_RE

    t = track_id.strip()
    if t.isdigit():
        return int(t)
    m = TRACK_ID_RE.match(t) or SDD_PATH_RE.search(path.strip())
    return int(m.group(1)) if m else None


def read_song_describer_captions(path: str | os.PathLike) -> tuple[list[dict], list[Problem]]:
    """Parse the Song Describer csv strictly: (rows, problems).

    Each row: {caption_id (int), track (int Jamendo track number), caption, is_valid_subset (bool),
    line}. A problem: wrong field count, non-integer caption_id, no track number in track_id or path,
    empty caption, bad is_valid_subset flag, duplicate caption_id.
    """
    name = Path(path).name
    rows: list[dict] = []
    problems: list[Problem] = []
    seen: dict[int, int] = {}
    for ln, fields in _csv_rows(path, SONG_DESCRIBER_COLUMNS, f"--prompts-file {path}"):
        try:
            if len(fields) != len(SONG_DESCRIBER_COLUMNS):
                raise ValueError(f"{len(fields)} fields, expected {len(SONG_DESCRIBER_COLUMNS)}")
            rec = dict(zip(SONG_DESCRIBER_COLUMNS, (f.strip() for f in fields)))
            if not rec["caption_id"].isdigit():
                raise ValueError(f"caption_id {rec['caption_id']!r} is not a non-negative integer")
            cid = int(rec["caption_id"])
            track = _track_number(rec["track_id"], rec["path"])
            if track is None:
                raise ValueError(f"no Jamendo track number in track_id {rec['track_id']!r} or path {rec['path']!r}")
            if not rec["caption"]:
                raise ValueError("empty caption")
            valid = _bool(rec["is_valid_subset"], "is_valid_subset")
            if cid in seen:
                raise ValueError(f"duplicate caption_id {cid} (first at line {seen[cid]})")
        except ValueError as exc:
            problems.append(Problem(line=ln, raw=",".join(fields)[:200], reason=str(exc), file=name))
            continue
        seen[cid] = ln
        rows.append({"caption_id": cid, "track": track, "caption": rec["caption"], "is_valid_subset": valid,
                     "line": ln})
    return rows, problems


def song_describer_set(prompts=None, prompts_file=None, *, valid_only: bool = False, one_per_track: bool = False,
                       n: int | None = None, seed: int = 0) -> list[dict]:
    """The ``song_describer`` prompt set from ``prompts_file`` (the Song Describer csv).

    Returns records {prompt_id = sdd_<caption_id>, text, ref_id = str(track number), caption_id,
    is_valid_subset}; see the module docstring for the options.
    """
    if prompts:
        raise PromptError("--prompt is for --prompt-set demo; song_describer reads --prompts-file only")
    if not prompts_file:
        raise PromptError("--prompt-set song_describer needs --prompts-file song_describer.csv")
    for key, val in (("valid_only", valid_only), ("one_per_track", one_per_track)):
        if not isinstance(val, bool):
            raise PromptError(f"--options {key}: expected true or false, got {val!r}")
    where = f"--prompts-file {prompts_file}"
    if not Path(prompts_file).is_file():
        raise PromptError(f"{where}: no such file")
    rows, problems = read_song_describer_captions(prompts_file)
    _report(problems, where)
    if valid_only:
        rows = [r for r in rows if r["is_valid_subset"]]
    if one_per_track:
        first: dict[int, dict] = {}
        for r in rows:  # the first valid caption of a track wins over an earlier non-valid one
            cur = first.get(r["track"])
            if cur is None or (r["is_valid_subset"] and not cur["is_valid_subset"]):
                first[r["track"]] = r
        keep = {id(r) for r in first.values()}
        rows = [r for r in rows if id(r) in keep]
    rows = _sample(rows, n, seed, "song_describer")
    log.info("song_describer: %d prompts over %d tracks (%d malformed rows skipped)", len(rows),
             len({r["track"] for r in rows}), len(problems))
    return [{"prompt_id": f"sdd_{r['caption_id']}", "text": r["caption"], "ref_id": str(r["track"]),
             "caption_id": r["caption_id"], "is_valid_subset": r["is_valid_subset"]} for r in rows]
