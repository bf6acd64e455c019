"""``listening-kit``: the blind listening test's kit (loudness-matched anonymous clips and every rater's
order), its key (which clip is which system) and its record.

Inputs: one set index per system (``--system NAME=INDEX_JSON``, exactly the systems of the settings), in
either layout the pipeline writes: generate's ``{"items": [{"audio", "prompt_id", "prompt"}]}`` or
reference/resynth's ``{"clips": [{"file", "prompt_id", "prompt_ids", "text"}]}`` (a reference clip serves
every prompt in its ``prompt_ids``); audio paths are relative to the index's folder.

What is made (results/listening/<test>/, see ssmttm.listen.options for the names):

- ``kit/clips/<clip id>.wav``: 16-bit PCM, 44.1 kHz, stereo, every clip cut from its start to one length
  ``L = min(seconds, shortest chosen clip)`` (so a clip's length tells nothing about its system), with a
  short fade in and out (no click where the cut falls), then loudness-normalised to ``loudness_lufs``
  (ITU-R BS.1770-4 integrated loudness, pyloudnorm; louder clips are rated better, so unmatched loudness
  would bias MOS) unless that would push the sample peak above ``peak_dbfs``, in which case the gain stops
  at the peak and the loudness reached is recorded. No metadata is copied from the sources, and every file
  of the kit gets one modification time (:func:`same_mtime`).
- ``kit/plan.json`` (``ssmttm-listening-plan/1``): questions and each rater's items in play order, anonymous
  ids and prompt texts only (:mod:`ssmttm.listen.design` makes the order).
- ``key.json`` (``ssmttm-listening-key/1``): clip id -> system, prompt id, role (test / attention), source.
- ``kit.json`` (``ssmttm-listening-kit/1``): settings, L, per clip its loudness before/after, gain, peak and
  sha256, and how often every test clip is rated.

Attention checks: ``attention.count`` per rater, drawn from a pool of broken copies of rated clips (white
noise bursts over half of the clip, then hard clipping), loudness-matched like the rest so only their sound
gives them away. Everything is written into a staging folder beside ``--out-dir`` and moved into place at
the end, so a failed run leaves the previous kit as it was; other files of the test folder (the ratings
database, the results) are kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssmttm import audio, io, logs, settings
from ssmttm.errors import SsmttmError
from ssmttm.listen import design, options
from ssmttm.listen.options import (CLIPS_DIR, DB_FILE, HISTORY_DIR, KEY_FILE, KEY_FORMAT, KIT_DIR, KIT_FORMAT, KIT_SUMMARY,
                                   PLAN_FILE, PLAN_FORMAT, KitSettings)

SAMPLE_RATE = 44100       # one rate and channel count for every clip, so the format tells nothing either
CHANNELS = 2
SUBTYPE = "PCM_16"
FADE_IN_S = 0.01
FADE_OUT_S = 0.05
MIN_SECONDS = 0.4         # BS.1770 gating blocks are 400 ms: a shorter clip has no integrated loudness
READ_MARGIN_S = 0.05      # read a little past the cut so the resampler's filter has no edge at L
BURSTS = 8                # attention clips: noise over 4 of 8 equal segments, i.e. over half the clip
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # the schema's $defs/name


class KitError(SsmttmError, ValueError):
    """A set index, clip or flag the kit cannot be made from; the message names the system, prompt, file."""


@dataclass(frozen=True)
class Source:
    """One system's clip for one prompt; ``text`` is None when the index does not give this prompt's text."""

    system: str
    prompt_id: str
    path: Path
    text: str | None


# --- inputs --------------------------------------------------------------------------------------------


def parse_systems(parser: argparse.ArgumentParser, specs: list[str], wanted: list[str]) -> dict[str, Path]:
    """``--system NAME=INDEX_JSON ...`` -> {name: index path}; exactly the systems of the settings."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            parser.error(f"--system {spec!r}: expected NAME=INDEX_JSON")
        if name in out:
            parser.error(f"--system {name} given twice")
        out[name] = Path(path)
    missing = [n for n in wanted if n not in out]
    extra = sorted(set(out) - set(wanted))
    if missing or extra:
        parser.error("--system must name every system of the settings exactly ("
                     + ", ".join(wanted) + ")"
                     + (f"; missing: {', '.join(missing)}" if missing else "")
                     + (f"; not in the settings: {', '.join(extra)}" if extra else ""))
    return out


