"""Reference audio for an evaluation prompt set: stage ``reference-audio``.

Reads a prompt-set JSON (``prompt-set`` stage) and writes, in ``--out-dir``
(``results/eval/reference/<set>/``):

- ``<ref_id>.wav``: one clip per unique ``ref_id``, mono, 44.1 kHz (PCM16 by default);
- ``index.json``: ``{"kind": "reference", "set", "source", "sample_rate", "summary", "clips":
  [{"id", "file", "ref_id", "seconds", "source", "offset_s", "prompt_id", "prompt_ids", "text"}]}``
  (``prompt_id``/``text``: the first prompt describing the clip; ``prompt_ids``: all of them);
- ``availability.tsv``: ``ref_id status reason source`` for every ref, status ``fetched`` (made this
  run), ``cached`` (MusicCaps media reused from ``--cache-dir``, no network) or ``missing`` (reason).

Sources (``--source``):

- ``musiccaps`` (docs/reference.md §3: 10 s YouTube clips, ~3-7 % no longer downloadable): yt-dlp
  downloads the media of ``--url-template`` into ``--cache-dir/<ytid>/`` (reused on rerun), with
  yt-dlp's own retries plus our retry loop with exponential back-off and a per-clip wall-clock
  timeout; then we cut ``[start_s, end_s)`` from the prompt record, downmix, resample to 44.1 kHz.
  soundfile decodes wav/flac/ogg/mp3; YouTube's m4a/webm go through ``ffmpeg`` (a subprocess with
  list arguments) when it is on PATH, else the clip is ``missing`` with the reason.
- ``jamendo`` (Song Describer, and the offline demo): ``ref_id`` is a Jamendo track number; the
  track's file is found through ``raw_30s_cleantags.tsv`` (``--cleantags``) under the unpacked shards
  (``--receipts``: ``NN.json`` beside ``NN/<track>.mp3``), and ``--seconds`` are cut at ``--offset``.

A clip that cannot be made (video unavailable, HTTP error, timeout, undecodable, too short, track not
in the corpus, shard not fetched) is a ``missing`` row; the stage goes on and exits 0 when at least
``--min-available`` clips exist.

The settings (source, lengths, retries, timeouts, ...) are the keys of the config's ``evaluation.reference``
(:class:`ssmttm.eval.options.ReferenceSettings`, defaults in the schema): the rule passes them as
``--settings`` JSON, by hand they are flags of the same names.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ssmttm import audio, io, settings
from ssmttm.constants import SAMPLE_RATE
from ssmttm.errors import SsmttmError
from ssmttm.eval.options import ReferenceSettings

log = logging.getLogger(__name__)

AVAILABILITY_COLUMNS = ("ref_id", "status", "reason", "source")
# HTTP 4xx other than 408 (timeout) / 429 (rate limit), and YouTube's own words for a video that is
# gone: retrying cannot help.
_PERMANENT = re.compile(
    r"HTTP Error 4(?!08|29)\d\d|video unavailable|private video|has been removed|is not available|"
    r"no longer available|account .*terminated|copyright|confirm your age|members[- ]only|unsupported url",
    re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


class ReferenceSetError(SsmttmError, ValueError):
    """Bad arguments or a prompt-set file that cannot be used; the message names the flag or file."""


class ClipMissing(SsmttmError):
    """One reference clip cannot be made; ``str(exc)`` is the reason ("<category>: <detail>")."""


class ClipTimeout(SsmttmError):
    """The per-clip wall-clock limit passed during a download."""


@dataclass
class Ref:
    """One reference clip to make: its id, the prompts describing it and (MusicCaps) its bounds."""

    ref_id: str
    prompt_ids: list[str] = field(default_factory=list)
    text: str | None = None
    start_s: float | None = None
    end_s: float | None = None


@dataclass
class Outcome:
    ref_id: str
    status: str  # fetched | cached | missing
    reason: str = ""
    source: str = ""
    seconds: float | None = None
    offset_s: float | None = None


def read_refs(path: str | os.PathLike) -> tuple[str, list[Ref]]:
    """(set name, unique refs in first-seen order) from a prompt-set JSON.

    Prompts without ``ref_id`` have no reference and are skipped (logged); a ref described by several
    prompts keeps the bounds of its first prompt (a conflict is logged).
    """
    try:
        obj = io.read_json(path)
    except (OSError, ValueError) as exc:
        raise ReferenceSetError(f"--prompts {path}: cannot read ({exc})") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("prompts"), list):
        raise ReferenceSetError(f"--prompts {path}: not a prompt-set JSON (needs 'name' and a 'prompts' list)")
    refs: dict[str, Ref] = {}
    no_ref = 0
    for i, p in enumerate(obj["prompts"]):
        if not isinstance(p, dict) or "prompt_id" not in p:
            raise ReferenceSetError(f"--prompts {path}: prompt {i} is not a record with a prompt_id")
        if p.get("ref_id") in (None, ""):
            no_ref += 1
            continue
        rid = str(p["ref_id"])
        ref = refs.setdefault(rid, Ref(rid, text=p.get("text"), start_s=p.get("start_s"), end_s=p.get("end_s")))
        if (p.get("start_s"), p.get("end_s")) != (ref.start_s, ref.end_s):
            log.warning("ref %s: prompt %s gives bounds %s-%s, keeping %s-%s of prompt %s", rid, p["prompt_id"],
                        p.get("start_s"), p.get("end_s"), ref.start_s, ref.end_s, ref.prompt_ids[0])
        ref.prompt_ids.append(str(p["prompt_id"]))
    if no_ref:
        log.warning("--prompts %s: %d prompts carry no ref_id (no reference clip)", path, no_ref)
    return str(obj.get("name", Path(path).stem)), list(refs.values())


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad ``x: [C, M]`` to ``n`` samples."""
    return x[:, :n] if x.shape[1] >= n else np.pad(x, ((0, 0), (0, n - x.shape[1])))


