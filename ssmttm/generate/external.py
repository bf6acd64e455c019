"""``python -m ssmttm external-system``: a folder of someone else's clips as a system of this pipeline.

Another model's outputs for the configured prompt set (``systems.<name>: {kind: external, dir, files}``)
are scored by the same evaluation jobs, prompts and references as the experiments and tabled beside
them. This stage finds each prompt's clip and writes the set folder the evaluation reads, in the
layout of :mod:`ssmttm.generate.generate` (``<prompt_id>.<ext>``, a ``<prompt_id>.json`` sidecar and,
last, ``index.json``), so nothing downstream knows where the audio came from.

Finding the clips: with ``--files TSV`` (columns ``prompt_id``, ``file``; paths relative to ``--dir``),
each listed prompt's file; without it, ``<prompt_id>.wav|flac|mp3|ogg`` in ``--dir``. A prompt whose
clip is missing, unreadable, empty or outside ``--dir`` is listed in ``index.json`` ``rejected`` with
its reason and the others go on; no usable clip at all is an error (exit 2). Clips are copied
(atomically) so a later change in ``--dir`` cannot change scored audio behind the cache's back; each
sidecar records the source file and its sha256.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from ssmttm import io, logs
from ssmttm.errors import SsmttmError

log = logging.getLogger("ssmttm.external")
EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")


class ExternalSystemError(SsmttmError, ValueError):
    """The folder or the file table cannot give a system; the message names it."""


def read_file_table(path: Path) -> dict[str, str]:
    """prompt_id -> file from a TSV with columns ``prompt_id`` and ``file``."""
    import pandas as pd

    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except Exception as exc:
        raise ExternalSystemError(f"--files {path}: cannot read ({exc})") from exc
    missing = {"prompt_id", "file"} - set(df.columns)
    if missing:
        raise ExternalSystemError(f"--files {path}: missing columns {sorted(missing)} (need prompt_id, file)")
    dup = df["prompt_id"][df["prompt_id"].duplicated()].tolist()
    if dup:
        raise ExternalSystemError(f"--files {path}: prompt ids listed twice: {dup[:5]}")
    return dict(zip(df["prompt_id"], df["file"]))


def find_clip(folder: Path, prompt_id: str, table: dict[str, str] | None) -> tuple[Path | None, str]:
    """(clip path, "") or (None, reason) for one prompt."""
    if table is not None:
        if prompt_id not in table:
            return None, "not listed in --files"
        p = (folder / table[prompt_id]).resolve()
        if not p.is_relative_to(folder.resolve()):
            return None, f"file {table[prompt_id]!r} lies outside {folder}"
        return (p, "") if p.is_file() else (None, f"file {table[prompt_id]!r} not found in {folder}")
    for ext in EXTENSIONS:
        p = folder / f"{prompt_id}{ext}"
        if p.is_file():
            return p, ""
    return None, f"no {prompt_id}{{{','.join(EXTENSIONS)}}} in {folder}"


def check_clip(path: Path) -> str:
    """"" when ``path`` decodes to non-empty, finite audio, else the reason (naming the file)."""
    import numpy as np

    from ssmttm import audio

    try:
        x, _ = audio.read(path)
    except audio.AudioError as exc:
        return str(exc)
    except Exception as exc:  # a decoder failing on a foreign file: that clip is rejected, the rest go on
        return f"{path}: cannot decode ({type(exc).__name__}: {exc})"
    if x.size == 0:
        return f"{path}: empty audio"
    if not np.all(np.isfinite(x)):
        return f"{path}: non-finite samples"
    return ""


def build(name: str, folder: Path, prompts_path: Path, out_dir: Path, files: Path | None = None) -> dict:
    """Write the set folder of external system ``name``; returns its index."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExternalSystemError(f"systems.{name}.dir: {folder} is not a folder")
    table = read_file_table(Path(files)) if files else None
    prompt_set = io.read_json(prompts_path)
    prompts = [(str(p["prompt_id"]), p.get("text", "")) for p in prompt_set.get("prompts", [])]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items, rejected = [], []
    for pid, text in prompts:
        src, reason = find_clip(folder, pid, table)
        reason = reason or check_clip(src)
        if reason:
            rejected.append({"prompt_id": pid, "reason": reason})
            continue
        name_out = f"{pid}{src.suffix.lower()}"
        with io.atomic_open(out / name_out, "wb") as f, open(src, "rb") as g:
            shutil.copyfileobj(g, f)
        side = {"prompt": text, "prompt_id": pid, "system": name, "system_kind": "external",
                "source_file": str(src), "source_sha256": io.sha256_file(src), "audio": name_out}
        io.write_json(out / f"{pid}.json", side)
        items.append({"prompt_id": pid, "prompt": text, "audio": name_out, "sidecar": f"{pid}.json"})
    for r in rejected:
        log.warning("systems.%s: prompt %s rejected: %s", name, r["prompt_id"], r["reason"])
    if not items:
        raise ExternalSystemError(f"systems.{name}: no usable clip in {folder} for the {len(prompts)} prompts of "
                                  f"{prompts_path} (first reason: {rejected[0]['reason'] if rejected else 'no prompts'})")
    index = {"system": name, "system_kind": "external", "source": str(folder), "files": None if files is None
             else str(files), "prompt_set": prompt_set.get("name"), "n_prompts": len(prompts), "items": items,
             "rejected": rejected}
    io.write_json(out / "index.json", index)
    log.info("systems.%s: %d of %d prompts have a clip -> %s", name, len(items), len(prompts), out)
    return index


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ssmttm external-system", description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="the systems key (row label)")
    p.add_argument("--dir", required=True, help="folder holding one clip per prompt")
    p.add_argument("--files", default=None, help="TSV prompt_id<TAB>file (paths relative to --dir)")
    p.add_argument("--prompts", required=True, help="prompt-set JSON")
    p.add_argument("--out-dir", required=True)
    args = p.parse_args(argv)
    logs.setup("ssmttm.external")
    try:
        build(args.name, Path(args.dir), Path(args.prompts), Path(args.out_dir), args.files)
    except ExternalSystemError as exc:
        log.error("%s", exc)
        return 2
    return 0
