"""listening-kit: loudness-matched anonymous clips, balanced per-rater plans, attention checks, errors.

Three tiny systems are built in code: two in generate's layout (a quiet 32 kHz mono sine; loud 44.1 kHz
stereo noise, 2.2 s) and one in the reference layout (22.05 kHz stereo, a faint sine under full-scale
clicks, which can only be peak-limited; one clip serving two prompts through ``prompt_ids``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ssmttm.listen import design, kit

SYSTEMS = ("simba_k1", "transformer_k1", "ground_truth")
PROMPTS = {"sdd_4101": "calm piano melody", "sdd_4102": "fast drum loop", "sdd_4103": "warm string pad",
           "sdd_4104": "bright synth arpeggio", "sdd_4105": "slow acoustic guitar"}
TARGET = -23.0


def _write(path: Path, x: np.ndarray, sr: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.T if x.ndim == 2 else x, sr, subtype="PCM_16")


def _sine(sr: int, seconds: float, hz: float, amp: float) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture
def world(tmp_path):
    """(tmp_path, {system: index path}); common prompts: sdd_4101..sdd_4104."""
    g = np.random.default_rng(0)
    idx = {}
    d = tmp_path / "gen" / "simba_k1"
    items = []
    for k, (pid, text) in enumerate(PROMPTS.items()):
        _write(d / f"{pid}.wav", _sine(32000, 2.0, 220.0 * (k + 1), 0.02), 32000)
        items.append({"prompt_id": pid, "prompt": text, "audio": f"{pid}.wav", "sidecar": f"{pid}.json"})
    idx["simba_k1"] = d / "index.json"
    idx["simba_k1"].write_text(json.dumps({"items": items}))
    d = tmp_path / "gen" / "transformer_k1"
    items = []
    for pid, text in list(PROMPTS.items())[:4]:
        _write(d / f"{pid}.wav", (0.3 * g.standard_normal((2, int(44100 * 2.2)))).clip(-1, 1), 44100)
        items.append({"prompt_id": pid, "prompt": text, "audio": f"{pid}.wav"})
    idx["transformer_k1"] = d / "index.json"
    idx["transformer_k1"].write_text(json.dumps({"items": items}))
    d = tmp_path / "ref"
    clips = []
    for name, pids in (("a", ["sdd_4101", "sdd_4102"]), ("b", ["sdd_4103"]), ("c", ["sdd_4104", "sdd_4105"])):
        x = np.stack([_sine(22050, 2.0, 330.0, 0.005)] * 2)
        x[:, ::5000] = 0.9
        _write(d / f"{name}.wav", x, 22050)
        clips.append({"id": name, "file": f"{name}.wav", "prompt_id": pids[0], "prompt_ids": pids,
                      "text": PROMPTS[pids[0]]})
    idx["ground_truth"] = d / "index.json"
    idx["ground_truth"].write_text(json.dumps({"kind": "reference", "clips": clips}))
    return tmp_path, idx


def _argv(idx, out, **over) -> list[str]:
    s = {"systems": list(SYSTEMS), "n_prompts": 4, "seed": 3, "seconds": 10.0, "loudness_lufs": TARGET,
         "peak_dbfs": -1.0, "raters": 5, "per_rater": 5, "attention": {"count": 2}, **over}
    return ["--test", "demo", "--settings", json.dumps(s), "--out-dir", str(out),
            *[f"--system={n}={p}" for n, p in reversed(list(idx.items()))]]


def _loudness(path: Path) -> float:
    import pyloudnorm

    x, sr = sf.read(str(path))
    return pyloudnorm.Meter(sr).integrated_loudness(x)


def test_kit_is_loudness_matched_balanced_and_anonymous(world):
    tmp, idx = world
    out = tmp / "listening" / "demo"
    assert kit.main(_argv(idx, out)) == 0
    plan = json.loads((out / "kit" / "plan.json").read_text())
    key = json.loads((out / "key.json").read_text())
    rec = json.loads((out / "kit.json").read_text())
    assert key["prompt_ids"] == ["sdd_4101", "sdd_4102", "sdd_4103", "sdd_4104"]
    assert key["systems"] == sorted(SYSTEMS)

    # one format and length for all: the shortest chosen clip (2.0 s; the noise system's are 2.2 s)
    wavs = sorted((out / "kit" / "clips").glob("*.wav"))
    assert {w.stem for w in wavs} == set(key["clips"]) == {c["id"] for c in rec["clips"]}
    assert len(wavs) == 12 + 8  # 3 systems x 4 prompts, plus a pool of 4 x 2 attention clips
    for w in wavs:
        i = sf.info(str(w))
        assert (i.samplerate, i.channels, i.frames, i.subtype) == (44100, 2, 88200, "PCM_16"), w
        assert design.CLIP_PATTERN.match(w.stem)
    assert rec["seconds"] == plan["seconds"] == 2.0

    # loudness: at the target, or peak-limited (the clicky reference) with what was reached recorded
    by_id = {c["id"]: c for c in rec["clips"]}
    limited = 0
    for w in wavs:
        c, measured = by_id[w.stem], _loudness(w)
        assert abs(measured - c["loudness_after_lufs"]) < 0.05
        assert c["sha256"] == __import__("hashlib").sha256(w.read_bytes()).hexdigest()
        if c["peak_limited"]:
            limited += 1
            assert measured < TARGET and abs(c["peak_dbfs"] - -1.0) < 0.05
        else:
            assert abs(measured - TARGET) < 0.5, (w, c)
            assert c["peak_dbfs"] <= -1.0 + 1e-3
    assert limited == 4 and all(by_id[c]["system"] == "ground_truth" for c in by_id if by_id[c]["peak_limited"])

    # balanced plan: per_rater distinct test clips each, every test clip rated 2 or 3 times (5 x 5 / 12)
    tests = {cid for cid, v in key["clips"].items() if v["role"] == "test"}
    atts = {cid for cid, v in key["clips"].items() if v["role"] == "attention"}
    assert len(tests) == 12 and len(atts) == 8
    count = dict.fromkeys(tests, 0)
    for r in plan["raters"]:
        assert design.RATER_PATTERN.match(r["rater"])
        clips = [it["clip"] for it in r["items"]]
        assert len(clips) == len(set(clips)) == 5 + 2
        assert clips[0] in tests and sum(c in atts for c in clips) == 2  # attention never first
        for it in r["items"]:
            k = key["clips"][it["clip"]]
            assert it["prompt"] == PROMPTS[k["prompt_id"]]
            if it["clip"] in tests:
                count[it["clip"]] += 1
    assert sorted(set(count.values())) == [2, 3] and sum(count.values()) == 25
    assert rec["item_counts"] == count and (rec["item_count_min"], rec["item_count_max"]) == (2, 3)
    assert key["attention"] == {"question": "ovl", "max_score": 2}

    # nothing served names a system or a prompt id, in any file (plan.json and the wav bytes)
    words = [*SYSTEMS, *PROMPTS]
    for f in (out / "kit").rglob("*"):
        if f.is_file():
            data = f.read_bytes().lower()
            assert not [w for w in words if w.encode() in data], f
    assert len({f.stat().st_mtime_ns for f in (out / "kit").rglob("*")}) == 1  # no write order to read
    assert not list(tmp.joinpath("listening").glob(".demo.kit-*"))  # staging removed


def test_same_seed_same_kit_other_seed_other_kit_and_flag_order_irrelevant(world):
    tmp, idx = world
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        argv = _argv(idx, tmp / name, seed=seed, attention={"count": 1}, raters=3)
        if name == "b":  # the systems in another order, as one --system flag (the rule's form)
            argv = argv[:6] + ["--system", *sorted(a.removeprefix("--system=") for a in argv[6:])]
        assert kit.main(argv) == 0
        runs[name] = {p.relative_to(tmp / name).as_posix(): p.read_bytes()
                      for p in sorted((tmp / name / "kit").rglob("*")) if p.is_file()}
    assert runs["a"] == runs["b"]
    assert runs["a"]["kit/plan.json"] != runs["c"]["kit/plan.json"]
    assert set(runs["a"]) != set(runs["c"])  # other clip ids


def test_per_rater_is_capped_at_the_items(world):
    tmp, idx = world
    out = tmp / "cap"
    assert kit.main(_argv(idx, out, n_prompts=2, per_rater=50, raters=2, attention={"count": 0})) == 0
    rec = json.loads((out / "kit.json").read_text())
    assert (rec["per_rater"], rec["per_rater_setting"], rec["attention_pool"]) == (6, 50, 0)
    plan = json.loads((out / "kit" / "plan.json").read_text())
    assert [len(r["items"]) for r in plan["raters"]] == [6, 6]


def test_errors_name_what_is_wrong(world, capsys):
    tmp, idx = world
    out = tmp / "listening" / "demo"
    # a system of the settings without --system, and one --system not in the settings
    argv = [a for a in _argv(idx, out) if not a.startswith("--system=simba_k1=")] + ["--system=other=x.json"]
    with pytest.raises(SystemExit):
        kit.main(argv)
    err = capsys.readouterr().err
    assert "missing: simba_k1" in err and "not in the settings: other" in err

    # too few prompts common to every system
    assert kit.main(_argv(idx, out, n_prompts=5)) == 2
    err = capsys.readouterr().err
    assert "only 4 prompts" in err and "simba_k1 5" in err and "transformer_k1 4" in err

    # a corrupt clip: named, and the previous kit is left as it was
    assert kit.main(_argv(idx, out)) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = idx["transformer_k1"].parent / "sdd_4103.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00not audio at all")
    capsys.readouterr()
    assert kit.main(_argv(idx, out, seed=9)) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "transformer_k1" in err and "sdd_4103" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not list(out.parent.glob(".demo.kit-*"))


def test_silent_clip_and_a_test_name_that_names_a_system(world, capsys):
    tmp, idx = world
    silent = idx["simba_k1"].parent / "sdd_4102.wav"
    _write(silent, np.zeros(64000, dtype=np.float32), 32000)
    assert kit.main(_argv(idx, tmp / "s")) == 2
    err = capsys.readouterr().err
    assert "silent" in err and str(silent) in err and "simba_k1" in err
    argv = _argv(idx, tmp / "t")
    argv[argv.index("--test") + 1] = "simba_k1_vs_gt"
    with pytest.raises(SystemExit):
        kit.main(argv)
    assert "contains the system name" in capsys.readouterr().err


def test_design_is_balanced_and_never_starts_with_a_check():
    o = design.plan_orders(n_items=7, n_raters=9, per_rater=4, attention_count=3, seed=1)
    assert sorted(set(o.item_counts)) == [5, 6] and sum(o.item_counts) == 36
    for order in o.orders:
        assert order[0][0] == "test" and len(order) == 7
        tests = [i for role, i in order if role == "test"]
        atts = [i for role, i in order if role == "attention"]
        assert len(set(tests)) == 4 and len(set(atts)) == 3
    assert len(set(design.clip_ids(500, 0))) == 500
    assert design.choose_prompts(["b", "a", "c"], 2, 0) == design.choose_prompts(["c", "b", "a"], 2, 0)


def test_every_kit_built_is_kept_in_the_history(world):
    """A rebuilt kit (another seed) replaces kit/ and key.json, but history/<plan sha256[:16]>/ keeps the
    plan and key of every kit, so ratings given with the first one can still be read."""
    import hashlib

    tmp, idx = world
    out = tmp / "listening" / "demo"
    shas = []
    for seed in (3, 4):
        assert kit.main(_argv(idx, out, seed=seed)) == 0
        shas.append(hashlib.sha256((out / "kit" / "plan.json").read_bytes()).hexdigest())
    assert shas[0] != shas[1]
    for sha in shas:
        kept = out / "history" / sha[:16]
        assert hashlib.sha256((kept / "plan.json").read_bytes()).hexdigest() == sha
        assert json.loads((kept / "key.json").read_text())["format"] == "ssmttm-listening-key/1"
        assert (kept / "kit.json").is_file()


def test_the_kit_id_follows_the_audio_under_the_same_ids(world):
    """Regenerated clips under the same seed and settings keep their ids, but plan.json's kit_id (and so the
    plan's hash, which the ratings database is bound to) changes."""
    tmp, idx = world
    assert kit.main(_argv(idx, tmp / "a")) == 0
    wav = tmp / "gen" / "simba_k1" / "sdd_4101.wav"  # a prompt every system has: always in the kit
    _write(wav, _sine(32000, 2.0, 987.0, 0.02), 32000)
    assert kit.main(_argv(idx, tmp / "b")) == 0
    a, b = (json.loads((tmp / n / "kit" / "plan.json").read_text()) for n in ("a", "b"))
    assert len(a["kit_id"]) == 64 and a["kit_id"] != b["kit_id"]
    assert [r["items"] for r in a["raters"]] == [r["items"] for r in b["raters"]]
