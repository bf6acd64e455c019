"""The synthetic MTG-Jamendo mirror: determinism, exact layout, formats, planted defects, tags vs audio.

Everything is parsed here with small independent code (no other stage's parser), so a format
drift in the generator is caught even if a stage parser drifts the same way.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import tarfile

import numpy as np
import pytest
import soundfile as sf

from ssmttm.constants import CC_CODES
from ssmttm.demo import corpus, synth

SMALL = dict(n_tracks=12, n_shards=5, missing_shards=("04",), seconds=(15.0, 17.0))  # the demo config's shortest tracks
LIC_RE = re.compile(r"Available under a Creative Commons ([A-Za-z-]+) license: "
                    r"http://creativecommons\.org/licenses/(by(?:-nc)?(?:-sa|-nd)?)/(2\.5|3\.0|4\.0)/")
TITLE_RE = re.compile(r"(.+) by (.+) from Jamendo: http://www\.jamendo\.com/track/(\d+)")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    summary = corpus.build(out, seed=0, jobs=2, **SMALL)
    return out, summary


def _truth(out) -> list[dict]:
    with open(out / "metadata/demo_truth.tsv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _members(out) -> dict[str, bytes]:
    """Every member of every written tar, read in memory (nothing extracted to disk)."""
    got = {}
    for tar_path in sorted((out / "raw_30s/audio").glob("raw_30s_audio-*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                assert m.isfile(), f"{tar_path.name}: non-file member {m.name}"
                got[m.name] = tar.extractfile(m).read()
    return got


def _track_list(out) -> dict[str, str]:
    """raw_30s_audio_sha256_tracks.txt as {path: sha256}; every line is exactly '<64 hex> <path>'."""
    lines = (out / "metadata/raw_30s_audio_sha256_tracks.txt").read_text().splitlines()
    assert all(re.fullmatch(r"[0-9a-f]{64} \d{2}/\d+\.mp3", ln) for ln in lines)
    return {ln.split(" ")[1]: ln.split(" ")[0] for ln in lines}


def _cleantags(out):
    """Strict TSV parse: ({track_id: (path, duration, tags)}, [(track_id, reason)])."""
    good, bad = {}, []
    lines = (out / "metadata/raw_30s_cleantags.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"
    for line in lines[1:]:
        f = line.split("\t")
        if len(f) < 6:
            bad.append((f[0], "too few fields"))
            continue
        if not re.fullmatch(r"\d+\.\d", f[4]):
            bad.append((f[0], f"bad duration {f[4]!r}"))
            continue
        assert re.fullmatch(r"track_\d{7}", f[0]) and re.fullmatch(r"artist_\d{6}", f[1]), line
        assert re.fullmatch(r"album_\d{6}", f[2]), line
        num = int(f[0][6:])
        assert f[3] == f"{num % 100:02d}/{num}.mp3", line
        for tag in f[5:]:
            assert re.fullmatch(r"(genre|instrument|mood/theme)---[a-z]+", tag), tag
        good[f[0]] = (f[3], float(f[4]), f[5:])
    return good, bad


def _licences(out):
    """Strict 4-line record parse: ({path: (code, version)}, [(path, reason)]), resyncing on blanks."""
    lines = (out / "metadata/audio_licenses.txt").read_text(encoding="utf-8").split("\n")
    ok, errors, i = {}, [], 0
    while i < len(lines):
        if not lines[i]:
            i += 1
            continue
        block = []
        while i < len(lines) and lines[i]:
            block.append(lines[i])
            i += 1
        path = block[0]
        assert re.fullmatch(r"\d{2}/\d+\.mp3", path), path
        if len(block) != 3:
            errors.append((path, f"{len(block)} lines"))
            continue
        t, m = TITLE_RE.fullmatch(block[1]), LIC_RE.fullmatch(block[2])
        if not t or int(t.group(3)) != int(path.split("/")[1][:-4]):
            errors.append((path, "title line"))
        elif not m:
            errors.append((path, "licence line"))
        else:
            ok[path] = (m.group(2), m.group(3))
    return ok, errors


def test_caption_oracle_clips_are_named_by_prompt_id_and_follow_their_caption(demo):
    """The demo's external system: one 5 s rendering per Song Describer caption of a demo track, named
    sdd_<caption_id> (the prompt set's ids), at its track's tempo."""
    out, summary = demo
    truth = {int(r["track_id"][6:]): r for r in _truth(out)}
    with open(out / "metadata/song_describer.csv", encoding="utf-8", newline="") as f:
        sdd = [r for r in csv.DictReader(f) if int(r["track_id"]) in truth]
    folder = out / corpus.ORACLE_DIR
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"sdd_{r['caption_id']}.flac" for r in sdd)
    for r in sdd:
        x, sr = _decode((folder / f"sdd_{r['caption_id']}.flac").read_bytes())
        assert sr == 44100 and x.shape == (2, int(corpus.ORACLE_SECONDS * sr)) and np.abs(x).max() > 0.01
        assert f"{corpus.ORACLE_DIR}/sdd_{r['caption_id']}.flac" in summary["files"]


def _decode(data: bytes):
    x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return x.T, sr


def _tempo(x: np.ndarray, sr: int) -> float:
    """Tempo by autocorrelation of band-wise spectral flux (hop 512), 60-200 bpm, prior at 120 bpm."""
    m, hop, nfft = x.mean(0), 512, 2048
    frames = 1 + (m.size - nfft) // hop
    idx = np.arange(nfft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(m[idx] * np.hanning(nfft), axis=1))
    band = np.digitize(np.fft.rfftfreq(nfft, 1 / sr), np.geomspace(30, 16000, 41))
    bands = np.stack([spec[:, band == b].sum(1) for b in range(1, 41)], 1)
    flux = np.maximum(0, np.diff(np.log1p(100 * bands), axis=0))
    g = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    ac = 0.0
    for grp in (flux[:, :12], flux[:, 12:26], flux[:, 26:]):  # low / mid / high separately
        e = np.convolve(grp.sum(1), g / g.sum(), "same")
        e -= e.mean()
        ac = ac + np.fft.irfft(np.abs(np.fft.rfft(e, 2 * e.size)) ** 2)[: e.size]
    lags = np.arange(1, ac.size)
    bpm = 60 * sr / hop / lags
    score = np.where((bpm >= 60) & (bpm <= 200), ac[1:] * np.exp(-0.5 * np.log2(bpm / 120) ** 2), -np.inf)
    return float(bpm[np.argmax(score)])


def test_same_seed_is_byte_identical_and_other_seed_differs(demo, tmp_path):
    out, summary = demo
    again = corpus.build(tmp_path / "again", seed=0, jobs=1, **SMALL)  # also: jobs does not change bytes
    assert again["files"] == summary["files"]
    assert {s: v["sha256"] for s, v in again["shards"].items()} == {
        s: v["sha256"] for s, v in summary["shards"].items()}
    other = corpus.build(tmp_path / "other", seed=1, jobs=2, **SMALL)
    assert all(other["shards"][s]["sha256"] != summary["shards"][s]["sha256"] for s in summary["shards"])


def test_tar_layout_and_missing_shard(demo):
    out, summary = demo
    tars = sorted(p.name for p in (out / "raw_30s/audio").iterdir())
    assert tars == [f"raw_30s_audio-{s:02d}.tar" for s in range(4)]  # 04 is the simulated outage
    for tar_path in (out / "raw_30s/audio").iterdir():
        shard = tar_path.stem[-2:]
        with tarfile.open(tar_path) as tar:
            names = tar.getnames()
        assert names, tar_path
        for name in names:
            assert not name.startswith("/") and ".." not in name.split("/"), name
            m = re.fullmatch(r"(\d{2})/(\d{4,7})\.mp3", name)
            assert m and m.group(1) == shard and int(m.group(2)) % 100 == int(shard), name
    truth = _truth(out)
    missing = [r for r in truth if "shard_missing" in r["planted"]]
    assert 2 <= len(missing) <= 3 and all(r["path"].startswith("04/") for r in missing)


def test_sha256_lists_match_except_the_planted_wrong_one(demo):
    out, _ = demo
    tar_lines = (out / "metadata/raw_30s_audio_sha256_tars.txt").read_text().splitlines()
    assert [ln.split(" ")[1] for ln in tar_lines] == [f"raw_30s_audio-{s:02d}.tar" for s in range(5)]
    for ln in tar_lines:
        sha, name = ln.split(" ")
        p = out / "raw_30s/audio" / name
        if p.exists():
            assert hashlib.sha256(p.read_bytes()).hexdigest() == sha, name
    members = _members(out)
    listed = _track_list(out)
    assert set(members) <= set(listed) and len(listed) == 12
    wrong = [p for p, data in members.items() if hashlib.sha256(data).hexdigest() != listed[p]]
    planted = [r["path"] for r in _truth(out) if "sha256_wrong" in r["planted"]]
    assert wrong == planted and len(wrong) == 1


def test_cleantags_meta_and_song_describer_formats(demo):
    out, _ = demo
    truth = {r["track_id"]: r for r in _truth(out)}
    good, bad = _cleantags(out)
    assert len(good) + len(bad) == 12
    planted_bad = {t for t, r in truth.items() if "tsv_" in r["planted"]}
    assert {t for t, _ in bad} == planted_bad and len(bad) == 3
    for tid, (path, dur, tags) in good.items():
        r = truth[tid]
        assert path == r["path"] and dur == float(r["tsv_duration"])
        assert f"genre---{r['genre']}" in tags and f"mood/theme---{r['mood']}" in tags
        assert sorted(t.split("---")[1] for t in tags if t.startswith("instrument---")) == r["instruments"].split(";")
        assert ("instrument---drums" in tags) == (r["drums"] == "1")
    meta = (out / "metadata/raw.meta.tsv").read_text(encoding="utf-8").splitlines()
    assert meta[0].split("\t") == ["TRACK_ID", "ARTIST_ID", "ALBUM_ID", "TRACK_NAME", "ARTIST_NAME", "ALBUM_NAME",
                                   "RELEASEDATE", "URL"]
    rows = [ln.split("\t") for ln in meta[1:]]
    assert {r[0] for r in rows} == set(truth) and all(len(r) == 8 for r in rows)
    for r in rows:
        assert r[7] == f"https://www.jamendo.com/track/{int(r[0][6:])}" and re.fullmatch(r"\d{4}-\d\d-\d\d", r[6])
    with open(out / "metadata/song_describer.csv", encoding="utf-8", newline="") as f:
        sdd = list(csv.DictReader(f))
    assert list(sdd[0]) == ["caption_id", "track_id", "caption", "is_valid_subset", "familiarity", "artist_id",
                            "album_id", "path", "duration"]
    demo_nums = {int(t[6:]) for t in truth}
    in_demo = [int(r["track_id"]) for r in sdd if int(r["track_id"]) in demo_nums]
    assert len(set(in_demo)) == 4 and len(in_demo) > 4  # some overlapping tracks carry two captions
    assert {f"track_{n:07d}" for n in in_demo} == {t for t, r in truth.items() if "song_describer" in r["planted"]}
    assert len({r["track_id"] for r in sdd} - {str(n) for n in demo_nums}) == 3
    assert len({r["caption_id"] for r in sdd}) == len(sdd)


def test_licence_file_strict_parse(demo):
    out, _ = demo
    truth = _truth(out)
    ok, errors = _licences(out)
    bad_planted = {r["path"] for r in truth if re.search(r"licence_(missing_line|garbled_url|unknown)", r["planted"])}
    assert {p for p, _ in errors} == bad_planted and len(errors) == 3
    absent = {r["path"] for r in truth if "licence_absent" in r["planted"]}
    assert len(absent) == 2 and not absent & (set(ok) | {p for p, _ in errors})
    assert {c for c, _ in ok.values()} == set(CC_CODES)  # every licence present even at 12 tracks
    for r in truth:
        if r["licence"]:
            assert ok[r["path"]] == tuple(r["licence"].split("/"))


def test_full_size_plan_mix_and_defects():
    tracks = corpus.plan(64, 5, ("04",), seed=0)  # metadata only: no audio rendered
    counts = {c: sum(1 for t in tracks if t.licence and t.licence[0] == c and not {
        "licence_absent", "licence_missing_line", "licence_garbled_url", "licence_unknown"} & set(t.planted))
        for c in CC_CODES}
    n = sum(counts.values())
    assert n == 64 - 5 and min(counts.values()) >= 3
    assert 0.6 <= sum(v for c, v in counts.items() if "nc" in c) / n <= 0.8
    assert 0.25 <= sum(v for c, v in counts.items() if "nd" in c) / n <= 0.45
    assert {t.licence[1] for t in tracks if t.licence} == {"2.5", "3.0", "4.0"}
    assert sorted(t.defect for t in tracks if t.defect) == sorted(corpus.DEFECTS)
    assert sum(1 for t in tracks if not t.defect) == 60
    assert sum(1 for t in tracks if not t.defect and not t.planted) >= 40  # plenty of clean tracks
    assert 0.5 <= np.mean([t.spec.drums for t in tracks]) <= 0.85
    assert len({t.num for t in tracks}) == 64 and all(t.num % 100 == int(t.shard) for t in tracks)


def test_planted_audio_defects(demo):
    out, _ = demo
    members = _members(out)
    good, _ = _cleantags(out)
    listed = _track_list(out)
    by_defect = {r["defect"]: r for r in _truth(out) if r["defect"]}
    assert set(by_defect) == set(corpus.DEFECTS)
    for r in by_defect.values():  # each passes the metadata stage and is in a written tar
        assert good[r["track_id"]][1] >= 35.0 and r["path"] in members and not r["planted"]
    with pytest.raises(Exception):
        sf.info(io.BytesIO(members[by_defect["corrupt"]["path"]]))
    trunc = by_defect["truncated"]
    data = members[trunc["path"]]
    assert hashlib.sha256(data).hexdigest() == listed[trunc["path"]]  # download check passes
    x, sr = _decode(data)
    assert x.shape[1] / sr < 0.6 * float(trunc["tsv_duration"])
    x, sr = _decode(members[by_defect["silent"]["path"]])
    assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) < 10 ** (-70 / 20)
    # as long as listed (SMALL's good tracks are shorter than that): rejected as silent, not as cut
    assert abs(x.shape[1] / sr - float(by_defect["silent"]["tsv_duration"])) < 0.5
    x, sr = _decode(members[by_defect["short"]["path"]])
    assert abs(x.shape[1] / sr - corpus.SHORT_SECONDS) < 0.5 and float(by_defect["short"]["tsv_duration"]) == 40.0


def test_good_audio_matches_tsv_and_tempo(demo):
    out, _ = demo
    members = _members(out)
    good, _ = _cleantags(out)
    tempo_checked = 0
    for r in _truth(out):
        if r["defect"] or r["path"] not in members:
            continue
        x, sr = _decode(members[r["path"]])
        assert sr == 44100 and x.shape[0] == 2
        assert 0.05 < np.abs(x).max() < 1.0  # audible, never clipping
        if r["track_id"] in good:
            assert abs(x.shape[1] / sr - good[r["track_id"]][1]) <= 0.5, r["track_id"]
        if r["drums"] == "1":
            est, bpm = _tempo(x, sr), float(r["bpm"])
            assert abs(est / bpm - 1) < 0.05 or abs(2 * est / bpm - 1) < 0.05, (r["track_id"], bpm, est)
            tempo_checked += 1
    assert tempo_checked >= 1


def test_synth_tags_follow_the_audio_rules():
    rng = np.random.default_rng(3)
    specs = [synth.random_spec(rng, 40.0, seed=i) for i in range(300)]
    for s in specs:
        assert s.mode in synth.MOODS[s.mood].modes
        lo, hi = synth.MOODS[s.mood].bpm
        assert lo <= s.bpm <= hi and 70 <= s.bpm <= 160
        assert s.drums == (s.genre in ("rock", "pop", "electronic", "jazz"))
        assert "drums" in s.instruments if s.drums else "drums" not in s.instruments
        assert set(s.instruments) <= {"piano", "organ", "guitar", "strings", "synthesizer", "bass", "drums"}
    assert {s.root for s in specs} == set(range(12)) and {s.genre for s in specs} == set(synth.GENRES)
    spec = synth.TrackSpec(seed=5, seconds=12.0, genre="rock", mood="happy", bpm=120, root=9, mode="major",
                           progression=(0, 4, 5, 3), chords="guitar", melody="lead", bass="bass", drums=True)
    x = synth.render(spec)
    assert x.shape == (2, 12 * 44100) and x.dtype == np.float32 and np.abs(x).max() < 1.0
    assert np.array_equal(x, synth.render(spec))
    assert abs(_tempo(x, 44100) / 120 - 1) < 0.05
    y = synth.render(synth.TrackSpec(**{**spec.__dict__, "seed": 6}))
    assert not np.array_equal(x, y)


def test_bad_arguments_fail_fast(tmp_path, capsys):
    with pytest.raises(ValueError, match="missing_shards"):
        corpus.plan(20, 4, ("04",), seed=0)
    with pytest.raises(ValueError, match="n_tracks"):
        corpus.plan(5, 5, ("04",), seed=0)
    assert corpus.main(["--out-dir", str(tmp_path / "x"), "--n-tracks", "5"]) == 2
    assert "n_tracks" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
