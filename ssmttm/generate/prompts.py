"""Prompt sets: a registry of lazy factories, name -> list of prompt records.

A prompt record is ``{"prompt_id", "text", "ref_id", ...extra}``: ``ref_id`` names the reference clip
the prompt describes (MusicCaps: the YouTube id; Song Describer: the Jamendo track number as a
string; ``None`` for sets without references) and extra keys (``start_s``/``end_s`` of a MusicCaps
clip, ...) travel with it into the prompt-set JSON. Several prompts may share one ``ref_id``.

- ``demo``: a fixed list: the ``--prompt`` texts given on the command line, else a small YAML/JSON
  file (``--prompts-file``), else :data:`DEMO_PROMPTS` (a handful of captions in the style of the
  training captions);
- ``file``: prompts read from a ``.txt`` (one per line; blank lines and ``#`` comments skipped),
  ``.csv`` (a ``caption``/``text``/``prompt`` column, optional ``prompt_id``/``id``/``caption_id``
  and ``ref_id``), ``.json``/``.yaml``/``.yml`` file;
- ``musiccaps`` and ``song_describer`` (docs/reference.md §3): parsed from the dataset's csv
  (``--prompts-file``), with options; see :mod:`ssmttm.eval.promptsets`.

A factory is ``f(prompts=None, prompts_file=None, **options)``; its keyword parameters are its
options (from the config, ``--options`` JSON), and an option it does not take fails naming the key.
A factory is imported only when its set is asked for, so listing the registry is free.

A prompt-set JSON written by the ``prompt-set`` stage (a mapping with ``name`` and ``prompts``)
given as ``--prompts-file`` is already resolved: every set reads it as is (its options were applied
when it was written), so ``generate --prompt-set musiccaps --prompts-file <that JSON>`` works.

Accepted JSON/YAML layouts: a list of strings; a list of ``{"prompt_id"|"id": ..., "text"|
"prompt"|"caption": ..., "ref_id": ..., ...}`` objects; a mapping ``{prompt_id: text}``; or any of
these under a ``"prompts"`` key. Prompt ids name output files, so they must match
``[A-Za-z0-9._-]+`` (texts without an id get ``p000``, ``p001``, ...); duplicated ids fail naming
the id.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from pathlib import Path

from ssmttm.errors import SsmttmError

# name -> "module:function"; function(prompts=None, prompts_file=None, **options) -> list of
# (prompt_id, text) pairs or {"prompt_id", "text", "ref_id"?, ...extra} records
PROMPT_SETS: dict[str, str] = {
    "demo": "ssmttm.generate.prompts:demo_set",
    "file": "ssmttm.generate.prompts:file_set",
    "musiccaps": "ssmttm.eval.promptsets:musiccaps_set",
    "song_describer": "ssmttm.eval.promptsets:song_describer_set",
}

# Captions in the style of the training captions (instrumentation, genre, mood, rhythm, scenario).
DEMO_PROMPTS: list[tuple[str, str]] = [
    ("calm_piano", "a calm piano piece with soft strings and a slow rhythm, suitable for study"),
    ("upbeat_rock", "an energetic rock track with electric guitar, bass and driving drums"),
    ("ambient_pads", "a dreamy ambient piece with warm synthesizer pads and gentle bells"),
    ("jazz_sax", "a relaxing jazz tune featuring saxophone, piano and a laid back groove"),
]

_ID = re.compile(r"^[A-Za-z0-9._-]+$")
_TEXT_KEYS = ("text", "prompt", "caption")
_ID_KEYS = ("prompt_id", "id", "caption_id")
_SET_ARGS = ("prompts", "prompts_file")


class PromptError(SsmttmError, ValueError):
    """A prompt set or file that cannot be used; the message names the file, set or prompt id."""


def check_records(items: list, where: str) -> list[dict]:
    """Validate prompts given as (prompt_id, text) pairs or records; return records
    ``{"prompt_id", "text", "ref_id", ...extra}`` with stripped texts and ``ref_id`` a str or None."""
    if not items:
        raise PromptError(f"{where}: no prompts")
    seen: set[str] = set()
    out = []
    for item in items:
        if isinstance(item, dict):
            rec = dict(item)
            pid, text = rec.pop("prompt_id", None), rec.pop("text", None)
            ref = rec.pop("ref_id", None)
        else:
            (pid, text), rec, ref = item, {}, None
        pid = str(pid)
        if not _ID.match(pid) or pid in (".", ".."):
            raise PromptError(f"{where}: prompt id {pid!r} is not a safe file name (use [A-Za-z0-9._-])")
        if pid == "index":
            raise PromptError(f"{where}: prompt id 'index' is reserved (index.json)")
        if pid in seen:
            raise PromptError(f"{where}: prompt id {pid!r} appears twice")
        if not isinstance(text, str):
            raise PromptError(f"{where}: prompt {pid!r} is not a string ({type(text).__name__})")
        if ref is not None and not isinstance(ref, (str, int)):
            raise PromptError(f"{where}: prompt {pid!r}: ref_id must be a string ({type(ref).__name__})")
        seen.add(pid)
        out.append({"prompt_id": pid, "text": text.strip(), "ref_id": None if ref in (None, "") else str(ref), **rec})
    return out


def _check(items: list, where: str) -> list[tuple[str, str]]:
    return [(r["prompt_id"], r["text"]) for r in check_records(items, where)]


def _auto_ids(texts: list[str]) -> list[tuple[str, str]]:
    return [(f"p{i:03d}", t) for i, t in enumerate(texts)]


def _records(obj, where: str) -> list[dict]:
    """Parse the JSON/YAML layouts of the module docstring into records (extra keys kept)."""
    if isinstance(obj, dict) and "prompts" in obj:
        obj = obj["prompts"]
    if isinstance(obj, dict):
        return [{"prompt_id": str(k), "text": v} for k, v in obj.items()]
    if not isinstance(obj, list):
        raise PromptError(f"{where}: expected a list or mapping of prompts, got {type(obj).__name__}")
    items = []
    for i, rec in enumerate(obj):
        if isinstance(rec, str):
            items.append({"prompt_id": f"p{i:03d}", "text": rec})
        elif isinstance(rec, dict):
            tkey = next((k for k in _TEXT_KEYS if k in rec), None)
            if tkey is None:
                raise PromptError(f"{where}: entry {i} has none of the keys {list(_TEXT_KEYS)}")
            ikey = next((k for k in _ID_KEYS if k in rec), None)
            extra = {k: v for k, v in rec.items() if k not in (tkey, ikey, "ref_id")}
            items.append({**extra, "prompt_id": str(rec[ikey]) if ikey else f"p{i:03d}", "text": rec[tkey],
                          "ref_id": rec.get("ref_id")})
        else:
            raise PromptError(f"{where}: entry {i} is neither a string nor an object")
    return items


def read_prompt_records(path: str | os.PathLike) -> list[dict]:
    """Prompt records from a .txt, .csv, .json, .yaml or .yml file (see the module docstring)."""
    path = Path(path)
    where = f"--prompts-file {path}"
    if not path.is_file():
        raise PromptError(f"{where}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".txt":
            lines = path.read_text(encoding="utf-8").splitlines()
            items = _auto_ids([ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")])
        elif suffix == ".csv":
            import pandas as pd

            df = pd.read_csv(path, dtype=str, keep_default_na=False)
            col = next((c for c in _TEXT_KEYS if c in df.columns), None)
            if col is None:
                raise PromptError(f"{where}: no column named one of {list(_TEXT_KEYS)} (has {list(df.columns)})")
            idc = next((c for c in _ID_KEYS if c in df.columns), None)
            ids = df[idc].tolist() if idc else [f"p{i:03d}" for i in range(len(df))]
            refs = [r or None for r in df["ref_id"].tolist()] if "ref_id" in df.columns else [None] * len(df)
            items = [{"prompt_id": i, "text": t, "ref_id": r} for i, t, r in zip(ids, df[col].tolist(), refs)]
        elif suffix == ".json":
            import json

            items = _records(json.loads(path.read_text(encoding="utf-8")), where)
        elif suffix in (".yaml", ".yml"):
            import yaml

            items = _records(yaml.safe_load(path.read_text(encoding="utf-8")), where)
        else:
            raise PromptError(f"{where}: unsupported extension {suffix!r} (use .txt, .csv, .json, .yaml)")
    except PromptError:
        raise
    except Exception as exc:  # malformed JSON/YAML/CSV: name the file
        raise PromptError(f"{where}: cannot parse ({type(exc).__name__}: {exc})") from exc
    return check_records(items, where)


def read_prompts_file(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(prompt_id, text) pairs from a .txt, .csv, .json, .yaml or .yml file (see the module docstring)."""
    return [(r["prompt_id"], r["text"]) for r in read_prompt_records(path)]


