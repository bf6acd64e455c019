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
  (``--audio-root``, ``NN/<track>.mp3``), and ``--seconds`` are cut at ``--offset``.

A clip that cannot be made (video unavailable, HTTP error, timeout, undecodable, too short, track not
in the corpus, shard not fetched) is a ``missing`` row; the stage goes on and exits 0 when at least
``--min-available`` clips exist.
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ssmttm import audio, io
from ssmttm.constants import SAMPLE_RATE

log = logging.getLogger(__name__)

SOURCES = ("musiccaps", "jamendo")
AVAILABILITY_COLUMNS = ("ref_id", "status", "reason", "source")
DEFAULT_URL_TEMPLATE = "https://www.youtube.com/watch?v={ytid}"
# HTTP 4xx other than 408 (timeout) / 429 (rate limit), and YouTube's own words for a video that is
# gone: retrying cannot help.
_PERMANENT = re.compile(
    r"HTTP Error 4(?!08|29)\d\d|video unavailable|private video|has been removed|is not available|"
    r"no longer available|account .*terminated|copyright|confirm your age|members[- ]only|unsupported url",
    re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


class ReferenceSetError(ValueError):
    """Bad arguments or a prompt-set file that cannot be used; the message names the flag or file."""


class ClipMissing(Exception):
    """One reference clip cannot be made; ``str(exc)`` is the reason ("<category>: <detail>")."""


class ClipTimeout(Exception):
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
        raise ReferenceSetError(f"--prompt-set {path}: cannot read ({exc})") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("prompts"), list):
        raise ReferenceSetError(f"--prompt-set {path}: not a prompt-set JSON (needs 'name' and a 'prompts' list)")
    refs: dict[str, Ref] = {}
    no_ref = 0
    for i, p in enumerate(obj["prompts"]):
        if not isinstance(p, dict) or "prompt_id" not in p:
            raise ReferenceSetError(f"--prompt-set {path}: prompt {i} is not a record with a prompt_id")
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
        log.warning("--prompt-set %s: %d prompts carry no ref_id (no reference clip)", path, no_ref)
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
@dataclass
class FetchConfig:
    """How MusicCaps media are fetched and cut (flags of the same names)."""

    url_template: str = DEFAULT_URL_TEMPLATE
    cache_dir: Path = Path("results/eval/cache/musiccaps")
    retries: int = 3
    timeout_s: float = 300.0
    socket_timeout_s: float = 30.0
    backoff_s: float = 5.0
    format: str = "bestaudio/best"
    cookies: str | None = None
    ffmpeg: str | None = None  # resolved path, or None when ffmpeg is not available
    tolerance_s: float = 0.5
    sample_rate: int = SAMPLE_RATE
    subtype: str = "PCM_16"


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

    def hook(d):  # called during the transfer: bounds a slow trickle that never trips socket_timeout
        if d.get("status") == "downloading" and time.monotonic() - t0 > cfg.timeout_s:
            raise ClipTimeout(f"timeout: no complete download within {cfg.timeout_s:g} s")

    def sleep(n):
        return min(cfg.backoff_s * 2 ** n, 60.0)

    opts = {
        "outtmpl": str(folder).replace("%", "%%") + f"/{ytid}.%(ext)s", "format": cfg.format,
        "noplaylist": True, "quiet": True, "no_warnings": True, "noprogress": True, "cachedir": False,
        "logger": _YdlLog(), "progress_hooks": [hook], "socket_timeout": min(cfg.socket_timeout_s, cfg.timeout_s),
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
    Transient failures are retried ``cfg.retries`` times, sleeping ``backoff_s * 2**attempt``.
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
        cmd = [cfg.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-ss", f"{start_s:.6f}", "-i",
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
        if cfg.ffmpeg is None:
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
                           cfg.tolerance_s, f"{path.name} [{start:g}, {end:g})")
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


def jamendo_clip(ref: Ref, row: dict | None, audio_root: Path, out_dir: Path, seconds: float, offset: str,
                 sample_rate: int = SAMPLE_RATE, subtype: str = "PCM_16") -> Outcome:
    """Cut ``seconds`` at ``offset`` (center | start | seconds) from the corpus file of one Jamendo track."""
    from ssmttm.data.segment import clip_starts, decode_windows, fetch_rejection, read_receipt

    if row is None:
        return Outcome(ref.ref_id, "missing", f"not in corpus: track {ref.ref_id} is not in raw_30s_cleantags.tsv")
    path = audio_root / row["path"]
    try:
        if not path.is_file():
            receipt = audio_root / f"{row['shard']}.json"
            if not receipt.is_file():
                raise ClipMissing(f"fetch: shard {row['shard']} not fetched (no {receipt})")
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


def fetch_jamendo(refs: list[Ref], out_dir: Path, cleantags: Path, audio_root: Path, seconds: float = 10.0,
                  offset: str = "center", sample_rate: int = SAMPLE_RATE, subtype: str = "PCM_16") -> list[Outcome]:
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
        out.append(jamendo_clip(ref, by_num.get(num) if num is not None else None, audio_root, out_dir, seconds,
                                offset, sample_rate, subtype))
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


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ssmttm reference-audio", description=__doc__.split("\n")[0])
    p.add_argument("--prompts", "--prompt-set", dest="prompt_set", required=True,
                   help="prompt-set JSON written by the prompt-set stage")
    p.add_argument("--source", required=True, choices=SOURCES)
    p.add_argument("--out-dir", required=True, help="results/eval/reference/<set>")
    p.add_argument("--set", default=None, help="set name in index.json (default: the prompt set's name)")
    p.add_argument("--sample-rate", type=int, default=SAMPLE_RATE)
    p.add_argument("--subtype", default="PCM_16", choices=("PCM_16", "PCM_24", "FLOAT"), help="wav sample format")
    p.add_argument("--min-available", type=int, default=1, help="fail (exit 1) with fewer clips than this")
    g = p.add_argument_group("musiccaps (yt-dlp)")
    g.add_argument("--url-template", default=DEFAULT_URL_TEMPLATE, help="URL with {ytid}")
    g.add_argument("--cache-dir", default="results/eval/cache/musiccaps", help="downloaded media, one folder per ytid")
    g.add_argument("--retries", type=int, default=3, help="retries per clip (yt-dlp's and ours)")
    g.add_argument("--timeout", type=float, default=300.0, help="wall-clock seconds per clip download attempt")
    g.add_argument("--socket-timeout", type=float, default=30.0, help="seconds a connection may stay silent")
    g.add_argument("--backoff", type=float, default=5.0, help="first retry wait in seconds, doubled each retry")
    g.add_argument("--format", default="bestaudio/best", help="yt-dlp format selector")
    g.add_argument("--cookies", default=None, help="cookies.txt for yt-dlp (optional)")
    g.add_argument("--ffmpeg", default="ffmpeg", help="ffmpeg executable for m4a/webm (skipped if not found)")
    g.add_argument("--tolerance", type=float, default=0.5, help="seconds a clip may fall short (zero-padded)")
    g.add_argument("--jobs", type=int, default=4, help="parallel downloads")
    g = p.add_argument_group("jamendo")
    g.add_argument("--cleantags", default=None, help="raw_30s_cleantags.tsv")
    g.add_argument("--audio-root", default=None, help="unpacked shards NN/<track>.mp3 (results/data/source/audio)")
    g.add_argument("--seconds", type=float, default=10.0, help="clip length")
    g.add_argument("--offset", default="center", help="center, start, or seconds from the track start")
    args = p.parse_args(argv)
    for flag, val, lo in (("--retries", args.retries, 0), ("--min-available", args.min_available, 0),
                          ("--jobs", args.jobs, 1), ("--sample-rate", args.sample_rate, 1)):
        if val < lo:
            p.error(f"{flag}: must be >= {lo}, got {val}")
    for flag, val in (("--timeout", args.timeout), ("--socket-timeout", args.socket_timeout),
                      ("--seconds", args.seconds)):
        if not val > 0:
            p.error(f"{flag}: must be > 0, got {val}")
    if args.backoff < 0 or args.tolerance < 0:
        p.error("--backoff/--tolerance: must be >= 0")
    if "{ytid}" not in args.url_template:
        p.error(f"--url-template: needs a {{ytid}} placeholder, got {args.url_template!r}")
    if args.offset not in ("center", "start"):
        try:
            if float(args.offset) < 0:
                raise ValueError
        except ValueError:
            p.error(f"--offset: center, start or seconds >= 0, got {args.offset!r}")
    if args.source == "jamendo":
        for flag, val, kind in (("--cleantags", args.cleantags, "file"), ("--audio-root", args.audio_root, "dir")):
            if not val or not (Path(val).is_file() if kind == "file" else Path(val).is_dir()):
                p.error(f"{flag}: needed for --source jamendo; {val!r} is not an existing {kind}")
    return args


def main(argv: list[str]) -> int | None:
    """``reference-audio``: one 44.1 kHz mono wav per reference clip of a prompt set."""
    from ssmttm import logs

    logs.setup()
    args = parse_args(argv)
    try:
        name, refs = read_refs(args.prompt_set)
    except ReferenceSetError as exc:
        log.error("%s", exc)
        return 2
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bad = [r for r in refs if not _SAFE.match(r.ref_id) or r.ref_id in (".", "..", "index")]
    good = [r for r in refs if r not in bad]
    t0 = time.time()
    if args.source == "musiccaps":
        ffmpeg = shutil.which(args.ffmpeg)
        if ffmpeg is None:
            log.warning("--ffmpeg %s: not found; media soundfile cannot read (m4a, webm) will be missing", args.ffmpeg)
        cfg = FetchConfig(args.url_template, Path(args.cache_dir), args.retries, args.timeout, args.socket_timeout,
                          args.backoff, args.format, args.cookies, ffmpeg, args.tolerance, args.sample_rate,
                          args.subtype)
        outcomes = fetch_musiccaps(good, out_dir, cfg, args.jobs)
        extra = {"url_template": args.url_template, "retries": args.retries, "timeout_s": args.timeout,
                 "socket_timeout_s": args.socket_timeout,
                 "format": args.format, "ffmpeg": ffmpeg, "tolerance_s": args.tolerance}
    else:
        outcomes = fetch_jamendo(good, out_dir, Path(args.cleantags), Path(args.audio_root), args.seconds,
                                 args.offset, args.sample_rate, args.subtype)
        extra = {"cleantags": args.cleantags, "audio_root": args.audio_root, "seconds": args.seconds,
                 "offset": args.offset}
    outcomes += [Outcome(r.ref_id, "missing", f"bad ref_id: {r.ref_id!r} is not a safe file name") for r in bad]
    for o in outcomes:
        if o.status == "missing":
            log.warning("ref %s missing: %s", o.ref_id, o.reason)
    extra.update(sample_rate=args.sample_rate, subtype=args.subtype, prompt_set=str(args.prompt_set),
                 elapsed_s=round(time.time() - t0, 3))
    index = write_outputs(out_dir, args.set or name, args.source, refs, outcomes, extra)
    log.info("%s (%s) -> %s", index["summary"], json.dumps(index["counts"]), out_dir)
    if index["n_available"] < args.min_available:
        log.error("--min-available %d: only %d reference clips available", args.min_available, index["n_available"])
        return 1
    return 0
