"""Source checks: content sniffing, >2 channels, low source rate and clipping, flagged or rejected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ssmttm import audio, settings
from ssmttm.config import load_schema
from ssmttm.data import segment as seg

SR = 44_100
CLIP = 2.0


def _music(seconds: float, sr: int = SR, channels: int = 2, gain: float = 1.0, seed: int = 0) -> np.ndarray:
    """``[N, C]`` float32: a swept sine plus noise at peak ~0.45 times ``gain``, hard-clipped to +-1."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    base = 0.3 * np.sin(2 * np.pi * (220 + 40 * t) * t)
    x = np.stack([base + 0.05 * rng.standard_normal(len(t)) for _ in range(channels)], axis=1)
    return np.clip(gain * x, -1.0, 1.0).astype(np.float32)


# --- sniffing --------------------------------------------------------------------------------------
def _id3(payload: bytes, size: int = 300, footer: bool = False) -> bytes:
    """An ID3v2.4 tag of ``size`` body bytes (syncsafe size) in front of ``payload``."""
    syncsafe = bytes((size >> s) & 0x7F for s in (21, 14, 7, 0))
    flags = 0x10 if footer else 0
    return b"ID3\x04\x00" + bytes([flags]) + syncsafe + b"\x00" * size + (b"3DI" + b"\x00" * 7 if footer else b"") + payload