def _write_clip(x: np.ndarray, sr: int, seconds: float, out: Path, sample_rate: int, subtype: str,
                tolerance_s: float, what: str) -> float:
    """Downmix ``x: [C, N]`` at ``sr``, check its length, resample, write ``out``; returns seconds written."""
    got = x.shape[1] / sr
    if got < seconds - tolerance_s:
        raise ClipMissing(f"too short: {what} gives {got:.2f} s of {seconds:g} s")
    y = audio.resample(audio.to_channels(x, 1), sr, sample_rate)
    if not np.all(np.isfinite(y)):
        raise ClipMissing(f"non-finite: {what} decodes to NaN/inf samples")
    audio.write(out, _fit(y, int(round(seconds * sample_rate))), sample_rate, subtype=subtype)
    return round(seconds, 6)


# --- MusicCaps via yt-dlp -------------------------------------------------------------------------------
@dataclass(kw_only=True)
class FetchConfig(ReferenceSettings):
    """How MusicCaps media are fetched and cut: the ``evaluation.reference`` settings (seconds:
    ``timeout_s``, ``socket_timeout_s``, ``backoff_s``, ``tolerance``) plus the media cache folder and the
    resolved ffmpeg executable."""

    cache_dir: Path
    ffmpeg_path: str | None  # shutil.which(ffmpeg), or None when ffmpeg is not available
    sample_rate: int = SAMPLE_RATE  # every reference clip is written at the pipeline's rate

    @classmethod
    def from_settings(cls, s: ReferenceSettings, cache_dir: str | os.PathLike, ffmpeg_path: str | None) -> FetchConfig:
        return cls(**asdict(s), cache_dir=Path(cache_dir), ffmpeg_path=ffmpeg_path)


class _YdlLog:
    """yt-dlp's messages go to our debug log: the outcome (with its reason) is logged once by us."""

    def debug(self, msg):
        log.debug("yt-dlp: %s", msg)

    info = warning = error = debug


def _reason(exc: BaseException) -> str:
    msg = _ANSI.sub("", str(exc)).strip()
    msg = re.sub(r"^ERROR:\s*", "", msg)
    return f"{type(exc).__name__}: {msg}" if not msg else msg


