"""Reference audio stage (ssmttm.eval.reference): yt-dlp against a loopback server, and the Jamendo source."""

import json
import os
import re
import stat
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ssmttm import settings
from ssmttm.eval import reference as ref
from ssmttm.eval.options import ReferenceSettings

try:
    from httpfault import Fault, fault_server  # noqa: F401 (fixture)
except ImportError:  # pragma: no cover
    from tests.httpfault import Fault, fault_server  # noqa: F401

SR = 22050
SR_OUT = 44100


def _tone(seconds: int, sr: int = SR) -> np.ndarray:
    """Stereo test tone whose frequency steps every second: second k plays 300 + 100 k Hz."""
    t = np.arange(sr) / sr
    x = np.concatenate([0.4 * np.sin(2 * np.pi * (300 + 100 * k) * t) for k in range(seconds)])
    return np.stack([x, x], axis=1).astype(np.float32)


def _freqs(path: Path) -> list[float]:
    """Dominant frequency of the middle half of each second of a mono wav."""
    x, sr = sf.read(str(path), dtype="float32")
    assert x.ndim == 1 and sr == SR_OUT
    out = []
    for k in range(len(x) // sr):
        seg = x[k * sr + sr // 4: k * sr + 3 * sr // 4]
        spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
        out.append(float(np.argmax(spec) * sr / len(seg)))
    return out


def _media(tmp_path: Path, fmt: str, seconds: int = 20) -> bytes:
    p = tmp_path / f"tone.{fmt}"
    sf.write(str(p), _tone(seconds), SR)
    return p.read_bytes()


def _prompt_set(path: Path, prompts: list[dict], name: str = "musiccaps") -> Path:
    path.write_text(json.dumps({"name": name, "options": {}, "prompts": prompts}))
    return path


def _argv(ps: Path, out: Path, srv, cache: Path, *extra):
    # --timeout (per attempt) only guards against a hang here: a busy machine must not turn it into a retry
    return ["--prompts", str(ps), "--source", "musiccaps", "--out-dir", str(out), "--cache-dir", str(cache),
            "--url-template", srv.url("/m/{ytid}"), "--retries", "1", "--backoff-s", "0", "--timeout-s", "120",
            "--jobs", "2", "--ffmpeg", "no-such-ffmpeg-binary", *extra]


def _fetch_config(ffmpeg: str | None, **given) -> ref.FetchConfig:
    """The schema's evaluation.reference defaults, ``given`` keys changed."""
    return ref.FetchConfig.from_settings(settings.resolve(ReferenceSettings, given=given), "unused-cache", ffmpeg)


def _avail(out: Path) -> dict:
    df = pd.read_csv(out / "availability.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert list(df.columns) == list(ref.AVAILABILITY_COLUMNS)
    return {r.ref_id: (r.status, r.reason) for r in df.itertuples()}


def test_musiccaps_fetch_cut_missing_and_cache(fault_server, tmp_path):
    srv = fault_server
    srv.add("/m/wavwavwav01", _media(tmp_path, "wav"))
    srv.add("/m/mp3mp3mp301", _media(tmp_path, "mp3"))
    srv.add("/m/shortshort1", _media(tmp_path, "wav", seconds=12))
    srv.add("/m/junkjunkjun", b"\x00\x00\x00\x20ftypM4A " * 200)  # no decoder without ffmpeg
    srv.add("/m/gone4040404", None)  # 404
    ps = _prompt_set(tmp_path / "mc.json", [
        {"prompt_id": "wavwavwav01", "text": "a tone", "ref_id": "wavwavwav01", "start_s": 5, "end_s": 15},
        {"prompt_id": "mp3mp3mp301", "text": "mp3 tone", "ref_id": "mp3mp3mp301", "start_s": 3.0, "end_s": 13.0},
        {"prompt_id": "second_caption", "text": "same clip", "ref_id": "wavwavwav01", "start_s": 5, "end_s": 15},
        {"prompt_id": "shortshort1", "text": "x", "ref_id": "shortshort1", "start_s": 5, "end_s": 15},
        {"prompt_id": "junkjunkjun", "text": "x", "ref_id": "junkjunkjun", "start_s": 0, "end_s": 10},
        {"prompt_id": "gone4040404", "text": "x", "ref_id": "gone4040404", "start_s": 0, "end_s": 10},
        {"prompt_id": "noref", "text": "no reference", "ref_id": None},
    ])
    out, cache = tmp_path / "ref", tmp_path / "cache"
    (out / "stale.wav").parent.mkdir(parents=True)
    (out / "stale.wav").write_bytes(b"old")
    assert ref.main(_argv(ps, out, srv, cache)) == 0

    av = _avail(out)
    assert av["wavwavwav01"] == ("fetched", "") and av["mp3mp3mp301"] == ("fetched", "")
    assert av["gone4040404"][0] == "missing" and "404" in av["gone4040404"][1]
    assert av["shortshort1"][0] == "missing" and av["shortshort1"][1].startswith("too short")
    assert av["junkjunkjun"][0] == "missing" and "without ffmpeg" in av["junkjunkjun"][1]
    assert len(srv.requests("/m/gone4040404")) == 1  # a 404 is permanent: no retry

    index = json.loads((out / "index.json").read_text())
    assert index["kind"] == "reference" and index["set"] == "musiccaps"
    assert index["summary"] == "2 of 5 reference clips available"
    clips = {c["id"]: c for c in index["clips"]}
    assert set(clips) == {"wavwavwav01", "mp3mp3mp301"}
    assert clips["wavwavwav01"]["prompt_ids"] == ["wavwavwav01", "second_caption"]
    assert clips["wavwavwav01"]["seconds"] == 10.0 and clips["wavwavwav01"]["file"] == "wavwavwav01.wav"
    assert sorted(p.name for p in out.glob("*.wav")) == ["mp3mp3mp301.wav", "wavwavwav01.wav"]  # stale removed
    # the right 10 s: second k of the source plays 300 + 100 k Hz
    for rid, start in (("wavwavwav01", 5), ("mp3mp3mp301", 3)):
        info = sf.info(str(out / f"{rid}.wav"))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (SR_OUT, 1, 10 * SR_OUT, "PCM_16")
        np.testing.assert_allclose(_freqs(out / f"{rid}.wav"), [300 + 100 * (start + j) for j in range(10)], atol=3)

    # rerun: cached clips make no request at all; missing ones are tried again
    before = len(srv.requests("/m/wavwavwav01")) + len(srv.requests("/m/mp3mp3mp301"))
    assert ref.main(_argv(ps, out, srv, cache)) == 0
    assert len(srv.requests("/m/wavwavwav01")) + len(srv.requests("/m/mp3mp3mp301")) == before
    av = _avail(out)
    assert av["wavwavwav01"] == ("cached", "") and av["mp3mp3mp301"] == ("cached", "")
    np.testing.assert_allclose(_freqs(out / "wavwavwav01.wav"), [300 + 100 * (5 + j) for j in range(10)], atol=3)

    # fewer clips than --min-available: exit 1, outputs still written
    assert ref.main(_argv(ps, out, srv, cache, "--min-available", "3")) == 1


def test_retries_with_backoff_then_success_or_give_up(fault_server, tmp_path):
    srv = fault_server
    data = _media(tmp_path, "wav", seconds=10)
    srv.add("/m/flaky000001", data, [Fault("status", status=503), Fault("status", status=503)])
    srv.add("/m/flaky000002", data, [Fault("status", status=503, always=True)])
    ps = _prompt_set(tmp_path / "mc.json", [
        {"prompt_id": f"flaky00000{i}", "text": "t", "ref_id": f"flaky00000{i}", "start_s": 0, "end_s": 10}
        for i in (1, 2)])
    out = tmp_path / "ref"
    rc = ref.main(_argv(ps, out, srv, tmp_path / "cache", "--retries", "2", "--backoff-s", "0.01"))
    assert rc == 0
    av = _avail(out)
    assert av["flaky000001"] == ("fetched", "")
    # two 503s, then the extractor request and the media request of the third attempt
    assert [r.status for r in srv.requests("/m/flaky000001")] == [503, 503, 200, 200]
    assert av["flaky000002"][0] == "missing" and "503" in av["flaky000002"][1] and "3 attempts" in av["flaky000002"][1]
    assert len(srv.requests("/m/flaky000002")) == 3


def test_clip_timeout_is_a_missing_row(fault_server, tmp_path):
    srv = fault_server
    srv.add("/m/slow0000001", _media(tmp_path, "wav", seconds=10))
    ps = _prompt_set(tmp_path / "mc.json", [
        {"prompt_id": "s", "text": "t", "ref_id": "slow0000001", "start_s": 0, "end_s": 10}])
    out, cache = tmp_path / "ref", tmp_path / "cache"
    # A 1 us limit passes before any transfer can finish, so every attempt times out; where exactly it
    # strikes (probe, media request, a resumed Range request, or the socket itself, which gets the same
    # limit) and so how many requests reach the server is a race, and is not asserted.
    assert ref.main(_argv(ps, out, srv, cache, "--timeout-s", "0.000001", "--retries", "1")) == 1
    status, reason = _avail(out)["slow0000001"]
    assert status == "missing" and re.search(r"time(d)? ?out", reason, re.IGNORECASE), reason
    assert reason.endswith("(after 2 attempts)"), reason  # a timeout is transient: retried, then given up
    assert not (cache / "slow0000001" / "done.json").exists()  # not cached: a rerun tries again
    index = json.loads((out / "index.json").read_text())
    assert index["clips"] == [] and index["summary"] == "0 of 1 reference clips available"
    assert not list(out.glob("*.wav"))


def test_stalled_transfer_resumes_through_ytdlp_retries(fault_server, tmp_path):
    srv = fault_server
    data = _media(tmp_path, "wav", seconds=10)
    # first GET (extractor probe) is served whole; the media GET stalls (until the server stops, far
    # longer than the socket timeout), yt-dlp resumes with a Range. The socket timeout is not tiny, so a
    # busy machine does not time out the other requests too; should it, yt-dlp retries, which is why
    # only the stalled request and a resume after it are asserted, not the number of requests.
    srv.add("/m/stall000001", data, [Fault("ignore_range"), Fault("stall", after=50_000, seconds=30)])
    ps = _prompt_set(tmp_path / "mc.json", [
        {"prompt_id": "s", "text": "t", "ref_id": "stall000001", "start_s": 0, "end_s": 10}])
    out = tmp_path / "ref"
    assert ref.main(_argv(ps, out, srv, tmp_path / "cache", "--socket-timeout-s", "2", "--retries", "2")) == 0
    assert _avail(out)["stall000001"] == ("fetched", "")
    reqs = srv.requests("/m/stall000001")
    stalled = [i for i, r in enumerate(reqs) if r.sent == 50_000]
    assert len(stalled) == 1
    assert any(r.range not in (None, "bytes=0-") for r in reqs[stalled[0] + 1:]), reqs  # resumed, not restarted
    assert sf.info(str(out / "stall000001.wav")).frames == 10 * SR_OUT


def test_ffmpeg_fallback_command(tmp_path):
    """soundfile cannot read the container -> the ffmpeg subprocess decodes the section (a stand-in
    ffmpeg here, checking the arguments it is given)."""
    good = tmp_path / "tone.wav"
    sf.write(str(good), _tone(20), SR)
    media = tmp_path / "clip.m4a"
    media.write_bytes(b"JUNK" + good.read_bytes()[4:])  # not RIFF any more: soundfile fails
    fake = tmp_path / "ffmpeg"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys, io, soundfile as sf\n"
        "a = sys.argv[1:]\n"
        "ss, t, src, rate = float(a[a.index('-ss') + 1]), float(a[a.index('-t') + 1]), a[a.index('-i') + 1], "
        "int(a[a.index('-ar') + 1])\n"
        "assert a[a.index('-ac') + 1] == '1' and a.index('-ss') < a.index('-i')\n"
        "data = open(src, 'rb').read()\n"
        "x, sr = sf.read(io.BytesIO(b'RIFF' + data[4:]), dtype='float32')\n"
        "import soxr\n"
        "y = soxr.resample(x[int(ss * sr):int((ss + t) * sr)].mean(axis=1), sr, rate)\n"
        "sf.write(a[-1], y, rate, subtype='FLOAT', format='WAV')\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    cfg = _fetch_config(str(fake), timeout_s=60)
    x, sr = ref.decode_section(media, 4.0, 10.0, cfg)
    assert sr == SR_OUT and x.shape == (1, 10 * SR_OUT)
    ref._write_clip(x, sr, 10.0, tmp_path / "o.wav", SR_OUT, "PCM_16", 0.5, "m4a")
    np.testing.assert_allclose(_freqs(tmp_path / "o.wav"), [300 + 100 * (4 + j) for j in range(10)], atol=3)
    with pytest.raises(ref.ClipMissing, match="cannot decode m4a without ffmpeg"):
        ref.decode_section(media, 4.0, 10.0, _fetch_config(None))


# --- Jamendo source -----------------------------------------------------------------------------------------
def test_jamendo_source(tmp_path):
    root = tmp_path / "audio"
    (root / "14").mkdir(parents=True)
    sf.write(str(root / "14" / "214.mp3"), _tone(30), SR)              # good: 30 s
    sf.write(str(root / "14" / "314.mp3"), _tone(6), SR)               # too short for 10 s
    (root / "14" / "414.mp3").write_bytes(b"not audio at all" * 100)   # corrupt
    (root / "14.json").write_text(json.dumps({"shard": "14", "status": "ok", "tracks": {
        "14/214.mp3": "ok", "14/314.mp3": "ok", "14/414.mp3": "ok", "14/514.mp3": "sha256 mismatch"}}))
    tsv = tmp_path / "raw_30s_cleantags.tsv"
    tsv.write_text("TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n" + "".join(
        f"track_{n:07d}\tartist_1\talbum_1\t{n % 100:02d}/{n}.mp3\t30.0\tgenre---rock\n"
        for n in (214, 314, 414, 514, 215)))
    ps = _prompt_set(tmp_path / "sdd.json", [
        {"prompt_id": f"sdd_{i}", "text": f"caption {i}", "ref_id": r}
        for i, r in enumerate(["214", "314", "414", "514", "215", "999", "track_0000214"])], name="song_describer")
    out = tmp_path / "ref"
    base = ["--prompts", str(ps), "--source", "jamendo", "--out-dir", str(out), "--cleantags", str(tsv),
            "--receipts", str(root / "14.json")]  # shard 15 was not fetched: no receipt
    assert ref.main(base) == 0
    av = _avail(out)
    assert av["214"] == ("fetched", "") and av["track_0000214"] == ("fetched", "")
    assert av["314"][1].startswith("too short")
    assert av["414"][0] == "missing" and "decode" in av["414"][1] and "414.mp3" in av["414"][1]
    assert av["514"] == ("missing", "fetch: 14/514.mp3: sha256 mismatch")
    assert av["215"][0] == "missing" and "shard 15 is not one of this run's shards" in av["215"][1]
    assert av["999"][0] == "missing" and "not in raw_30s_cleantags" in av["999"][1]
    index = json.loads((out / "index.json").read_text())
    assert index["summary"] == "2 of 7 reference clips available" and index["set"] == "song_describer"
    c = {c["id"]: c for c in index["clips"]}["214"]
    assert c["offset_s"] == 10.0 and c["prompt_id"] == "sdd_0" and c["text"] == "caption 0"
    np.testing.assert_allclose(_freqs(out / "214.wav"), [300 + 100 * (10 + j) for j in range(10)], atol=3)
    # explicit offset and length
    assert ref.main(base + ["--offset", "2.0", "--seconds", "4"]) == 0
    np.testing.assert_allclose(_freqs(out / "214.wav"), [500, 600, 700, 800], atol=3)
    assert ref.main(base + ["--offset", "start", "--min-available", "5"]) == 1


def test_bad_arguments_fail_naming_the_flag(tmp_path, capsys):
    ps = _prompt_set(tmp_path / "p.json", [{"prompt_id": "a", "text": "t", "ref_id": "x"}])
    common = ["--prompts", str(ps), "--out-dir", str(tmp_path / "o")]
    for extra, flag in ((["--source", "jamendo"], "--cleantags"),
                        (["--source", "musiccaps", "--url-template", "http://x/"], "--url-template"),
                        (["--source", "musiccaps", "--offset", "middle"], "--offset"),
                        (["--source", "musiccaps", "--retries", "-1"], "--retries")):
        with pytest.raises(SystemExit):
            ref.main(common + extra)
        assert flag in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert ref.main(["--prompts", str(tmp_path / "bad.json"), "--source", "musiccaps",
                     "--cache-dir", str(tmp_path / "c"), "--out-dir", str(tmp_path / "o")]) == 2
    assert not os.path.exists(tmp_path / "o" / "index.json")