def read_index(system: str, path: Path) -> dict[str, Source]:
    """prompt id -> :class:`Source` of one system's set index (either layout; a prompt's first clip wins)."""
    try:
        doc = io.read_json(path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise KitError(f"system {system}: cannot read set index {path} ({exc})") from exc
    out: dict[str, Source] = {}
    if isinstance(doc, dict) and isinstance(doc.get("items"), list):  # generate / musicgen / external
        for i, it in enumerate(doc["items"]):
            if not isinstance(it, dict) or "audio" not in it or "prompt_id" not in it:
                raise KitError(f"system {system}: {path}: items[{i}] needs 'audio' and 'prompt_id'")
            pid = str(it["prompt_id"])
            out.setdefault(pid, Source(system, pid, path.parent / str(it["audio"]), it.get("prompt")))
    elif isinstance(doc, dict) and isinstance(doc.get("clips"), list):  # reference / resynth
        for i, c in enumerate(doc["clips"]):
            if not isinstance(c, dict) or "file" not in c or ("prompt_id" not in c and not c.get("prompt_ids")):
                raise KitError(f"system {system}: {path}: clips[{i}] needs 'file' and 'prompt_id' or 'prompt_ids'")
            first = str(c.get("prompt_id") or c["prompt_ids"][0])
            for pid in [first, *(str(p) for p in c.get("prompt_ids") or [])]:
                # 'text' is the first prompt's; the others' texts come from another system's index
                out.setdefault(pid, Source(system, pid, path.parent / str(c["file"]),
                                           c.get("text") if pid == first else None))
    else:
        raise KitError(f"system {system}: {path} is not a set index (needs an 'items' or a 'clips' list)")
    return out


def prompt_texts(sources: dict[str, dict[str, Source]], prompt_ids: list[str]) -> dict[str, str]:
    """prompt id -> its text, for the ids some index gives a text for; systems that disagree are an error."""
    out = {}
    for pid in prompt_ids:
        texts = {name: src[pid].text.strip() for name, src in sorted(sources.items()) if src[pid].text}
        if len(set(texts.values())) > 1:
            raise KitError(f"prompt {pid}: the systems' indexes give different texts ("
                           + "; ".join(f"{n}: {t!r}" for n, t in texts.items()) + ")")
        if texts:
            out[pid] = next(iter(texts.values()))
    return out


# --- audio ---------------------------------------------------------------------------------------------


def _where(src: Source) -> str:
    return f"system {src.system}, prompt {src.prompt_id}: {src.path}"


def duration(src: Source) -> float:
    try:
        sr, _, seconds = audio.info(src.path)
    except audio.AudioError as exc:
        raise KitError(f"system {src.system}, prompt {src.prompt_id}: {exc}") from exc
    if not sr or seconds <= 0:
        raise KitError(f"{_where(src)}: no audio")
    return seconds


def load_cut(src: Source, n: int, seconds: float) -> np.ndarray:
    """The first ``n`` samples of ``src`` at 44.1 kHz stereo: ``[2, n] float32``; ``seconds``: its length."""
    try:
        x, sr = audio.read(src.path, 0.0, min(seconds, n / SAMPLE_RATE + READ_MARGIN_S))
    except audio.AudioError as exc:
        raise KitError(f"system {src.system}, prompt {src.prompt_id}: {exc}") from exc
    if not np.all(np.isfinite(x)):
        raise KitError(f"{_where(src)}: non-finite samples")
    y = audio.resample(audio.to_channels(x, CHANNELS), sr, SAMPLE_RATE)
    if y.shape[1] < n:
        if n - y.shape[1] > 8:  # the shortest clip sets n; resampling may round a few samples away, no more
            raise KitError(f"{_where(src)}: {y.shape[1]} samples at {SAMPLE_RATE} Hz, {n} needed")
        y = np.pad(y, ((0, 0), (0, n - y.shape[1])))
    return np.ascontiguousarray(y[:, :n], dtype=np.float32)


def fade(x: np.ndarray) -> np.ndarray:
    """``x: [C, N]`` with a linear fade in (:data:`FADE_IN_S`) and out (:data:`FADE_OUT_S`)."""
    y = x.copy()
    n_in, n_out = (min(int(f * SAMPLE_RATE), y.shape[1] // 4) for f in (FADE_IN_S, FADE_OUT_S))
    if n_in:
        y[:, :n_in] *= np.linspace(0.0, 1.0, n_in, endpoint=False, dtype=np.float32)
    if n_out:
        y[:, -n_out:] *= np.linspace(1.0, 0.0, n_out, endpoint=False, dtype=np.float32)
    return y


def break_clip(x: np.ndarray, g: np.random.Generator) -> np.ndarray:
    """An attention check from ``x: [C, N]``: loud white noise over half of it (4 of 8 segments, seeded),
    then 12 dB of gain into hard clipping. Nobody listening would score it above "Poor"."""
    peak = float(np.max(np.abs(x)))
    y = x / max(peak, 1e-9) * 0.5
    segments = np.array_split(np.arange(x.shape[1]), BURSTS)
    for k in sorted(g.choice(BURSTS, size=BURSTS // 2, replace=False)):
        idx = segments[int(k)]
        y[:, idx] += 0.5 * g.standard_normal((x.shape[0], len(idx)))
    return np.clip(4.0 * y, -1.0, 1.0).astype(np.float32)


def _loudness(meter, x: np.ndarray) -> float:
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # pyloudnorm warns on full-scale samples; we measure those on purpose
        return float(meter.integrated_loudness(np.asarray(x, dtype=np.float64).T))


def _dbfs(x: np.ndarray) -> float:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return 20.0 * math.log10(peak) if peak > 0 else float("-inf")


def write_normalised(x: np.ndarray, path: Path, meter, s: KitSettings, where: str) -> dict:
    """Normalise ``x: [2, N]`` (see the module docstring), write it as 16-bit WAV at ``path`` and measure
    the file written: {loudness_before_lufs, gain_db, loudness_after_lufs, peak_dbfs, peak_limited, sha256}."""
    before = _loudness(meter, x)
    if not math.isfinite(before):
        raise KitError(f"{where}: silent or unmeasurable (integrated loudness {before} LUFS)")
    gain = s.loudness_lufs - before
    limited = _dbfs(x) + gain > s.peak_dbfs
    if limited:
        gain = s.peak_dbfs - _dbfs(x)
    audio.write(path, x * np.float32(10.0 ** (gain / 20.0)), SAMPLE_RATE, subtype=SUBTYPE)
    written, _ = audio.read(path)
    return {"loudness_before_lufs": round(before, 3), "gain_db": round(gain, 3),
            "loudness_after_lufs": round(_loudness(meter, written), 3), "peak_dbfs": round(_dbfs(written), 3),
            "peak_limited": bool(limited), "sha256": io.sha256_file(path)}


# --- the kit -------------------------------------------------------------------------------------------


def choose(sources: dict[str, dict[str, Source]], n_prompts: int, seed: int, log) -> tuple[list[str], dict[str, str]]:
    """(chosen prompt ids, their texts): a seeded choice among the prompts every system has a clip for."""
    common = design.common_prompts({name: src.keys() for name, src in sources.items()})
    texts = prompt_texts(sources, common)
    untexted = [p for p in common if p not in texts]
    if untexted:
        log.warning("%d common prompts have no text in any index and are left out: %s", len(untexted),
                    ", ".join(untexted[:10]))
    usable = [p for p in common if p in texts]
    if len(usable) < n_prompts:
        raise KitError(f"n_prompts is {n_prompts} but only {len(usable)} prompts have a clip (and a text) in "
                       "every system; clips per system: "
                       + ", ".join(f"{n} {len(src)}" for n, src in sorted(sources.items())))
    chosen = design.choose_prompts(usable, n_prompts, seed)
    return chosen, {p: texts[p] for p in chosen}


def build(test: str, s: KitSettings, indexes: dict[str, Path], staging: Path, log) -> dict:
    """Write kit/, key.json and kit.json of ``test`` into ``staging``; return the kit.json record."""
    import pyloudnorm

    questions, att = options.questions(s), options.attention(s)
    sources = {name: read_index(name, indexes[name]) for name in sorted(indexes)}
    chosen, texts = choose(sources, s.n_prompts, s.seed, log)
    items = [sources[name][pid] for name in sorted(sources) for pid in chosen]
    seconds = {it: duration(it) for it in items}
    shortest = min(seconds, key=lambda it: (seconds[it], it.system, it.prompt_id))
    n = int(math.floor(min(s.seconds, seconds[shortest]) * SAMPLE_RATE + 1e-6))
    if n < MIN_SECONDS * SAMPLE_RATE:
        raise KitError(f"{_where(shortest)}: {seconds[shortest]:.3f} s long; every clip is cut to the shortest "
                       f"and loudness needs at least {MIN_SECONDS} s")
    orders = design.plan_orders(len(items), s.raters, s.per_rater, att.count, s.seed)
    ids = design.clip_ids(len(items) + len(orders.attention_sources), s.seed)
    test_ids, att_ids = ids[:len(items)], ids[len(items):]

    clips_dir = staging / KIT_DIR / CLIPS_DIR
    clips_dir.mkdir(parents=True)
    meter = pyloudnorm.Meter(SAMPLE_RATE)
    broken_from = set(orders.attention_sources)
    cut: dict[int, np.ndarray] = {}  # only the items an attention clip is made from
    records, key = [], {}
    for i, (it, cid) in enumerate(zip(logs.progress(items, desc="kit clips", unit="clip"), test_ids)):
        x = load_cut(it, n, seconds[it])
        if i in broken_from:
            cut[i] = x
        rec = write_normalised(fade(x), clips_dir / f"{cid}.wav", meter, s, _where(it))
        records.append({"id": cid, "system": it.system, "prompt_id": it.prompt_id, "role": "test",
                        "source": str(it.path), **rec})
        key[cid] = {"system": it.system, "prompt_id": it.prompt_id, "role": "test", "source": str(it.path)}
    for k, (i, cid) in enumerate(zip(orders.attention_sources, att_ids)):
        it = items[i]
        broken = fade(break_clip(cut[i], design.rng(s.seed, "noise", k)))
        rec = write_normalised(broken, clips_dir / f"{cid}.wav", meter, s, f"attention clip of {_where(it)}")
        records.append({"id": cid, "system": it.system, "prompt_id": it.prompt_id, "role": "attention",
                        "source": str(it.path), "broken_from": test_ids[i], **rec})
        key[cid] = {"system": it.system, "prompt_id": it.prompt_id, "role": "attention", "source": str(it.path)}

    def entry(role: str, idx: int) -> dict:
        i = idx if role == "test" else orders.attention_sources[idx]
        return {"clip": (test_ids if role == "test" else att_ids)[idx], "prompt": texts[items[i].prompt_id]}

    key_doc = {"format": KEY_FORMAT, "test": test, "clips": key, "systems": sorted(sources), "prompt_ids": chosen,
               "attention": {"question": att.question, "max_score": att.max_score}}
    plan = {"format": PLAN_FORMAT, "test": test, "kit_id": kit_id(key_doc, records), "seconds": n / SAMPLE_RATE,
            "questions": [q.as_dict() for q in questions],
            "raters": [{"rater": code, "items": [entry(role, idx) for role, idx in order]}
                       for code, order in zip(orders.raters, orders.orders)]}
    _check_anonymous(plan, sorted(sources), log)
    io.write_json(staging / KIT_DIR / PLAN_FILE, plan)
    same_mtime(staging / KIT_DIR)
    io.write_json(staging / KEY_FILE, key_doc)
    counts = {test_ids[i]: c for i, c in enumerate(orders.item_counts)}
    record = {
        "format": KIT_FORMAT, "test": test, "settings": dataclasses.asdict(s),
        "systems": {name: str(indexes[name]) for name in sorted(indexes)}, "prompt_ids": chosen,
        "sample_rate": SAMPLE_RATE, "channels": CHANNELS, "subtype": SUBTYPE, "seconds": n / SAMPLE_RATE,
        "samples": n, "fade_in_s": FADE_IN_S, "fade_out_s": FADE_OUT_S, "loudness": "ITU-R BS.1770-4 (pyloudnorm)",
        "raters": orders.raters, "per_rater": orders.per_rater, "per_rater_setting": s.per_rater,
        "attention_per_rater": att.count, "attention_pool": len(att_ids),
        "item_counts": counts, "item_count_min": min(counts.values()), "item_count_max": max(counts.values()),
        "clips": records,
        "files": {f"{KIT_DIR}/{PLAN_FILE}": io.sha256_file(staging / KIT_DIR / PLAN_FILE),
                  KEY_FILE: io.sha256_file(staging / KEY_FILE)},
    }
    io.write_json(staging / KIT_SUMMARY, record)
    return record


def kit_id(key_doc: dict, records: list[dict]) -> str:
    """sha256 over the key and every clip's id and audio sha256: what a rating means. It goes into plan.json,
    so the plan's own hash (which the ratings database is bound to) and every ratings file of the static
    export (which carries it) change whenever a clip's audio or the mapping does, even under the same ids
    (the same seed and settings with regenerated clips)."""
    h = hashlib.sha256(json.dumps(key_doc, sort_keys=True).encode("utf-8"))
    for r in sorted(records, key=lambda r: r["id"]):
        h.update(f"\n{r['id']} {r['sha256']}".encode("ascii"))
    return h.hexdigest()


def same_mtime(root: Path) -> None:
    """Give every file under ``root`` one modification time. Clips are written system by system, and the
    rating app's HTTP Last-Modified / ETag headers carry the mtime: without this a curious rater could
    group the clips by system from their timestamps."""
    now = time.time()
    for f in root.rglob("*"):
        os.utime(f, (now, now))


def _check_anonymous(plan: dict, systems: list[str], log) -> None:
    """A system name in a prompt text raters see: most likely the prompt's own word, but say so (a system
    name in the test name is refused by :func:`main`)."""
    for name in systems:
        hits = {it["prompt"] for r in plan["raters"] for it in r["items"] if name.lower() in it["prompt"].lower()}
        if hits:
            log.warning("system name %r occurs in %d prompt text(s) raters will see, e.g. %r", name, len(hits),
                        sorted(hits)[0])


def install(staging: Path, out_dir: Path, log) -> None:
    """Move kit/, key.json and kit.json from ``staging`` into ``out_dir``, keeping its other files (ratings)."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    old_plan = out_dir / KIT_DIR / PLAN_FILE
    changed = old_plan.is_file() and old_plan.read_bytes() != (staging / KIT_DIR / PLAN_FILE).read_bytes()
    (out_dir / KIT_SUMMARY).unlink(missing_ok=True)  # the record goes in last: present means the swap finished
    io.replace_dir(staging / KIT_DIR, out_dir / KIT_DIR)
    os.replace(staging / KEY_FILE, out_dir / KEY_FILE)
    os.replace(staging / KIT_SUMMARY, out_dir / KIT_SUMMARY)
    if changed and (out_dir / DB_FILE).exists():
        log.warning("%s holds ratings of the previous kit, whose plan differs from the new one", out_dir / DB_FILE)


def archive(out_dir: Path, log) -> Path:
    """Copy the installed kit's plan, key and record to ``history/<plan sha256[:16]>/`` (once per plan).

    Snakemake deletes a rule's outputs before it reruns the rule, so a kit rebuilt (a changed setting, new
    clips) while people are rating would take with it the only key to their ratings; the history keeps every
    kit's key, and the ratings database records which plan its ratings were given with."""
    sha = io.sha256_file(out_dir / KIT_DIR / PLAN_FILE)
    dest = out_dir / HISTORY_DIR / sha[:16]
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = io.temp_dir(dest.parent, prefix=f".{dest.name}-")
    for src in (out_dir / KIT_DIR / PLAN_FILE, out_dir / KEY_FILE, out_dir / KIT_SUMMARY):
        shutil.copyfile(src, tmp / src.name)
    os.replace(tmp, dest)
    log.info("kit plan %s archived in %s", sha[:16], dest)
    return dest


def main(argv: list[str]) -> int | None:
    p = argparse.ArgumentParser(prog="ssmttm listening-kit", description=__doc__.split("\n\n")[0])
    p.add_argument("--test", required=True, help="the test's name (listening.tests.<name>)")
    p.add_argument("--system", action="extend", nargs="+", default=[], metavar="NAME=INDEX_JSON",
                   help="each system's set index (generate or reference layout), every system of the settings "
                        "once; one flag with several values or several flags")
    p.add_argument("--out-dir", required=True, help="the test's folder, results/listening/<test>")
    settings.add_arguments(p, KitSettings)
    args = p.parse_args(argv)
    s = settings.from_args(p, KitSettings, args)
    if not NAME.match(args.test):
        p.error(f"--test {args.test!r}: letters, digits, '_', '.', '-', starting with a letter or digit")
    try:
        options.attention(s)  # also checks the questions
    except ValueError as exc:
        p.error(str(exc))
    indexes = parse_systems(p, args.system, s.systems)
    named = [n for n in s.systems if n.lower() in args.test.lower()]
    if named:  # the test name is in plan.json, which raters load
        p.error(f"--test {args.test!r} contains the system name(s) {', '.join(named)}: raters would see it")
    log = logs.setup("ssmttm.listening_kit")
    out_dir = Path(args.out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = io.temp_dir(out_dir.parent, prefix=f".{out_dir.name}.kit-")
    try:
        record = build(args.test, s, indexes, staging, log)
        install(staging, out_dir, log)
        archive(out_dir, log)
    except KitError as exc:
        log.error("%s", exc)
        return 2
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    log.info("kit of test %s: %d clips (%d attention), %d raters x %d items, %.2f s each -> %s",
             args.test, len(record["clips"]), record["attention_pool"], len(record["raters"]),
             record["per_rater"], record["seconds"], out_dir)
    return 0
