"""Prompt sets: a registry of lazy factories, name -> list of (prompt_id, text).

- ``demo``: a fixed list: the ``--prompt`` texts given on the command line, else a small YAML/JSON
  file (``--prompts-file``), else :data:`DEMO_PROMPTS` (a handful of captions in the style of the
  training captions);
- ``file``: prompts read from a ``.txt`` (one per line; blank lines and ``#`` comments skipped),
  ``.csv`` (a ``caption``/``text``/``prompt`` column, optional ``prompt_id``/``id``/``caption_id``),
  ``.json``/``.yaml``/``.yml`` file.

Later issues add MusicCaps and Song Describer (REFERENCE.md section 3) as further entries. A
factory is imported only when its set is asked for, so listing the registry is free.

Accepted JSON/YAML layouts: a list of strings; a list of ``{"prompt_id"|"id": ..., "text"|
"prompt"|"caption": ...}`` objects; a mapping ``{prompt_id: text}``; or any of these under a
``"prompts"`` key. Prompt ids name output files, so they must match ``[A-Za-z0-9._-]+`` (texts
without an id get ``p000``, ``p001``, ...); duplicated ids fail naming the id.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

# name -> "module:function"; function(prompts=None, prompts_file=None) -> list[(prompt_id, text)]
PROMPT_SETS: dict[str, str] = {
    "demo": "ssmttm.generate.prompts:demo_set",
    "file": "ssmttm.generate.prompts:file_set",
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


class PromptError(ValueError):
    """A prompt set or file that cannot be used; the message names the file, set or prompt id."""


def _check(items: list[tuple[str, str]], where: str) -> list[tuple[str, str]]:
    if not items:
        raise PromptError(f"{where}: no prompts")
    seen: set[str] = set()
    out = []
    for pid, text in items:
        pid = str(pid)
        if not _ID.match(pid) or pid in (".", ".."):
            raise PromptError(f"{where}: prompt id {pid!r} is not a safe file name (use [A-Za-z0-9._-])")
        if pid == "index":
            raise PromptError(f"{where}: prompt id 'index' is reserved (index.json)")
        if pid in seen:
            raise PromptError(f"{where}: prompt id {pid!r} appears twice")
        if not isinstance(text, str):
            raise PromptError(f"{where}: prompt {pid!r} is not a string ({type(text).__name__})")
        seen.add(pid)
        out.append((pid, text.strip()))
    return out


def _auto_ids(texts: list[str]) -> list[tuple[str, str]]:
    return [(f"p{i:03d}", t) for i, t in enumerate(texts)]


def _from_records(obj, where: str) -> list[tuple[str, str]]:
    """Parse the JSON/YAML layouts of the module docstring."""
    if isinstance(obj, dict) and "prompts" in obj:
        obj = obj["prompts"]
    if isinstance(obj, dict):
        return [(str(k), v) for k, v in obj.items()]
    if not isinstance(obj, list):
        raise PromptError(f"{where}: expected a list or mapping of prompts, got {type(obj).__name__}")
    items = []
    for i, rec in enumerate(obj):
        if isinstance(rec, str):
            items.append((f"p{i:03d}", rec))
        elif isinstance(rec, dict):
            text = next((rec[k] for k in _TEXT_KEYS if k in rec), None)
            if text is None:
                raise PromptError(f"{where}: entry {i} has none of the keys {list(_TEXT_KEYS)}")
            pid = next((rec[k] for k in _ID_KEYS if k in rec), f"p{i:03d}")
            items.append((str(pid), text))
        else:
            raise PromptError(f"{where}: entry {i} is neither a string nor an object")
    return items


def read_prompts_file(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(prompt_id, text) pairs from a .txt, .csv, .json, .yaml or .yml file (see the module docstring)."""
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
            items = list(zip(ids, df[col].tolist()))
        elif suffix == ".json":
            import json

            items = _from_records(json.loads(path.read_text(encoding="utf-8")), where)
        elif suffix in (".yaml", ".yml"):
            import yaml

            items = _from_records(yaml.safe_load(path.read_text(encoding="utf-8")), where)
        else:
            raise PromptError(f"{where}: unsupported extension {suffix!r} (use .txt, .csv, .json, .yaml)")
    except PromptError:
        raise
    except Exception as exc:  # malformed JSON/YAML/CSV: name the file
        raise PromptError(f"{where}: cannot parse ({type(exc).__name__}: {exc})") from exc
    return _check(items, where)


def demo_set(prompts: list[str] | None = None, prompts_file: str | os.PathLike | None = None):
    """The ``demo`` set: ``prompts`` (CLI texts), else ``prompts_file``, else :data:`DEMO_PROMPTS`."""
    if prompts:
        return _check(_auto_ids(list(prompts)), "--prompt")
    if prompts_file:
        return read_prompts_file(prompts_file)
    return _check(list(DEMO_PROMPTS), "demo prompt set")


def file_set(prompts: list[str] | None = None, prompts_file: str | os.PathLike | None = None):
    """The ``file`` set: every prompt of ``prompts_file`` (required)."""
    if prompts:
        raise PromptError("--prompt is for --prompt-set demo; --prompt-set file reads --prompts-file only")
    if not prompts_file:
        raise PromptError("--prompt-set file needs --prompts-file PATH")
    return read_prompts_file(prompts_file)


def load_prompt_set(name: str, prompts: list[str] | None = None,
                    prompts_file: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """Resolve prompt set ``name`` through the registry; returns [(prompt_id, text), ...]."""
    if name not in PROMPT_SETS:
        raise PromptError(f"--prompt-set {name!r}: unknown; known: {', '.join(PROMPT_SETS)}")
    module, func = PROMPT_SETS[name].split(":")
    return getattr(importlib.import_module(module), func)(prompts=prompts, prompts_file=prompts_file)


def main(argv: list[str]) -> int | None:
    """``prompt-set``: resolve a prompt set (config JSON, a file or the built-in demo) and write it as
    ``{"name", "prompts": [{"prompt_id", "text"}, ...]}`` JSON, the ``--prompts-file`` of ``generate``."""
    import argparse
    import json

    from ssmttm import io, logs

    p = argparse.ArgumentParser(prog="ssmttm prompt-set", description=main.__doc__)
    p.add_argument("--name", default="demo", help=f"prompt set ({', '.join(PROMPT_SETS)})")
    p.add_argument("--json", default=None, help="prompts as JSON (a list, or a mapping prompt_id -> text)")
    p.add_argument("--prompts-file", default=None, help=".txt/.csv/.json/.yaml prompts")
    p.add_argument("--prompt", action="append", default=None, help="a prompt text (repeatable; demo set)")
    p.add_argument("--out", required=True, help="output JSON")
    args = p.parse_args(argv)
    log = logs.setup("ssmttm.prompts")
    try:
        if args.json:
            try:
                obj = json.loads(args.json)
            except json.JSONDecodeError as exc:
                raise PromptError(f"--json: not valid JSON ({exc})") from exc
            items = _check(_from_records(obj, "--json"), "--json")
        else:
            items = load_prompt_set(args.name, prompts=args.prompt, prompts_file=args.prompts_file)
    except PromptError as exc:
        log.error("%s", exc)
        return 2
    io.write_json(args.out, {"name": args.name, "prompts": [{"prompt_id": i, "text": t} for i, t in items]})
    log.info("prompt set %s: %d prompts -> %s", args.name, len(items), args.out)
    return 0