def demo_set(prompts: list[str] | None = None, prompts_file: str | os.PathLike | None = None):
    """The ``demo`` set: ``prompts`` (CLI texts), else ``prompts_file``, else :data:`DEMO_PROMPTS`."""
    if prompts:
        return _check(_auto_ids(list(prompts)), "--prompt")
    if prompts_file:
        return read_prompt_records(prompts_file)
    return _check(list(DEMO_PROMPTS), "demo prompt set")


def file_set(prompts: list[str] | None = None, prompts_file: str | os.PathLike | None = None):
    """The ``file`` set: every prompt of ``prompts_file`` (required)."""
    if prompts:
        raise PromptError("--prompt is for --prompt-set demo; --prompt-set file reads --prompts-file only")
    if not prompts_file:
        raise PromptError("--prompt-set file needs --prompts-file PATH")
    return read_prompt_records(prompts_file)


def _factory(name: str):
    if name not in PROMPT_SETS:
        raise PromptError(f"--prompt-set {name!r}: unknown; known: {', '.join(PROMPT_SETS)}")
    module, func = PROMPT_SETS[name].split(":")
    return getattr(importlib.import_module(module), func)


def set_options(name: str) -> list[str]:
    """The option names prompt set ``name`` takes (its factory's keyword parameters)."""
    params = inspect.signature(_factory(name)).parameters.values()
    return [p.name for p in params if p.name not in _SET_ARGS and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _resolved(prompts_file) -> dict | None:
    """The content of ``prompts_file`` when it is a prompt-set JSON written by ``prompt-set``."""
    if not prompts_file or Path(prompts_file).suffix.lower() != ".json" or not Path(prompts_file).is_file():
        return None
    import json

    try:
        obj = json.loads(Path(prompts_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # read_prompt_records reports it, naming the file
    return obj if isinstance(obj, dict) and "name" in obj and "prompts" in obj else None


def load_prompt_records(name: str, prompts: list[str] | None = None,
                        prompts_file: str | os.PathLike | None = None, options: dict | None = None) -> list[dict]:
    """Resolve prompt set ``name`` with ``options``; returns [{"prompt_id", "text", "ref_id", ...}, ...]."""
    factory = _factory(name)
    options = dict(options or {})
    known = set_options(name)
    for key in options:
        if key not in known:
            raise PromptError(f"--options: unknown option {key!r} for prompt set {name!r} "
                              f"(known: {', '.join(known) or 'none'})")
    done = _resolved(prompts_file)
    if done is not None and name not in ("demo", "file"):
        # Already resolved by the prompt-set stage: read it as is, but never under another set's name.
        if done["name"] != name:
            raise PromptError(f"--prompts-file {prompts_file}: a prompt set named {done['name']!r}, not {name!r}")
        if prompts:
            raise PromptError(f"--prompt is for --prompt-set demo, not {name!r}")
        return read_prompt_records(prompts_file)
    return check_records(factory(prompts=prompts, prompts_file=prompts_file, **options), f"prompt set {name}")


def load_prompt_set(name: str, prompts: list[str] | None = None,
                    prompts_file: str | os.PathLike | None = None,
                    options: dict | None = None) -> list[tuple[str, str]]:
    """Resolve prompt set ``name`` through the registry; returns [(prompt_id, text), ...]."""
    return [(r["prompt_id"], r["text"]) for r in load_prompt_records(name, prompts, prompts_file, options)]


def main(argv: list[str]) -> int | None:
    """``prompt-set``: resolve a prompt set (the config's own prompts, a file, a dataset csv or the built-in
    demo) and write it as ``{"name", "options", "prompts": [{"prompt_id", "text", "ref_id", ...}, ...]}``
    JSON, the ``--prompts-file`` of ``generate`` and ``reference-audio``."""
    import argparse

    from ssmttm import io, logs, settings
    from ssmttm.generate.options import PromptSetSettings

    p = argparse.ArgumentParser(prog="ssmttm prompt-set", description=main.__doc__)
    p.add_argument("--prompts-file", default=None, help=".txt/.csv/.json/.yaml prompts, or the dataset csv "
                                                        "(generate.prompts_source)")
    p.add_argument("--prompt", action="append", default=None, help="a prompt text (repeatable; demo set)")
    p.add_argument("--out", required=True, help="output JSON")
    settings.add_arguments(p, PromptSetSettings)
    args = p.parse_args(argv)
    cfg = settings.from_args(p, PromptSetSettings, args)
    log = logs.setup("ssmttm.prompts")
    name = cfg.prompt_set
    options = dict(cfg.prompt_options.get(name) or {})
    try:
        if name not in PROMPT_SETS:
            raise PromptError(f"--prompt-set {name!r}: not a prompt set (known: {sorted(PROMPT_SETS)})")
        if cfg.prompts and name == "demo" and not args.prompt:
            if options:
                raise PromptError("--prompt-options: the demo set takes no options with --prompts")
            records = check_records(_records(cfg.prompts, "--prompts"), "--prompts")
        else:
            records = load_prompt_records(name, prompts=args.prompt, prompts_file=args.prompts_file, options=options)
    except PromptError as exc:
        log.error("%s", exc)
        return 2
    io.write_json(args.out, {"name": name, "options": options, "prompts": records})
    n_refs = len({r["ref_id"] for r in records if r["ref_id"] is not None})
    log.info("prompt set %s: %d prompts (%d reference ids) -> %s", name, len(records), n_refs, args.out)
    return 0
