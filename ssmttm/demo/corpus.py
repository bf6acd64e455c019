"""A deterministic synthetic MTG-Jamendo ``raw_30s`` mirror, laid out exactly like the real sources.

``build(out_dir)`` writes (docs/ARCHITECTURE.md, "Real source formats" and "Demo mirror tree")::

    raw_30s/audio/raw_30s_audio-NN.tar     NN/<track_num>.mp3 inside, NN == track_num % 100
    metadata/raw_30s_cleantags.tsv raw.meta.tsv audio_licenses.txt song_describer.csv
    metadata/raw_30s_audio_sha256_tars.txt raw_30s_audio_sha256_tracks.txt
    metadata/demo_truth.tsv                 ground truth per track, for evaluation only

The music comes from :mod:`ssmttm.demo.synth`, so every tag describes the audio. Problems every
real stage must survive are planted on purpose and recorded in ``demo_truth.tsv``:

- audio defects (``defect`` column), each with a plausible DURATION >= 35 s so it passes the
  metadata filter of any clip length up to 35 s: ``corrupt`` (random bytes named .mp3),
  ``truncated`` (an MP3 cut to 40 % of its bytes; the listed sha256 is that of the cut file, so
  the download check passes), ``silent`` (digital silence), ``short`` (SHORT_SECONDS = 8 s of
  audio while the TSV says 40 s: shorter than any clip length, so segment rejects it as too short
  rather than as cut);
- metadata problems (``planted`` column): malformed TSV rows (``tsv_empty_duration``,
  ``tsv_bad_duration``, ``tsv_too_few_fields``), licence records that are malformed
  (``licence_missing_line``, ``licence_garbled_url``, ``licence_unknown``) or absent
  (``licence_absent``), one wrong sha256 in the track list (``sha256_wrong``, a corrupted
  download), Song Describer overlap (``song_describer``), and the tracks of the missing tars
  (``shard_missing``: listed everywhere, tar listed in the sha256 list, but never written: a CDN
  outage).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import hashlib
import io as _io
import json
import logging
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ssmttm import io
from ssmttm.constants import CC_CODES, SAMPLE_RATE
from ssmttm.demo import synth

log = logging.getLogger(__name__)

MIN_TRACKS = 12
DEFECTS = ("corrupt", "truncated", "silent", "short")
SHORT_SECONDS = 8.0  # the "short" defect's audio; good tracks are longer than MIN_GOOD_SECONDS
MIN_GOOD_SECONDS = 10.0
DEFECT_MIN_TSV_SECONDS = 35.0  # the listed DURATION of every defective track: passes any clip length up to 35 s
# Reported MTG-Jamendo licence mix (docs/reference.md §2): ~70 % NC, ~34 % ND.
LICENCE_MIX = {"by": 3122, "by-sa": 9933, "by-nd": 3303, "by-nc": 2274, "by-nc-sa": 21399, "by-nc-nd": 15584}
_WORDS = {"by": "Attribution", "sa": "ShareAlike", "nc": "NonCommercial", "nd": "NoDerivs"}
# Metadata problems, assigned in this order to distinct clean tracks (wrapping only when few).
PLANTED = (
    "tsv_empty_duration", "tsv_bad_duration", "tsv_too_few_fields",
    "licence_missing_line", "licence_garbled_url", "licence_unknown", "licence_absent", "licence_absent",
    "sha256_wrong", "song_describer", "song_describer", "song_describer", "song_describer",
)
TAR_MTIME = 1_560_000_000  # fixed member mtime (2019, the dataset's release year): byte-identical tars
MP3_OPTIONS = {"bitrate_mode": "VARIABLE", "compression_level": 0.6}  # VBR: exact decoded length
TRUTH_COLUMNS = ("track_id", "bpm", "key", "mode", "drums", "instruments", "genre", "mood", "seconds",
                 "defect", "path", "tsv_duration", "licence", "planted", "expect")

_ADJ = ("Amber", "Silent", "Electric", "Golden", "Hollow", "Velvet", "Distant", "Crimson", "Paper", "Northern",
        "Lunar", "Broken", "Quiet", "Wild", "Glass", "Midnight", "Copper", "Little", "Endless", "Blue")
_NOUN = ("Horizon", "Rivers", "Machines", "Garden", "Echoes", "Harbour", "Lights", "Signals", "Forest",
         "Streets", "Tides", "Dreams", "Engines", "Voyage", "Embers", "Skyline", "Waltz", "Morning")
_ARTISTS = ("The Quiet Foxes", "Lúa Nova", "DJ Kestrel", "Marta & the Owls", "Orbital Drift", "Søren Vik",
            "Paper Lanterns", "Kaito Mori", "Les Trois Pins", "Nightjar", "Ana Belén Ruiz", "Copperline",
            "Static Bloom", "Delta Nine", "Iris Kowalski", "Bright Harbour", "Moth Orchestra", "Zé Carvalho")
_OTHER_CAPTIONS = ("Mellow acoustic guitar, soft, for a rainy afternoon, no vocals.",
                   "Upbeat synth-pop with a female singer, bright drums, catchy chorus.",
                   "Slow, dark cello drone with distant piano, cinematic and tense.")
_SPECIAL_TITLES = ("Standing by the Sea", "Café Lumière", "Don't Look Back")  # ' by ', non-ASCII, quote


@dataclass
class Track:
    num: int
    shard: str
    artist: int
    album: int
    spec: synth.TrackSpec
    tsv_duration: float
    defect: str = ""
    planted: list[str] = field(default_factory=list)
    licence: tuple[str, str] | None = None  # (code, version)
    title: str = ""
    artist_name: str = ""
    album_name: str = ""
    release: str = ""

    @property
    def track_id(self) -> str:
        return f"track_{self.num:07d}"

    @property
    def path(self) -> str:
        return f"{self.shard}/{self.num}.mp3"


def _allocate(n: int, weights: dict[str, int], min_each: int) -> dict[str, int]:
    """Integer counts summing to ``n``, proportional to ``weights`` with at least ``min_each`` each."""
    total = sum(weights.values())
    want = {c: n * w / total for c, w in weights.items()}
    counts = {c: max(min_each, int(v)) for c, v in want.items()}
    while sum(counts.values()) < n:
        counts[max(want, key=lambda c: want[c] - counts[c])] += 1
    while sum(counts.values()) > n:
        counts[max((c for c in counts if counts[c] > min_each), key=lambda c: counts[c] - want[c])] -= 1
    return counts


def plan(n_tracks: int, n_shards: int, missing_shards: tuple[str, ...], seed: int,
         seconds: tuple[float, float] = (35.0, 90.0)) -> list[Track]:
    """Decide every track (ids, shard, tags, defects, licence, names) without rendering audio."""
    shard_ids = [f"{i:02d}" for i in range(n_shards)]
    if not 1 <= n_shards <= 100:
        raise ValueError(f"n_shards must be 1..100 (MTG-Jamendo has 100 tars), got {n_shards}")
    bad = [s for s in missing_shards if s not in shard_ids]
    if bad:
        raise ValueError(f"missing_shards {bad} not among shard ids {shard_ids[0]}..{shard_ids[-1]}")
    present = [s for s in shard_ids if s not in missing_shards]
    if not present:
        raise ValueError("missing_shards leaves no shard with audio")
    if n_tracks < MIN_TRACKS:
        raise ValueError(f"n_tracks must be >= {MIN_TRACKS} to hold every defect and licence, got {n_tracks}")
    if not MIN_GOOD_SECONDS <= seconds[0] <= seconds[1]:
        raise ValueError(f"seconds range must satisfy {MIN_GOOD_SECONDS:g} <= lo <= hi, got {seconds}")
    rng = np.random.default_rng(seed)
    per_missing = 2 if n_tracks < 24 else 3  # a CDN outage costs only a few tracks
    shards = [s for s in missing_shards for _ in range(per_missing)]
    shards += [present[i % len(present)] for i in range(n_tracks - len(shards))]
    if len(shards) - per_missing * len(missing_shards) < len(DEFECTS) + 5:
        raise ValueError(f"n_tracks={n_tracks} too small for {len(missing_shards)} missing shard(s)")
    used: set[int] = set()
    nums = []
    for s in shards:  # Jamendo-like ids (4-7 digits) with num % 100 == shard
        while (num := int(rng.integers(10, 14_000)) * 100 + int(s)) in used:
            pass
        used.add(num)
        nums.append(num)
    n_artists = max(4, n_tracks // 3)
    artist_ids = rng.choice(np.arange(1, 600_000), size=n_artists, replace=False)
    album_base = rng.choice(np.arange(1, 400_000), size=2 * n_artists, replace=False)
    tracks = []
    for i, (num, s) in enumerate(zip(nums, shards)):
        a = int(rng.integers(n_artists))
        sub = np.random.default_rng([seed, num])
        secs = round(float(seconds[0] + (seconds[1] - seconds[0]) * rng.beta(1.3, 2.6)), 1)
        spec = synth.random_spec(sub, secs, seed=int(np.random.SeedSequence([seed, num]).generate_state(1)[0]))
        t = Track(num, s, int(artist_ids[a]), int(album_base[2 * a + int(rng.integers(2))]), spec, secs)
        t.title = f"{_ADJ[int(rng.integers(len(_ADJ)))]} {_NOUN[int(rng.integers(len(_NOUN)))]}"
        t.artist_name = _ARTISTS[a % len(_ARTISTS)] + ("" if a < len(_ARTISTS) else f" {a // len(_ARTISTS) + 1}")
        t.album_name = f"{_NOUN[(t.album * 7) % len(_NOUN)]} of {_ADJ[t.album % len(_ADJ)]}"
        t.release = f"{2005 + t.album % 13}-{1 + t.album % 12:02d}-{1 + t.album % 28:02d}"
        tracks.append(t)
        if s in missing_shards:
            t.planted.append("shard_missing")
    for t, title in zip(tracks[len(tracks) - 3:], _SPECIAL_TITLES):
        t.title = title
    # Defects and metadata problems go to distinct tracks in the tars (never the missing shard, where
    # they could not be observed), so each reaches the stage that must catch it.
    idx = [i for i, t in enumerate(tracks) if t.shard not in missing_shards]
    rng.shuffle(idx)
    for d, i in zip(DEFECTS, idx):
        t = tracks[i]
        t.defect = d
        if d == "short":
            t.spec = _with_seconds(t.spec, SHORT_SECONDS)
            t.tsv_duration = 40.0  # the TSV claims 40 s, the file holds SHORT_SECONDS
        elif d == "silent":  # as long as its listed DURATION, so only the silence is wrong with it
            t.spec = _with_seconds(t.spec, max(t.spec.seconds, DEFECT_MIN_TSV_SECONDS))
            t.tsv_duration = t.spec.seconds
        t.tsv_duration = max(t.tsv_duration, DEFECT_MIN_TSV_SECONDS)
    pool = idx[len(DEFECTS):]
    for j, issue in enumerate(PLANTED):
        tracks[pool[j % len(pool)]].planted.append(issue)
    # Licences: every track but the malformed/absent ones, mixed like the real corpus, >= 3 each
    # when there are enough tracks; clean tracks come first so they cover all six licences.
    lic_bad = {"licence_absent", "licence_missing_line", "licence_garbled_url", "licence_unknown"}
    valid = [i for i in range(len(tracks)) if not lic_bad & set(tracks[i].planted)]
    valid.sort(key=lambda i: (bool(tracks[i].planted or tracks[i].defect), i))
    counts = _allocate(len(valid), LICENCE_MIX, 3 if len(valid) >= 36 else 1)
    codes = list(CC_CODES)
    rest = [c for c in CC_CODES for _ in range(counts[c] - 1)]
    rng.shuffle(rest)
    versions = ["3.0"] * len(valid)
    n_old, n_new = max(1, round(0.08 * len(valid))), max(1, round(0.05 * len(valid)))
    perm = rng.permutation(len(valid))  # mostly 3.0, a few 2.5 and 4.0 as in the real file
    for k in perm[:n_old]:
        versions[int(k)] = "2.5"
    for k in perm[n_old:n_old + n_new]:
        versions[int(k)] = "4.0"
    for i, code, ver in zip(valid, codes + rest, versions):
        tracks[i].licence = (code, ver)
    for t in tracks:  # malformed records still name a licence in words
        if t.licence is None and "licence_absent" not in t.planted:
            t.licence = ("by-nc-sa", "3.0")
    return tracks


def _with_seconds(spec: synth.TrackSpec, seconds: float) -> synth.TrackSpec:
    import dataclasses

    return dataclasses.replace(spec, seconds=float(seconds))


def _mp3(x: np.ndarray) -> bytes:
    """Encode ``x: [2, N] float32`` at 44.1 kHz as MP3 (libsndfile + LAME, VBR)."""
    import soundfile as sf

    buf = _io.BytesIO()
    sf.write(buf, np.ascontiguousarray(x.T), SAMPLE_RATE, format="MP3", **MP3_OPTIONS)
    return buf.getvalue()


def _undecodable(seed_seq: list[int]) -> bytes:
    """Random bytes that libsndfile refuses to open (re-drawn, deterministically, if it would)."""
    import soundfile as sf

    for attempt in range(100):
        r = np.random.default_rng(seed_seq + [attempt])
        data = r.bytes(int(r.integers(40_000, 90_000)))
        try:
            sf.info(_io.BytesIO(data))
        except Exception:
            return data
    raise RuntimeError("could not draw undecodable bytes")  # pragma: no cover


def track_bytes(t: Track, seed: int) -> bytes:
    """The .mp3 file content of ``t``, defects applied."""
    if t.defect == "corrupt":
        return _undecodable([seed, t.num])
    if t.defect == "silent":
        return _mp3(np.zeros((2, int(round(t.spec.seconds * SAMPLE_RATE))), dtype=np.float32))
    data = _mp3(synth.render(t.spec))
    if t.defect == "truncated":
        return data[: int(len(data) * 0.4)]
    return data


def _tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """A byte-identical-for-same-input tar of plain relative members (no dirs, links, abs paths)."""
    buf = _io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, _io.BytesIO(data))
    return buf.getvalue()


def _licence_record(t: Track) -> str:
    head = f"{t.path}\n{t.title} by {t.artist_name} from Jamendo: http://www.jamendo.com/track/{t.num}\n"
    code, ver = t.licence or ("by-nc-sa", "3.0")
    words = "-".join(_WORDS[p] for p in code.split("-"))
    if ver == "4.0":
        words = words.replace("NoDerivs", "NoDerivatives")  # CC 4.0 renamed the ND element
    lead = f"Available under a Creative Commons {words} license: "
    if "licence_missing_line" in t.planted:
        return head + "\n"
    if "licence_garbled_url" in t.planted:
        return head + lead + f"http://creativecomons.org/lic?{code}%3{ver}\n\n"  # typo host, no path
    if "licence_unknown" in t.planted:
        return head + ("Available under a Creative Commons Public Domain Dedication license: "
                       "http://creativecommons.org/publicdomain/zero/1.0/\n\n")
    return head + lead + f"http://creativecommons.org/licenses/{code}/{ver}/\n\n"


def _tsv_row(t: Track) -> str:
    head = f"{t.track_id}\tartist_{t.artist:06d}\talbum_{t.album:06d}\t{t.path}"
    tags = "\t".join(t.spec.tags)
    if "tsv_too_few_fields" in t.planted:
        return head
    if "tsv_empty_duration" in t.planted:
        return f"{head}\t\t{tags}"
    if "tsv_bad_duration" in t.planted:
        return f"{head}\tunknown\t{tags}"
    return f"{head}\t{t.tsv_duration:.1f}\t{tags}"


def _caption(t: Track, variant: int) -> str:
    s = t.spec
    speed = "slow" if s.bpm < 95 else "fast" if s.bpm >= 125 else "moderate"
    inst = [i for i in s.instruments if i != "drums"]
    kit = "with drums" if s.drums else "without drums"
    if variant == 0:
        return (f"A {s.mood} {s.genre} instrumental in {s.key} {s.mode} at a {speed} tempo, "
                f"featuring {', '.join(inst)}, {kit}.")
    return f"{s.genre.capitalize()} piece, {', '.join(inst)} {kit}; feels {s.mood}, around {s.bpm} bpm, no vocals."


def _song_describer(tracks: list[Track], rng: np.random.Generator) -> str:
    """Song Describer csv: captions for the ``song_describer`` demo tracks plus 3 tracks not in the demo."""
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["caption_id", "track_id", "caption", "is_valid_subset", "familiarity", "artist_id", "album_id",
                "path", "duration"])
    cid = int(rng.integers(1000, 5000))
    overlap = [t for t in tracks if "song_describer" in t.planted]
    for j, t in enumerate(overlap):
        for v in range(2 if j % 2 == 0 else 1):  # some tracks carry two captions
            cid += int(rng.integers(1, 40))
            w.writerow([cid, t.num, _caption(t, v), bool(v == 0), int(rng.integers(0, 3)), t.artist, t.album,
                        f"{t.shard}/{t.num}.2min.mp3", min(120.0, t.tsv_duration)])
    demo = {t.num for t in tracks}
    for k in range(3):
        num = int(rng.integers(14_000, 15_000)) * 100 + 50 + k  # outside every demo shard's id range
        assert num not in demo
        cid += int(rng.integers(1, 40))
        w.writerow([cid, num, _OTHER_CAPTIONS[k], True, 1,
                    int(rng.integers(1, 600_000)), int(rng.integers(1, 400_000)), f"{num % 100:02d}/{num}.2min.mp3",
                    120.0])
    return buf.getvalue()


# The demo's "external model" (config systems, kind external): for every Song Describer caption of a
# demo track, a new rendering of what the caption describes (same genre, tempo, key, mode, drums and
# instruments; another seed, so other notes), named by the prompt id the prompt set gives that caption.
# Scored like any other system, it shows what a model that follows every caption would reach.
ORACLE_DIR = "external/caption_oracle"
ORACLE_SECONDS = 5.0
ORACLE_SEED_OFFSET = 7919


def caption_oracle(tracks: list[Track], song_describer_csv: str) -> dict[str, bytes]:
    """relative path -> FLAC bytes (44.1 kHz stereo, ``ORACLE_SECONDS``) of each demo caption's rendering."""
    import dataclasses

    import soundfile as sf

    by_num = {t.num: t for t in tracks}
    out = {}
    for row in csv.DictReader(_io.StringIO(song_describer_csv)):
        t = by_num.get(int(row["track_id"]))
        if t is None:
            continue
        spec = dataclasses.replace(t.spec, seed=t.spec.seed + ORACLE_SEED_OFFSET, seconds=ORACLE_SECONDS)
        buf = _io.BytesIO()
        sf.write(buf, np.ascontiguousarray(synth.render(spec).T), SAMPLE_RATE, format="FLAC")
        out[f"{ORACLE_DIR}/sdd_{row['caption_id']}.flac"] = buf.getvalue()
    return out