def _ytdlp_once(url: str, folder: Path, ytid: str, cfg: FetchConfig) -> Path:
    """One yt-dlp download of ``url`` into ``folder``; returns the media file."""
    import yt_dlp

    t0 = time.monotonic()

    def hook(d):  # called during the transfer: bounds a slow trickle that never trips socket_timeout_s
        if d.get("status") == "downloading" and time.monotonic() - t0 > cfg.timeout_s:
            raise ClipTimeout(f"timeout: no complete download within {cfg.timeout_s:g} s")

    def sleep(n):
        return min(cfg.backoff_s * 2 ** n, 60.0)

    opts = {
        "outtmpl": str(folder).replace("%", "%%") + f"/{ytid}.%(ext)s", "format": cfg.format,
        "noplaylist": True, "quiet": True, "no_warnings": True, "noprogress": True, "cachedir": False,
        "logger": _YdlLog(), "progress_hooks": [hook], "socket_timeout_s": min(cfg.socket_timeout_s, cfg.timeout_s),
        "retries": cfg.retries, "fragment_retries": cfg.retries, "extractor_retries": cfg.retries,
        "retry_sleep_functions": {"http": sleep, "fragment": sleep, "extractor": sleep},
        "restrictfilenames": True, "overwrites": False,
    }
    if cfg.cookies:
        opts["cookiefile"] = cfg.cookies
    with yt_dlp.YoutubeDL(opts) as ydl:
        info = ydl.extract_info(url, download=True)
    for d in (info or {}).get("requested_downloads") or [info or {}]:
        p = d.get("filepath") or d.get("_filename")
        if p and Path(p).is_file():
            return Path(p)
    raise ClipMissing(f"download: yt-dlp reported success but wrote no file for {url}")


def download_media(ytid: str, cfg: FetchConfig) -> tuple[Path, str]:
    """(media file, "fetched"|"cached") for one MusicCaps video; raises ClipMissing with the reason.

    ``--cache-dir/<ytid>/done.json`` marks a complete download: a rerun reuses it without any request.
    Transient failures are retried ``cfg.retries`` times, sleeping ``backoff_s * 2**attempt`` seconds.
    """
    folder = cfg.cache_dir / ytid
    marker = folder / "done.json"
    if marker.is_file():
        try:
            cached = folder / Path(io.read_json(marker)["file"]).name
            if cached.is_file():
                return cached, "cached"
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("%s: unreadable cache marker %s; downloading again", ytid, marker)
    url = cfg.url_template.format(ytid=ytid)
    folder.mkdir(parents=True, exist_ok=True)
    for attempt in range(cfg.retries + 1):
        try:
            path = _ytdlp_once(url, folder, ytid, cfg)
        except ClipMissing:
            raise
        except ClipTimeout as exc:
            reason = str(exc)
        except Exception as exc:  # yt_dlp.utils.DownloadError and whatever the network raises
            reason = f"download: {_reason(exc)}"
        else:
            io.write_json(marker, {"url": url, "file": path.name, "bytes": path.stat().st_size,
                                   "sha256": io.sha256_file(path)})
            return path, "fetched"
        if _PERMANENT.search(reason) or attempt == cfg.retries:
            raise ClipMissing(reason if attempt == 0 else f"{reason} (after {attempt + 1} attempts)")
        wait = min(cfg.backoff_s * 2 ** attempt, 300.0)
        log.info("%s: attempt %d failed (%s); retrying in %.1f s", ytid, attempt + 1, reason, wait)
        time.sleep(wait)
    raise AssertionError("unreachable")