def test_sniff_formats(tmp_path):
    x = _music(0.5)
    for fmt, ext in (("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3"), ("AIFF", "aiff")):
        sf.write(tmp_path / f"a.{ext}", x, SR, format=fmt)
        got = audio.sniff_format(tmp_path / f"a.{ext}")
        assert got == {"WAV": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3", "AIFF": "aiff"}[fmt]
        assert not audio.extension_mismatch(tmp_path / f"a.{ext}", got)
    mp3 = (tmp_path / "a.mp3").read_bytes()
    (tmp_path / "tagged.mp3").write_bytes(_id3(mp3))
    (tmp_path / "two_tags.mp3").write_bytes(_id3(_id3(b"\x00" * 37 + mp3, 20, footer=True)))
    (tmp_path / "tagged_flac.mp3").write_bytes(_id3((tmp_path / "a.flac").read_bytes()))
    (tmp_path / "junk.mp3").write_bytes(b"\x00not audio\x12" * 100)
    (tmp_path / "adts.mp3").write_bytes(b"\xff\xf1\x50\x80" + b"\x00" * 100)  # AAC ADTS, not MPEG audio
    assert audio.sniff_format(tmp_path / "tagged.mp3") == "mp3"
    assert audio.sniff_format(tmp_path / "two_tags.mp3") == "mp3"
    assert audio.sniff_format(tmp_path / "tagged_flac.mp3") == "flac"
    assert audio.sniff_format(tmp_path / "junk.mp3") == "unknown"
    assert audio.sniff_format(tmp_path / "adts.mp3") == "unknown"
    # An unidentified content is left to the decoder; a known one under the wrong name is a mismatch.
    assert not audio.extension_mismatch("x/1.mp3", "unknown")
    assert audio.extension_mismatch("x/1.mp3", "wav") and audio.extension_mismatch("x/1.MP3", "flac")
    assert not audio.extension_mismatch("x/1.MP3", "mp3") and audio.extension_mismatch("x/1", "mp3")
    with pytest.raises(audio.AudioError, match="nothere.mp3"):
        audio.sniff_format(tmp_path / "nothere.mp3")


def test_clipped_fraction():
    x = np.array([[0.0, 0.5, 0.9995, -1.0], [1.2, -0.3, 0.2, 0.1]], np.float32)
    assert audio.clipped_fraction(x, 0.999) == pytest.approx(3 / 8)
    assert audio.clipped_fraction(x, 1.0) == pytest.approx(2 / 8)
    assert audio.clipped_fraction(np.zeros((2, 0), np.float32), 0.999) == 0.0


# --- the segment stage -----------------------------------------------------------------------------
@pytest.fixture()
def shard(tmp_path):
    """Shard 05: a clean MP3 and FLAC, a WAV named .mp3, a 6-channel, an 8 kHz and a clipped track."""
    d = tmp_path / "audio" / "05"
    d.mkdir(parents=True)
    sf.write(d / "105.mp3", _music(5.0, seed=1), SR, format="MP3")             # clean
    sf.write(d / "205.flac", _music(5.0, seed=2), SR)                          # clean
    sf.write(d / "305.mp3", _music(5.0, seed=3), SR, format="WAV")             # WAV named .mp3
    sf.write(d / "405.flac", _music(5.0, channels=6, seed=4), SR)              # 5.1
    sf.write(d / "505.flac", _music(5.0, 8_000, 1, seed=5), 8_000)             # 8 kHz mono
    sf.write(d / "605.flac", _music(5.0, gain=4.0, seed=6), SR)                # hard-clipped
    cands = []
    for num, ext in ((105, "mp3"), (205, "flac"), (305, "mp3"), (405, "flac"), (505, "flac"), (605, "flac")):
        cands.append({"track_id": f"track_{num:07d}", "track_num": num, "shard": "05",
                      "path": f"05/{num}.{ext}", "seconds": 5.0, "licence": "by", "n_clips_planned": 1})
    pd.DataFrame(cands).to_csv(tmp_path / "candidates.tsv", sep="\t", index=False)
    (tmp_path / "05.json").write_text(json.dumps(
        {"shard": "05", "status": "ok", "reason": "", "tracks": {c["path"]: "ok" for c in cands}}))
    return tmp_path


def _run(root: Path, checks: dict, out="clips") -> dict[int, dict]:
    """Segment shard 05 with ``checks`` (segment.checks keys) over the schema defaults."""
    cfg = settings.resolve(seg.SegmentSettings, {"clip_seconds": CLIP, **checks})
    seg.segment_shard("05", root / "candidates.tsv", root / "05.json", root / "audio", root / out / "05",
                      root / out / "05.tsv", cfg)
    back = pd.read_csv(root / out / "05.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert list(back.columns) == seg.COLUMNS
    return {int(r["track_num"]): r for r in back.to_dict("records")}


def test_defaults_keep_and_flag_every_problem(shard):
    by = _run(shard, {})
    assert all(r["status"] == "ok" for r in by.values())
    assert {n: r["source_flags"] for n, r in by.items()} == {
        105: "", 205: "", 305: "extension_mismatch", 405: "downmixed", 505: "upsampled", 605: "clipped"}
    assert [by[n]["source_format"] for n in (105, 205, 305, 405, 505, 605)] == ["mp3", "flac", "wav", "flac", "flac", "flac"]
    assert by[305]["extension_mismatch"] == "True" and by[105]["extension_mismatch"] == "False"
    assert int(float(by[405]["source_channels"])) == 6 and by[405]["downmixed"] == "True"
    assert int(float(by[505]["source_sample_rate"])) == 8000 and by[505]["upsampled"] == "True"
    assert int(float(by[105]["source_sample_rate"])) == SR and by[105]["upsampled"] == "False"
    assert float(by[605]["clipped_fraction"]) > 0.2 and float(by[205]["clipped_fraction"]) == 0.0
    for n in (105, 205):
        assert by[n]["downmixed"] == "False" and by[n]["upsampled"] == "False"
    # the kept 6-channel and 8 kHz tracks are still written as 44.1 kHz stereo clips
    for n in (405, 505):
        x, sr = sf.read(by[n]["clip_path"], always_2d=True)
        assert sr == SR and x.shape == (int(CLIP * SR), 2)


def test_reject_keys_reject_with_reason_and_value(shard):
    checks = dict(reject_extension_mismatch=True, reject_downmixed=True, reject_upsampled=True,
                  reject_clipped=True)
    by = _run(shard, checks)
    assert [by[n]["status"] for n in (105, 205)] == ["ok", "ok"]
    assert by[305]["reason"].startswith("extension mismatch: ") and "305.mp3 holds wav data" in by[305]["reason"]
    assert by[405]["reason"].startswith("downmixed: ") and "405.flac has 6 channels" in by[405]["reason"]
    assert by[505]["reason"].startswith("upsampled: ") and "505.flac is 8000 Hz" in by[505]["reason"]
    assert "22050" in by[505]["reason"]
    assert by[605]["reason"].startswith("clipped: ") and "605.flac clip 605_000" in by[605]["reason"]
    assert "reject_clipped" in by[605]["reason"]
    for n, flag in ((305, "extension_mismatch"), (405, "downmixed"), (505, "upsampled")):
        r = by[n]
        assert r["status"] == "rejected" and r["stage"] == "segment" and r["clip_id"] == "" and r["source_flags"] == flag
        assert seg.FLAG_CATEGORIES[flag] == r["reason"].split(":")[0]
    assert by[605]["clip_id"] == "605_000" and by[605]["source_flags"] == "clipped" and by[605]["clip_path"] == ""
    assert sorted(p.name for p in (shard / "clips" / "05").iterdir()) == ["105_000.flac", "205_000.flac"]


def test_thresholds_move_the_flags(shard):
    by = _run(shard, dict(min_source_sample_rate=8_000, max_clipped_fraction=0.9, reject_clipped=True))
    assert by[505]["source_flags"] == "" and by[605]["source_flags"] == "" and by[605]["status"] == "ok"
    by = _run(shard, dict(min_source_sample_rate=48_000), out="clips2")
    assert all(by[n]["upsampled"] == "True" for n in (105, 205, 305, 405, 505, 605))


def test_corrupt_file_keeps_its_format_flag(tmp_path):
    d = tmp_path / "audio" / "05"
    d.mkdir(parents=True)
    (d / "105.mp3").write_bytes(b"fLaC" + b"\x00" * 500)  # a broken FLAC named .mp3
    pd.DataFrame([{"track_id": "track_0000105", "track_num": 105, "shard": "05", "path": "05/105.mp3",
                   "seconds": 5.0}]).to_csv(tmp_path / "candidates.tsv", sep="\t", index=False)
    (tmp_path / "05.json").write_text(json.dumps({"shard": "05", "status": "ok", "tracks": {"05/105.mp3": "ok"}}))
    by = _run(tmp_path, {})
    assert by[105]["reason"].startswith("corrupt: ") and by[105]["source_flags"] == "extension_mismatch"
    assert by[105]["source_format"] == "flac"


def test_checks_default_to_the_schema_and_reach_the_cli(shard, capsys):
    schema = load_schema()["properties"]["segment"]["properties"]["checks"]["properties"]
    built = settings.resolve(seg.SegmentSettings, {})
    assert {k: getattr(built, k) for k in schema} == {k: v["default"] for k, v in schema.items()}
    args = ["--shard", "05", "--candidates", str(shard / "candidates.tsv"), "--receipt", str(shard / "05.json"),
            "--audio-dir", str(shard / "audio"), "--clip-seconds", "2", "--out-dir", str(shard / "c" / "05"),
            "--table", str(shard / "c" / "05.tsv")]
    # the segment.checks keys are flags of their own; the rule passes the same keys as --settings JSON
    assert seg.main([*args, "--reject-downmixed", "true", "--min-source-sample-rate", "8000"]) == 0
    table = (shard / "c" / "05.tsv").read_text()
    df = pd.read_csv(shard / "c" / "05.tsv", sep="\t", dtype=str, keep_default_na=False).set_index("track_num")
    assert df.loc["405", "status"] == "rejected" and df.loc["505", "source_flags"] == "" and df.loc["305", "status"] == "ok"
    assert seg.main([*args, "--settings", json.dumps({"reject_downmixed": True, "min_source_sample_rate": 8000})]) == 0
    assert (shard / "c" / "05.tsv").read_text() == table
    for bad, msg in ((["--settings", '{"reject_downmix": true}'], "unknown key(s) ['reject_downmix']"),
                     (["--min-source-sample-rate", "high"], "--min-source-sample-rate: invalid int value"),
                     (["--settings", "[1]"], "must be a JSON object"), (["--settings", "{not json"], "not JSON"),
                     (["--full-scale-level", "2"], "--full-scale-level / config key segment.checks.full_scale_level")):
        with pytest.raises(SystemExit):
            seg.main([*args, *bad])
        assert msg in capsys.readouterr().err