def _truth_row(t: Track) -> list[str]:
    s = t.spec
    seconds = 0.0 if t.defect == "corrupt" else s.seconds
    lic = f"{t.licence[0]}/{t.licence[1]}" if t.licence and not ({"licence_absent", "licence_missing_line",
                                                                    "licence_garbled_url", "licence_unknown"}
                                                                   & set(t.planted)) else ""
    expect = "keep" if not t.defect and not t.planted else "reject"
    return [t.track_id, str(s.bpm), s.key, s.mode, str(int(s.drums)), ";".join(s.instruments), s.genre, s.mood,
            f"{seconds:.1f}", t.defect, t.path, f"{t.tsv_duration:.1f}", lic, ";".join(t.planted), expect]


def build(out_dir: Path, n_tracks: int = 64, n_shards: int = 5, missing_shards: tuple[str, ...] = ("04",),
          seed: int = 0, *, seconds: tuple[float, float] = (35.0, 90.0), jobs: int = 1) -> dict:
    """Write the demo mirror's corpus under ``out_dir``; return a JSON-able summary.

    ``seconds`` bounds the good tracks' lengths (default 35-90 s; at least MIN_GOOD_SECONDS); ``jobs``
    threads render and encode tracks in parallel (the output is byte-identical for any ``jobs``).
    Summary keys: ``seed n_tracks n_shards missing_shards tracks shards files defects planted
    licences`` (``files``: relative path -> sha256 of every file written).
    """
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    missing_shards = tuple(missing_shards)
    tracks = plan(n_tracks, n_shards, missing_shards, seed, seconds)
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:  # libsndfile/numpy release the GIL
        data = dict(zip((t.num for t in tracks), pool.map(lambda t: track_bytes(t, seed), tracks)))
    t_audio = time.perf_counter() - t0
    digest = {t.num: hashlib.sha256(data[t.num]).hexdigest() for t in tracks}
    files: dict[str, str] = {}

    def put(rel: str, payload: bytes | str) -> None:
        raw = payload.encode("utf-8") if isinstance(payload, str) else payload
        with io.atomic_open(out_dir / rel, "wb") as f:
            f.write(raw)
        files[rel] = hashlib.sha256(raw).hexdigest()

    by_path = sorted(tracks, key=lambda t: (t.shard, t.num))
    shards, tar_lines = {}, []
    for s in (f"{i:02d}" for i in range(n_shards)):
        members = [(t.path, data[t.num]) for t in by_path if t.shard == s]
        blob = _tar_bytes(members)
        name = f"raw_30s_audio-{s}.tar"
        sha = hashlib.sha256(blob).hexdigest()
        tar_lines.append(f"{sha} {name}")
        if s not in missing_shards:
            put(f"raw_30s/audio/{name}", blob)
        shards[s] = {"tar": name, "sha256": sha, "tracks": len(members), "missing": s in missing_shards}
    track_lines = []
    for t in by_path:
        sha = digest[t.num]
        if "sha256_wrong" in t.planted:  # the listed hash of a "corrupted download"
            sha = hashlib.sha256(b"ssmttm demo: deliberately wrong hash for " + t.path.encode()).hexdigest()
        track_lines.append(f"{sha} {t.path}")
    by_num = sorted(tracks, key=lambda t: t.num)
    md = "metadata/"
    put(md + "raw_30s_cleantags.tsv",
        "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n" + "".join(_tsv_row(t) + "\n" for t in by_num))
    put(md + "raw.meta.tsv", "TRACK_ID\tARTIST_ID\tALBUM_ID\tTRACK_NAME\tARTIST_NAME\tALBUM_NAME\tRELEASEDATE\tURL\n"
        + "".join(f"{t.track_id}\tartist_{t.artist:06d}\talbum_{t.album:06d}\t{t.title}\t{t.artist_name}\t"
                  f"{t.album_name}\t{t.release}\thttps://www.jamendo.com/track/{t.num}\n" for t in by_num))
    put(md + "audio_licenses.txt", "".join(_licence_record(t) for t in by_path if "licence_absent" not in t.planted))
    put(md + "raw_30s_audio_sha256_tars.txt", "".join(x + "\n" for x in tar_lines))
    put(md + "raw_30s_audio_sha256_tracks.txt", "".join(x + "\n" for x in track_lines))
    sdd = _song_describer(tracks, np.random.default_rng([seed, 7]))
    put(md + "song_describer.csv", sdd)
    for rel, blob in caption_oracle(tracks, sdd).items():
        put(rel, blob)
    put(md + "demo_truth.tsv", "\t".join(TRUTH_COLUMNS) + "\n"
        + "".join("\t".join(_truth_row(t)) + "\n" for t in by_num))
    licences = {c: sum(1 for t in tracks if _truth_row(t)[12].startswith(c + "/")) for c in CC_CODES}
    planted: dict[str, list[str]] = {}
    for t in by_num:
        for p in t.planted:
            planted.setdefault(p, []).append(t.track_id)
    log.info("demo corpus: %d tracks, %d tars (%d missing) in %.1f s (audio %.1f s, %d jobs)", len(tracks),
             n_shards - len(missing_shards), len(missing_shards), time.perf_counter() - t0, t_audio, jobs)
    return {
        "seed": seed, "n_tracks": len(tracks), "n_shards": n_shards, "missing_shards": list(missing_shards),
        "tracks": [t.track_id for t in by_num], "shards": shards, "files": files,
        "defects": {t.defect: t.track_id for t in by_num if t.defect},
        "planted": planted, "licences": licences,
    }


def main(argv: list[str]) -> int:
    """``python -m ssmttm demo-corpus --out-dir DIR [--n-tracks N --n-shards S --missing-shards 04 --seed 0]``."""
    from ssmttm import logs

    p = argparse.ArgumentParser(prog="ssmttm demo-corpus", description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--n-tracks", type=int, default=64)
    p.add_argument("--n-shards", type=int, default=5)
    p.add_argument("--missing-shards", nargs="*", default=["04"], help="shard ids whose tar is left out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-seconds", type=float, default=35.0, help=f"shortest good track (>= {MIN_GOOD_SECONDS:g})")
    p.add_argument("--max-seconds", type=float, default=90.0, help="longest good track")
    p.add_argument("--jobs", type=int, default=1, help="threads for rendering and MP3 encoding")
    a = p.parse_args(argv)
    logs.setup()
    try:
        summary = build(a.out_dir, a.n_tracks, a.n_shards, tuple(a.missing_shards), a.seed,
                        seconds=(a.min_seconds, a.max_seconds), jobs=a.jobs)
    except ValueError as exc:
        print(f"demo-corpus: {exc}", file=sys.stderr)
        return 2
    json.dump({k: v for k, v in summary.items() if k != "tracks"}, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0
