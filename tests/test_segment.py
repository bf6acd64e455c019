"""Segment stage: a tiny shard built in code, every rejection path, and the clip windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ssmttm import settings
from ssmttm.data import segment as seg

SR = 44_100
CLIP = 2.0
N_CLIP = int(CLIP * SR)


def _cfg(**keys) -> seg.SegmentSettings:
    """The stage's settings: schema defaults, then ``keys`` (config keys of segment, filter, segment.checks)."""
    return settings.resolve(seg.SegmentSettings, keys)


def _music(seconds: float, sr: int = SR, channels: int = 2, seed: int = 0) -> np.ndarray:
    """A loud, non-periodic test signal ``[N, C]`` so a wrong offset shows in the samples."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    base = 0.3 * np.sin(2 * np.pi * (220 + 40 * t) * t)
    x = np.stack([base + 0.05 * rng.standard_normal(len(t)) for _ in range(channels)], axis=1)
    return x.astype(np.float32)


def _tsv(path: Path, rows: list[dict]) -> None:
    cols = ["track_id", "track_num", "shard", "path", "seconds", "licence", "n_clips_planned"]
    pd.DataFrame(rows, columns=cols).to_csv(path, sep="\t", index=False)


def _cand(num: int, ext: str, seconds: float) -> dict:
    shard = f"{num % 100:02d}"
    return {"track_id": f"track_{num:07d}", "track_num": num, "shard": shard,
            "path": f"{shard}/{num}.{ext}", "seconds": seconds, "licence": "by", "n_clips_planned": 1}


@pytest.fixture()
def shard(tmp_path):
    """Shard 07 with good, corrupt, truncated, silent, short and fetch-rejected tracks."""
    audio = tmp_path / "audio"
    d = audio / "07"
    d.mkdir(parents=True)
    sf.write(d / "107.mp3", _music(5.0, seed=1), SR, format="MP3")            # good MP3
    sf.write(d / "207.flac", _music(5.0, 48_000, 1, seed=2), 48_000)           # good, mono, 48 kHz
    (d / "307.mp3").write_bytes(b"\x00not an mp3\xff" * 300)                    # corrupt
    sf.write(d / "407.mp3", _music(8.0, seed=4), SR, format="MP3")
    data = (d / "407.mp3").read_bytes()
    (d / "407.mp3").write_bytes(data[: len(data) // 2])                         # truncated to ~4 s
    sf.write(d / "507.mp3", np.zeros((5 * SR, 2), np.float32), SR, format="MP3")  # silent
    sf.write(d / "607.mp3", _music(1.5, seed=6), SR, format="MP3")             # too short
    sf.write(d / "707.mp3", _music(5.0, seed=7), SR, format="MP3")             # bad hash at fetch
    cands = [_cand(107, "mp3", 5.0), _cand(207, "flac", 5.0), _cand(307, "mp3", 5.0),
             _cand(407, "mp3", 8.0), _cand(507, "mp3", 5.0), _cand(607, "mp3", 1.5),
             _cand(707, "mp3", 5.0), _cand(807, "mp3", 5.0), _cand(108, "mp3", 5.0)]
    _tsv(tmp_path / "candidates.tsv", cands)
    tracks = {c["path"]: "ok" for c in cands if c["track_num"] not in (707, 807)}
    tracks["07/707.mp3"] = "sha256 mismatch (expected abc, got def)"
    receipt = {"shard": "07", "status": "ok", "reason": "", "tracks": tracks}
    (tmp_path / "07.json").write_text(json.dumps(receipt))
    return tmp_path


def _run(root: Path, cfg: seg.SegmentSettings, shard="07", receipt="07.json", cands="candidates.tsv"):
    return seg.segment_shard(shard, root / cands, root / receipt, root / "audio",
                             root / "clips" / shard, root / "clips" / f"{shard}.tsv", cfg)


def test_shard_rejections_and_clips(shard):
    df = _run(shard, _cfg(clip_seconds=CLIP, position="center"))
    back = pd.read_csv(shard / "clips" / "07.tsv", sep="\t", dtype={"shard": str, "clip_id": str})
    assert list(back.columns) == seg.COLUMNS
    assert len(back) == len(df) == 8  # 108 belongs to shard 08
    by = {int(r.track_num): r for r in back.itertuples()}
    assert by[107].status == "ok" and by[207].status == "ok"
    assert by[307].status == "rejected" and by[307].reason.startswith("corrupt:")
    assert by[407].reason.startswith("truncated: decoded") and "of the 8.0 s its header declares" in by[407].reason and "407.mp3" in by[407].reason
    assert by[507].reason.startswith("silent: ") and "507.mp3" in by[507].reason and by[507].stage == "segment"
    assert by[607].reason.startswith("too short after decoding: 1.5 s < 2 s clip") and "607.mp3" in by[607].reason
    assert by[707].stage == "fetch" and "sha256 mismatch" in by[707].reason
    assert by[807].stage == "fetch" and "not in the fetch receipt" in by[807].reason
    for num in (307, 407, 507, 607, 707, 807):
        assert pd.isna(by[num].clip_id) and pd.isna(by[num].clip_path)
    assert set(back["shard"]) == {"07"}
    files = sorted(p.name for p in (shard / "clips" / "07").iterdir())
    assert files == ["107_000.flac", "207_000.flac"]
    for num in (107, 207):
        x, sr = sf.read(by[num].clip_path, always_2d=True)
        assert sr == SR and x.shape == (N_CLIP, 2)
        assert by[num].offset == pytest.approx(1.5, abs=1e-4)  # (5 s - 2 s) / 2
        assert by[num].clip_id == f"{num}_000"
    mono = sf.read(by[207].clip_path)[0]
    np.testing.assert_allclose(mono[:, 0], mono[:, 1])  # mono source duplicated to stereo


@pytest.mark.parametrize("position", ["start", "center", "random", "all"])
def test_positions_cut_the_right_samples(tmp_path, position):
    d = tmp_path / "audio" / "03"
    d.mkdir(parents=True)
    src = _music(7.0, seed=3)
    sf.write(d / "103.flac", src, SR, subtype="PCM_24")
    _tsv(tmp_path / "candidates.tsv", [_cand(103, "flac", 7.0)])
    (tmp_path / "03.json").write_text(json.dumps(
        {"shard": "03", "status": "ok", "reason": "", "tracks": {"03/103.flac": "ok"}}))
    df = _run(tmp_path, _cfg(clip_seconds=CLIP, position=position, seed=5), shard="03",
              receipt="03.json")
    assert (df["status"] == "ok").all()
    expect = {"start": [0.0], "center": [2.5], "all": [0.0, 2.0, 4.0]}.get(position)
    if expect is None:  # random: deterministic from (seed, track_num)
        rng = np.random.default_rng([5, 103])
        expect = [int(rng.integers(0, 7 * SR - N_CLIP + 1)) / SR]
    assert list(df["offset"]) == pytest.approx(expect, abs=1e-6)
    assert list(df["clip_id"]) == [f"103_{k:03d}" for k in range(len(expect))]
    for off, path in zip(df["offset"], df["clip_path"]):
        x = sf.read(path, always_2d=True)[0]
        s = int(round(off * SR))
        assert x.shape == (N_CLIP, 2)
        np.testing.assert_allclose(x, src[s:s + N_CLIP], atol=1e-4)


def test_random_offset_independent_of_order_and_shard(tmp_path):
    d = tmp_path / "audio" / "01"
    d.mkdir(parents=True)
    for n in (101, 201, 301):
        sf.write(d / f"{n}.flac", _music(10.0, seed=n), SR)
    cands = [_cand(n, "flac", 10.0) for n in (101, 201, 301)]
    _tsv(tmp_path / "all.tsv", cands)
    _tsv(tmp_path / "rev.tsv", cands[::-1])
    _tsv(tmp_path / "one.tsv", cands[1:2])
    (tmp_path / "01.json").write_text(json.dumps(
        {"shard": "01", "status": "ok", "reason": "", "tracks": {c["path"]: "ok" for c in cands}}))
    cfg = _cfg(clip_seconds=CLIP, position="random", seed=0)
    runs = [_run(tmp_path, cfg, "01", "01.json", c).set_index("track_num")["offset"]
            for c in ("all.tsv", "rev.tsv", "one.tsv")]
    assert runs[0].to_dict() == runs[1].to_dict()
    assert runs[2][201] == runs[0][201]
    assert len(set(runs[0].tolist())) == 3  # different tracks get different windows
    other = _run(tmp_path, _cfg(clip_seconds=CLIP, position="random", seed=1),
                 "01", "01.json", "all.tsv").set_index("track_num")["offset"]
    assert other.to_dict() != runs[0].to_dict()


def test_all_mode_rejects_a_silent_window_only(tmp_path):
    d = tmp_path / "audio" / "02"
    d.mkdir(parents=True)
    x = _music(6.0, seed=2)
    x[2 * SR:4 * SR] = 0.0
    sf.write(d / "102.flac", x, SR)
    _tsv(tmp_path / "c.tsv", [_cand(102, "flac", 6.0)])
    (tmp_path / "02.json").write_text(json.dumps(
        {"shard": "02", "status": "ok", "reason": "", "tracks": {"02/102.flac": "ok"}}))
    df = _run(tmp_path, _cfg(clip_seconds=CLIP, position="all"), "02", "02.json", "c.tsv")
    assert list(df["status"]) == ["ok", "rejected", "ok"]
    assert df["reason"][1].startswith("silent clip: ") and "102_001" in df["reason"][1]
    assert sorted(p.name for p in (tmp_path / "clips" / "02").iterdir()) == ["102_000.flac", "102_002.flac"]


def test_missing_tar_and_empty_shard_give_valid_tables(shard):
    (shard / "missing.json").write_text(json.dumps(
        {"shard": "07", "status": "missing", "reason": "tar not on the mirror", "tracks": {}}))
    df = _run(shard, _cfg(clip_seconds=CLIP), receipt="missing.json")
    assert len(df) == 8 and (df["status"] == "rejected").all() and (df["stage"] == "fetch").all()
    assert df["reason"].str.contains("tar not on the mirror").all()
    assert list((shard / "clips" / "07").iterdir()) == []
    (shard / "09.json").write_text(json.dumps({"shard": "09", "status": "ok", "reason": "", "tracks": {}}))
    rc = seg.main(["--shard", "09", "--candidates", str(shard / "candidates.tsv"),
                   "--receipt", str(shard / "09.json"), "--audio-dir", str(shard / "audio"),
                   "--clip-seconds", "2", "--out-dir", str(shard / "clips" / "09"),
                   "--table", str(shard / "clips" / "09.tsv")])
    assert rc == 0
    assert (shard / "clips" / "09.tsv").read_text().strip() == "\t".join(seg.COLUMNS)
    assert (shard / "clips" / "09").is_dir() and not any((shard / "clips" / "09").iterdir())


def test_rerun_removes_stale_clips_and_bad_flags_fail(shard):
    out = shard / "clips" / "07"
    out.mkdir(parents=True)
    (out / "999_000.flac").write_bytes(b"old")
    (out / "notes.txt").write_text("not ours")
    _run(shard, _cfg(clip_seconds=CLIP))
    assert not (out / "999_000.flac").exists() and (out / "notes.txt").exists()
    with pytest.raises(SystemExit):
        seg.main(["--shard", "07", "--candidates", str(shard / "candidates.tsv"), "--receipt",
                  str(shard / "07.json"), "--audio-dir", "a", "--clip-seconds", "-1",
                  "--out-dir", "o", "--table", "t.tsv"])


def test_clip_starts_edges():
    assert seg.clip_starts(99, 100, "center", 0, 1) == []
    assert seg.clip_starts(100, 100, "random", 0, 1) == [0]
    assert seg.clip_starts(350, 100, "all", 0, 1) == [0, 100, 200]
    assert seg.clip_starts(351, 100, "center", 0, 1) == [125]


def test_header_longer_than_audio_replans_window(tmp_path):
    """An MP3 cut to 95 %: the header still says 8 s; the window must come from the decoded length."""
    d = tmp_path / "audio" / "04"
    d.mkdir(parents=True)
    sf.write(d / "104.mp3", _music(8.0, seed=4), SR, format="MP3")
    data = (d / "104.mp3").read_bytes()
    (d / "104.mp3").write_bytes(data[: int(len(data) * 0.95)])
    assert sf.info(str(d / "104.mp3")).frames == 8 * SR  # the header lies
    decoded = sf.read(str(d / "104.mp3"), dtype="float32")[0]
    _tsv(tmp_path / "c.tsv", [_cand(104, "mp3", 8.0)])
    (tmp_path / "04.json").write_text(json.dumps(
        {"shard": "04", "status": "ok", "reason": "", "tracks": {"04/104.mp3": "ok"}}))
    df = _run(tmp_path, _cfg(clip_seconds=CLIP, position="center"), "04", "04.json", "c.tsv")
    assert list(df["status"]) == ["ok"]
    start = (len(decoded) - N_CLIP) // 2
    assert df["offset"][0] == pytest.approx(start / SR, abs=1e-6)
    x = sf.read(df["clip_path"][0], dtype="float32")[0]
    np.testing.assert_allclose(x, decoded[start:start + N_CLIP], atol=1e-4)