def _ffmpeg_section(path: Path, start_s: float, seconds: float, cfg: FetchConfig) -> tuple[np.ndarray, int]:
    """Decode ``[start_s, start_s + seconds)`` of ``path`` with ffmpeg to mono ``cfg.sample_rate``."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        out = Path(tmp) / "section.wav"
        cmd = [cfg.ffmpeg_path, "-nostdin", "-hide_banner", "-loglevel", "error", "-ss", f"{start_s:.6f}", "-i",
               str(path), "-t", f"{seconds:.6f}", "-vn", "-ac", "1", "-ar", str(cfg.sample_rate),
               "-c:a", "pcm_f32le", "-f", "wav", "-y", str(out)]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=cfg.timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise ClipMissing(f"decode: ffmpeg took longer than {cfg.timeout_s:g} s on {path.name}") from None
        if res.returncode != 0 or not out.is_file():
            raise ClipMissing(f"decode: ffmpeg failed on {path.name} ({res.stderr.strip()[-300:]})")
        try:
            return audio.read(out)
        except audio.AudioError as exc:
            if "zero samples" in str(exc):
                raise ClipMissing(f"too short: {path.name} has no audio at {start_s:g} s") from None
            raise ClipMissing(f"decode: {exc}") from None


def decode_section(path: Path, start_s: float, seconds: float, cfg: FetchConfig) -> tuple[np.ndarray, int]:
    """``[start_s, start_s + seconds)`` of ``path`` as ``([C, N] float32, rate)``: soundfile first, then
    ffmpeg (containers soundfile cannot read: m4a, webm); raises ClipMissing with the reason."""
    try:
        _, _, total = audio.info(path)
    except audio.AudioError as exc:
        if cfg.ffmpeg_path is None:
            ext = path.suffix.lstrip(".") or "this container"
            raise ClipMissing(f"decode: cannot decode {ext} without ffmpeg ({path.name}: {exc})") from None
        return _ffmpeg_section(path, start_s, seconds, cfg)
    if start_s >= total:
        raise ClipMissing(f"too short: {path.name} lasts {total:.2f} s, the clip starts at {start_s:g} s")
    try:
        return audio.read(path, start_s, seconds)
    except audio.AudioError as exc:
        raise ClipMissing(f"decode: {exc}") from None


def musiccaps_clip(ref: Ref, out_dir: Path, cfg: FetchConfig) -> Outcome:
    """Download (or reuse) one MusicCaps video and write ``<ytid>.wav`` = its ``[start_s, end_s)``."""
    url = cfg.url_template.format(ytid=ref.ref_id)
    try:
        if ref.start_s is None or ref.end_s is None:
            raise ClipMissing("bounds: the prompt set gives no start_s/end_s for this ref")
        start, end = float(ref.start_s), float(ref.end_s)
        if not 0 <= start < end:
            raise ClipMissing(f"bounds: invalid start_s={start} end_s={end}")
        path, status = download_media(ref.ref_id, cfg)
        x, sr = decode_section(path, start, end - start, cfg)
        secs = _write_clip(x, sr, end - start, out_dir / f"{ref.ref_id}.wav", cfg.sample_rate, cfg.subtype,
                           cfg.tolerance, f"{path.name} [{start:g}, {end:g})")
    except ClipMissing as exc:
        return Outcome(ref.ref_id, "missing", str(exc), url)
    return Outcome(ref.ref_id, status, "", url, secs, start)


def fetch_musiccaps(refs: list[Ref], out_dir: Path, cfg: FetchConfig, jobs: int = 1) -> list[Outcome]:
    """Every ref through :func:`musiccaps_clip`, ``jobs`` downloads at a time; outcomes in ``refs`` order."""
    from ssmttm.logs import progress

    cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(progress(pool.map(lambda r: musiccaps_clip(r, out_dir, cfg), refs), total=len(refs),
                             desc="musiccaps", unit="clip"))


# --- Jamendo (Song Describer, demo) ---------------------------------------------------------------------
def _jamendo_num(ref_id: str) -> int | None:
    from ssmttm.data.jamendo import TRACK_ID_RE

    if ref_id.isdigit():
        return int(ref_id)
    m = TRACK_ID_RE.match(ref_id)
    return int(m.group(1)) if m else None


def jamendo_clip(ref: Ref, row: dict | None, receipts: dict[str, Path], out_dir: Path, seconds: float,
                 offset: float | str, subtype: str, sample_rate: int = SAMPLE_RATE) -> Outcome:
    """Cut ``seconds`` at ``offset`` (center | start | seconds) from the corpus file of one Jamendo track.
    ``receipts``: shard -> its fetch receipt ``<audio dir>/NN.json`` (the track is ``<audio dir>/NN/x.mp3``);
    a shard not given was not fetched by this run, and its tracks are missing."""
    from ssmttm.data.segment import clip_starts, decode_windows, fetch_rejection, read_receipt

    if row is None:
        return Outcome(ref.ref_id, "missing", f"not in corpus: track {ref.ref_id} is not in raw_30s_cleantags.tsv")
    receipt = receipts.get(str(row["shard"]))
    if receipt is None:
        return Outcome(ref.ref_id, "missing", f"fetch: shard {row['shard']} is not one of this run's shards "
                                              f"(no receipt given)")
    path = receipt.parent / row["path"]
    try:
        if not path.is_file():
            raise ClipMissing(fetch_rejection(row, read_receipt(receipt)) or f"missing: {path} not found")
        sr, _, header_s = audio.info(path)
        n = int(round(seconds * sr))
        if offset in ("center", "start"):
            planned = clip_starts(int(round(header_s * sr)), n, offset, 0, int(row["track_num"]))
            dec = decode_windows(path, planned or [0], n)
            starts = clip_starts(dec.frames, n, offset, 0, int(row["track_num"]))
            if not starts:
                raise ClipMissing(f"too short: {path} decodes to {dec.frames / sr:.2f} s < {seconds:g} s")
            if starts != planned:  # the header length was wrong (MP3): cut where the true length says
                dec = decode_windows(path, starts, n)
            start = starts[0]
        else:
            start = int(round(float(offset) * sr))
            dec = decode_windows(path, [start], n)
        x = dec.windows[start]
        secs = _write_clip(x, sr, seconds, out_dir / f"{ref.ref_id}.wav", sample_rate, subtype, 0.0,
                           f"{path} at {start / sr:.2f} s")
    except (ClipMissing, audio.AudioError, ValueError) as exc:
        reason = str(exc) if isinstance(exc, ClipMissing) else f"decode: {exc}"
        return Outcome(ref.ref_id, "missing", reason, str(path))
    return Outcome(ref.ref_id, "fetched", "", str(path), secs, round(start / sr, 6))


def fetch_jamendo(refs: list[Ref], out_dir: Path, cleantags: Path, receipts: dict[str, Path], seconds: float,
                  offset: float | str, subtype: str, sample_rate: int = SAMPLE_RATE) -> list[Outcome]:
    """Every ref through :func:`jamendo_clip`, tracks looked up in ``cleantags``; outcomes in order."""
    from ssmttm.data.jamendo import read_tracks
    from ssmttm.logs import progress

    tracks, problems = read_tracks(cleantags)
    if problems:
        log.warning("%s: %d malformed rows ignored", cleantags, len(problems))
    by_num = {int(r["track_num"]): r for r in tracks.to_dict("records")}
    out = []
    for ref in progress(refs, desc="jamendo", unit="clip"):
        num = _jamendo_num(ref.ref_id)
        out.append(jamendo_clip(ref, by_num.get(num) if num is not None else None, receipts, out_dir, seconds,
                                offset, subtype, sample_rate))
    return out


# --- outputs and stage ------------------------------------------------------------------------------------
def write_outputs(out_dir: Path, set_name: str, source: str, refs: list[Ref], outcomes: list[Outcome],
                  extra: dict) -> dict:
    """Write availability.tsv and index.json (last), remove stale wavs; returns the index."""
    import pandas as pd

    by_id = {r.ref_id: r for r in refs}
    ok = [o for o in outcomes if o.status != "missing"]
    keep = {f"{o.ref_id}.wav" for o in ok}
    for p in out_dir.glob("*.wav"):
        if p.name not in keep:
            log.info("removing stale %s", p)
            p.unlink()
    io.write_table(out_dir / "availability.tsv", pd.DataFrame(
        [{"ref_id": o.ref_id, "status": o.status, "reason": o.reason, "source": o.source} for o in outcomes],
        columns=list(AVAILABILITY_COLUMNS)))
    summary = f"{len(ok)} of {len(outcomes)} reference clips available"
    counts = {s: sum(o.status == s for o in outcomes) for s in ("fetched", "cached", "missing")}
    clips = [{"id": o.ref_id, "file": f"{o.ref_id}.wav", "ref_id": o.ref_id, "seconds": o.seconds,
              "offset_s": o.offset_s, "source": o.source, "prompt_id": by_id[o.ref_id].prompt_ids[0],
              "prompt_ids": by_id[o.ref_id].prompt_ids, "text": by_id[o.ref_id].text} for o in ok]
    index = {"kind": "reference", "set": set_name, "source": source, "sample_rate": extra["sample_rate"],
             "summary": summary, "n_requested": len(outcomes), "n_available": len(ok), "counts": counts,
             "options": extra, "clips": clips}
    io.write_json(out_dir / "index.json", index)
    return index


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, ReferenceSettings]:
    """(the files and folders, the ``evaluation.reference`` settings); a bad value fails naming its flag."""
    p = argparse.ArgumentParser(prog="ssmttm reference-audio", description=__doc__.split("\n")[0])
    p.add_argument("--prompts", required=True, help="prompt-set JSON written by the prompt-set stage")
    p.add_argument("--out-dir", required=True, help="results/eval/reference/<set>")
    p.add_argument("--set", default=None, help="set name in index.json (default: the prompt set's name)")
    p.add_argument("--cache-dir", default=None, help="musiccaps: downloaded media, one folder per ytid")
    p.add_argument("--cleantags", default=None, help="jamendo: raw_30s_cleantags.tsv")
    p.add_argument("--receipts", nargs="*", default=[], help="jamendo: the fetch receipts of this run's shards, "
                   "results/data/source/audio/NN.json (the tracks are NN/<track>.mp3 beside them)")
    settings.add_arguments(p, ReferenceSettings)
    args = p.parse_args(argv)
    s = settings.from_args(p, ReferenceSettings, args)
    if s.source == "jamendo":
        if not args.cleantags or not Path(args.cleantags).is_file():
            p.error(f"--cleantags: needed for --source jamendo; {args.cleantags!r} is not an existing file")
        for r in args.receipts:
            if not Path(r).is_file():
                p.error(f"--receipts: {r} is not an existing file")
    elif not args.cache_dir:
        p.error("--cache-dir: needed for --source musiccaps (the downloaded media)")
    return args, s


def main(argv: list[str]) -> int | None:
    """``reference-audio``: one 44.1 kHz mono wav per reference clip of a prompt set."""
    from ssmttm import logs

    logs.setup()
    args, s = parse_args(argv)
    try:
        name, refs = read_refs(args.prompts)
    except ReferenceSetError as exc:
        log.error("%s", exc)
        return 2
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bad = [r for r in refs if not _SAFE.match(r.ref_id) or r.ref_id in (".", "..", "index")]
    good = [r for r in refs if r not in bad]
    t0 = time.time()
    if s.source == "musiccaps":
        ffmpeg = shutil.which(s.ffmpeg)
        if ffmpeg is None:
            log.warning("--ffmpeg %s: not found; media soundfile cannot read (m4a, webm) will be missing", s.ffmpeg)
        cfg = FetchConfig.from_settings(s, args.cache_dir, ffmpeg)
        outcomes = fetch_musiccaps(good, out_dir, cfg, s.jobs)
        extra = {"url_template": s.url_template, "retries": s.retries, "timeout_s": s.timeout_s,
                 "socket_timeout_s": s.socket_timeout_s, "format": s.format, "ffmpeg": ffmpeg, "tolerance": s.tolerance}
    else:
        receipts = {Path(r).stem: Path(r) for r in args.receipts}
        outcomes = fetch_jamendo(good, out_dir, Path(args.cleantags), receipts, s.seconds, s.offset, s.subtype)
        extra = {"cleantags": args.cleantags, "receipts": sorted(map(str, receipts.values())), "seconds": s.seconds,
                 "offset": s.offset}
    outcomes += [Outcome(r.ref_id, "missing", f"bad ref_id: {r.ref_id!r} is not a safe file name") for r in bad]
    for o in outcomes:
        if o.status == "missing":
            log.warning("ref %s missing: %s", o.ref_id, o.reason)
    extra.update(sample_rate=SAMPLE_RATE, subtype=s.subtype, prompt_set=str(args.prompts),
                 elapsed_s=round(time.time() - t0, 3))
    index = write_outputs(out_dir, args.set or name, s.source, refs, outcomes, extra)
    log.info("%s (%s) -> %s", index["summary"], json.dumps(index["counts"]), out_dir)
    if index["n_available"] < s.min_available:
        log.error("--min-available %d: only %d reference clips available", s.min_available, index["n_available"])
        return 1
    return 0
