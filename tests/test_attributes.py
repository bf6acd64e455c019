"""Attribute adherence (tempo, key/mode, drums) on audio from the demo's own synthesiser."""

import dataclasses

import numpy as np
import pytest

from ssmttm import audio
from ssmttm.demo import synth
from ssmttm.eval import attributes as A

SR = 44100
# One spec per (genre, mode) of the demo's grammar, drawn with fixed seeds: 5 with a drum kit, 3 without
# (rock/pop/electronic/jazz have drums; classical/ambient do not), both modes, 70-160 bpm.
PICKS = (0, 3, 2, 13, 20, 28, 56, 10)  # pop-maj rock-min elec-min jazz-min elec-maj class-maj class-min amb-min
SECONDS = 8.0


def _spec(i: int) -> synth.TrackSpec:
    return synth.random_spec(np.random.default_rng([2024, i]), SECONDS, seed=i)


def _truth(s: synth.TrackSpec) -> dict:
    return {"bpm": s.bpm, "key": s.key, "mode": s.mode, "drums": int(s.drums)}


@pytest.fixture(scope="module")
def rendered():
    specs = [_spec(i) for i in PICKS]
    return [(s, synth.render(s)) for s in specs]


@pytest.fixture(scope="module")
def estimates(rendered):
    return [A.estimate(x, SR) for _, x in rendered]


def test_picks_cover_the_grammar(rendered):
    specs = [s for s, _ in rendered]
    assert {s.genre for s in specs} == set(synth.GENRES)
    assert sum(s.drums for s in specs) == 5 and {s.mode for s in specs} == {"major", "minor"}


def test_estimates_recover_synth_tags(rendered, estimates):
    rows = []
    for (s, _), est in zip(rendered, estimates):
        assert set(est) >= {"bpm", "key", "mode", "drums", "tempo_conf", "key_conf", "drums_ratio"}
        assert est["key"] in A.NOTE_NAMES and est["mode"] in ("major", "minor")
        rows.append(A.score(est, _truth(s)))
    means = {k: v["value"] for k, v in A.summarize(rows).items()}
    assert means["tempo_acc"] >= 0.8, means
    assert means["key_acc"] >= 0.8, means
    assert means["mode_acc"] >= 0.75, means
    assert means["drums_acc"] == 1.0, means


def test_wrong_key_and_noise_score_low(rendered, estimates):
    # The same music transposed by a tritone, scored against the original tags: the key must be wrong.
    wrong = []
    for s, _ in rendered[:4]:
        moved = dataclasses.replace(s, root=(s.root + 6) % 12)
        wrong.append(A.score(A.estimate(synth.render(moved), SR), _truth(s))["key_acc"])
    assert np.mean(wrong) <= 0.25
    # White noise against every spec's tags: no key, no tempo, and "no drums" tags are contradicted.
    noise = np.random.default_rng(0).standard_normal(int(SECONDS * SR)).astype(np.float32) * 0.1
    est = A.estimate(noise, SR)
    rows = [A.score(est, _truth(s)) for s, _ in rendered]
    means = {k: v["value"] for k, v in A.summarize(rows).items()}
    assert means["key_mode_acc"] <= 0.25 and means["tempo_acc"] <= 0.5, (est, means)
    assert est["drums"] and means["drums_acc"] == pytest.approx(5 / 8)
    # Silence: no drums, no crash.
    assert A.estimate(np.zeros(SR * 2, np.float32), SR)["drums"] is False


def test_score_rules():
    est = {"bpm": 121.0, "key": "D#", "mode": "minor", "drums": True}
    sc = A.score(est, {"bpm": 60, "key": "Eb", "mode": "minor", "drums": "1"})
    assert sc["tempo_acc"] == 1.0 and sc["tempo_acc1"] == 0.0  # 2x counts only for Accuracy 2
    assert sc["key_acc"] == 1.0 and sc["mode_acc"] == 1.0 and sc["key_mode_acc"] == 1.0 and sc["drums_acc"] == 1.0
    sc = A.score(est, {"bpm": 135, "key": "E", "mode": "major", "drums": 0})
    assert sc["tempo_acc"] == 0.0 and sc["key_acc"] == 0.0 and sc["mode_acc"] == 0.0 and sc["drums_acc"] == 0.0
    assert A.tempo_match(112.0, 120.0) and not A.tempo_match(110.0, 120.0)  # 8 % window
    assert A.tempo_match(59.0, 120.0) and not A.tempo_match(80.0, 120.0)  # 0.5x yes, 2/3x no
    sc = A.score(est, {"bpm": "", "key": "C"})
    assert sc["tempo_acc"] is None and sc["mode_acc"] is None and sc["key_mode_acc"] is None
    with pytest.raises(ValueError, match="key name"):
        A.score(est, {"key": "H"})


def test_key_scores_profiles():
    for r in (0, 5, 9):
        s = A.key_scores(np.roll(A.KK_MINOR, r))
        assert np.unravel_index(np.argmax(s), s.shape) == (1, r) and s[1, r] == pytest.approx(1.0)
    assert not A.key_scores(np.ones(12)).any()


def test_adherence_files_and_bad_input(tmp_path, rendered):
    (s1, x1), (s2, _) = rendered[0], rendered[5]
    good = tmp_path / "a.wav"
    audio.write(good, x1[:, : 4 * SR], SR)
    bad = tmp_path / "b.wav"
    bad.write_bytes(b"not audio")
    rows, means, reasons = A.adherence([
        (good, dict(_truth(s1), track_id="t1")),
        (bad, _truth(s2)),
        (good, {"bpm": 100, "key": "Q", "mode": "major", "drums": 1}),
    ])
    assert len(rows) == 1 and rows[0]["track_id"] == "t1" and rows[0]["true_bpm"] == s1.bpm
    assert len(reasons) == 2 and "b.wav" in reasons[0] and "a.wav" in reasons[1]
    assert means["drums_acc"] == {"value": 1.0, "n": 1}


def test_warm_signal_exercises_every_estimator():
    """The signal ``make setup`` compiles the estimators with (stage warm-numba) goes through all of them."""
    x = A.warm_signal()
    assert x.dtype == np.float32 and x.ndim == 1
    est = A.estimate(x, A.ANALYSIS_SR)
    assert est["key"] == "C" and est["mode"] == "major" and est["drums"] and A.tempo_match(est["bpm"], 120.0), est


def _drums_ratio_full_hpss(y: np.ndarray, sr: int = A.ANALYSIS_SR) -> float:
    """The drums ratio with HPSS over the whole spectrogram (what drums_ratio's band-limited HPSS replaces)."""
    import librosa

    s = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
    _, p = librosa.decompose.hpss(s, kernel_size=A.HPSS_KERNEL)
    hi = librosa.fft_frequencies(sr=sr, n_fft=2048) > A.DRUMS_CUTOFF_HZ
    return float(np.square(p[hi], dtype=np.float64).sum() / np.square(s, dtype=np.float64).sum())


def test_drums_ratio_equals_hpss_of_the_whole_spectrogram(rendered):
    # drums_ratio filters only the bins above the cutoff (plus the kernel's reach below): exactly equal,
    # on kit and kit-less renders and on noise (which has percussive energy in every bin).
    noise = np.random.default_rng(5).standard_normal(A.ANALYSIS_SR * 3).astype(np.float32) * 0.1
    ys = [A._mono(x, SR) for _, x in rendered[:2] + rendered[-2:]] + [noise]
    for y in ys:
        assert A.drums_ratio(y) == _drums_ratio_full_hpss(y)
