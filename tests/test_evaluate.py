"""The evaluate / resynth / report-pages stages on tiny sets built in code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ssmttm import audio, io, settings
from ssmttm.eval import evaluate as ev
from ssmttm.eval.options import EvaluateSettings

SR = 16000


def _settings(bootstrap: int) -> EvaluateSettings:
    """The schema's evaluation defaults on the CPU, with ``bootstrap`` resamples."""
    return settings.resolve(EvaluateSettings, given={"bootstrap": bootstrap, "device": "cpu"})


def _tone(freq: float, seconds: float = 3.0, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.1 * np.sin(2 * np.pi * 2.5 * freq * t)
    return (x + noise * np.random.default_rng(seed).normal(size=t.shape)).astype(np.float32)


def _set(folder: Path, clips: dict[str, np.ndarray], generated: bool, meta: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for cid, x in clips.items():
        audio.write(folder / f"{cid}.wav", x[None], SR)
    if generated:
        ckpt = folder.parent / "ckpt"
        io.write_json(ckpt / "meta.json", meta or {})
        index = {"checkpoint": str(ckpt), "items": [{"audio": f"{c}.wav", "prompt_id": c} for c in clips]}
    else:
        index = {"kind": "reference", "clips": [{"id": c, "file": f"{c}.wav", "ref_id": c} for c in clips]}
    io.write_json(folder / "index.json", index)
    return folder


@pytest.fixture()
def world(tmp_path):
    freqs = {"r0": 220.0, "r1": 330.0, "r2": 440.0, "r3": 550.0, "r4": 660.0, "r5": 770.0}
    ref = _set(tmp_path / "ref", {k: _tone(f, seed=i) for i, (k, f) in enumerate(freqs.items())}, False)
    prompts = tmp_path / "prompts.json"
    io.write_json(prompts, {"name": "t", "prompts": [{"prompt_id": k, "text": f"tone {k}", "ref_id": k}
                                                      for k in freqs]})
    meta = {"experiment": "e", "seed": 2, "step": 100, "variant": "prefix-simba", "preset": "tiny", "kappa": 1,
            "n_params": 123, "flops_6nd": 4.5e9, "measured_flops_total": 5e9}
    gens = {}
    for level in (0.01, 0.1, 0.4):
        gens[level] = _set(tmp_path / f"gen{level}" / "set", {k: _tone(f, noise=level, seed=9)
                                                               for k, f in freqs.items()}, True, meta)
    return tmp_path, ref, prompts, gens


def test_generated_rows_carry_run_and_protocol_columns(world):
    tmp, ref, prompts, gens = world
    rows = ev.evaluate("fd_logmel", "generated", [gens[0.1]], ref, prompts, {}, tmp / "cache", _settings(50))
    (r,) = rows
    assert set(ev.ROW_KEYS) <= set(r)
    assert r["metric"] == "fd_logmel" and r["status"] == "score" and r["model"].startswith("logmel")
    assert (r["experiment"], r["seed"], r["step"], r["params"], r["flops_6nd"]) == ("e", 2, 100, 123, 4.5e9)
    assert r["n"] == 6 and r["n_ref"] == 6 and r["prompt_set"] == "t" and r["lower_is_better"] is True
    assert r["ci_low"] <= r["value"] <= r["ci_high"]


def test_fd_orders_systems_by_how_far_they_are_from_the_reference(world):
    tmp, ref, prompts, gens = world
    values = [ev.evaluate("fd_logmel", "generated", [gens[lv]], ref, prompts, {}, tmp / "cache", _settings(0))[0]
              ["value"] for lv in (0.01, 0.1, 0.4)]
    assert values[0] < values[1] < values[2]
    gt = ev.evaluate("fd_logmel", "ground_truth", [], ref, prompts, {}, tmp / "cache", _settings(0))[0]
    assert gt["system_kind"] == "ground_truth" and gt["n"] == 3 and gt["n_ref"] == 3  # split half


def test_kl_is_zero_on_ground_truth_and_positive_on_noise(world):
    from ssmttm.eval.embedders.passt import build_tiny_passt

    tmp, ref, prompts, gens = world
    w = build_tiny_passt(tmp / "passt.pt")
    models = {"passt": str(w)}
    gt = ev.evaluate("kl_passt", "ground_truth", [], ref, prompts, models, tmp / "cache", _settings(20),
                     pipeline_check=True)[0]
    # audiocraft's epsilon 1e-6: sum p log(p / (p + eps)) ~ -(classes) * eps on identical clips
    assert gt["value"] == pytest.approx(0.0, abs=1e-3) and gt["status"] == ev.PIPELINE_CHECK
    assert gt["kl_epsilon"] == 1e-6 and gt["duration_s"] == pytest.approx(3.0)
    assert gt["checkpoint"] == "passt.pt" and len(gt["checkpoint_sha256"]) == 64 and gt["sample_rate"] == 32000
    noisy = ev.evaluate("kl_passt", "generated", [gens[0.4]], ref, prompts, models, tmp / "cache", _settings(20))[0]
    assert noisy["value"] > 0 and noisy["n"] == 6 and noisy["n_ref"] == 6


def test_resynth_set_scores_as_its_own_system(world, tmp_path):
    from ssmttm.codec.dac import build_tiny_dac
    from ssmttm.eval.resynth import resynthesize

    tmp, ref, prompts, gens = world
    dac = build_tiny_dac(tmp_path / "dac.pth")
    rec = resynthesize(ref, "dac", str(dac), 2, tmp_path / "k2", "cpu")
    assert rec["kind"] == "resynth" and rec["kappa"] == 2 and len(rec["clips"]) == 6
    info = audio.info(tmp_path / "k2" / "r0.wav")
    assert info[0] == 44100 and abs(info[2] - 3.0) < 0.05
    row = ev.evaluate("fd_logmel", "resynth", [tmp_path / "k2"], ref, prompts, {}, tmp / "cache", _settings(0),
                      kappa=2)[0]
    assert row["system_kind"] == "resynth" and row["experiment"] == "resynth_k2" and row["kappa"] == 2
    assert row["value"] > 0
    # the stage as the rule runs it: tokens.codec and evaluation.device as --settings JSON
    from ssmttm.eval.resynth import main

    assert main(["--reference", str(ref), "--codec-weights", str(dac), "--kappa", "1", "--settings",
                 json.dumps({"codec": "dac", "device": "cpu"}), "--out-dir", str(tmp_path / "k1")]) == 0
    assert io.read_json(tmp_path / "k1" / "index.json")["kappa"] == 1


def test_main_names_what_is_missing(world, capsys):
    tmp, ref, prompts, gens = world
    out = tmp / "s.json"
    base = ["--reference", str(ref), "--prompts", str(prompts), "--cache-dir", str(tmp / "c"), "--out", str(out)]
    assert ev.main(["--metric", "kl_passt", "--system", "generated", "--set", str(gens[0.1]), *base]) == 2
    assert not out.exists()
    assert ev.main(["--metric", "fd_logmel", "--system", "generated", *base]) == 2  # no --set
    assert ev.main(["--metric", "fd_logmel", "--system", "generated", "--set", str(gens[0.1]), "--bootstrap", "10",
                    *base]) == 0
    assert json.loads(out.read_text())["rows"][0]["bootstrap"] == 10
    # as the rule runs it: the settings as JSON, every model role in one --model (none here), a boolean check
    assert ev.main(["--metric", "fd_logmel", "--system", "generated", "--set", str(gens[0.1]), str(gens[0.4]),
                    "--model", "--pipeline-check", "true", "--settings", json.dumps({"bootstrap": 5, "device": "cpu"}),
                    *base]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 and {r["bootstrap"] for r in rows} == {5} and rows[0]["status"] == ev.PIPELINE_CHECK
    capsys.readouterr()
    with pytest.raises(SystemExit):
        ev.main(["--metric", "fd_logmel", "--system", "ground_truth", "--bootstrap", "-1", *base])
    assert "--bootstrap / config key evaluation.bootstrap" in capsys.readouterr().err


def test_report_pages_embed_tables_licences_and_audio(world, tmp_path):
    from ssmttm.report.pages import main

    tmp, ref, prompts, gens = world
    io.write_text(tmp_path / "t.md", "| a | b |\n|---|---|\n| 1 | 2 |\n")
    lic = tmp_path / "lic"
    io.write_text(lic / "summary.tsv", "licence\ttracks\nby\t3\n")
    io.write_text(lic / "ATTRIBUTION.md", "# Attribution\n\n- Song by Artist (CC BY)\n")
    assert main(["--table", f"t={tmp_path / 't.md'}", "--audio", f"e={gens[0.1]}", "--prompts", str(prompts),
                 "--report-clips", "2", "--licenses-dir", str(lic), "--out-dir", str(tmp_path / "out")]) == 0
    assert "<table>" in (tmp_path / "out/tables/t.html").read_text()
    page = (tmp_path / "out/audio/e.html").read_text()
    assert page.count("data:audio/wav;base64,") == 2 and "tone r0" in page
    assert "Song by Artist" in (tmp_path / "out/licences.html").read_text()


def test_clips_are_cut_to_the_reference_duration_before_windowed_metrics(tmp_path):
    """862 DAC frames are 10.008 s; the 10.000 s reference of the same audio must get the same PaSST
    windows, so the clip scores KL 0 against it (without the cut: a second, padded window)."""
    from ssmttm.eval.cache import cut, load_audio
    from ssmttm.eval.embedders.passt import SAMPLE_RATE, build_tiny_passt, windows

    sr = 44100
    t = np.arange(862 * 512) / sr  # 10.0078 s
    x = (0.3 * np.sin(2 * np.pi * 330 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))).astype(np.float32)
    ref = tmp_path / "ref"
    ref.mkdir()
    audio.write(ref / "r0.wav", x[None, : 10 * sr], sr)
    io.write_json(ref / "index.json", {"clips": [{"id": "r0", "file": "r0.wav", "ref_id": "r0"}]})
    gen = tmp_path / "gen" / "set"
    gen.mkdir(parents=True)
    audio.write(gen / "p0.wav", x[None], sr)
    io.write_json(gen / "index.json", {"checkpoint": "", "items": [{"audio": "p0.wav", "prompt_id": "p0"}]})
    prompts = tmp_path / "prompts.json"
    io.write_json(prompts, {"name": "t", "prompts": [{"prompt_id": "p0", "text": "a tone", "ref_id": "r0"}]})

    long, short = load_audio(gen / "p0.wav", SAMPLE_RATE), load_audio(ref / "r0.wav", SAMPLE_RATE)
    assert len(windows(long)) == 2 and len(windows(short)) == 1  # the rule alone differs by 8 ms
    assert assert_same_windows(windows(cut(long, SAMPLE_RATE, 10.0)), windows(short))

    models = {"passt": str(build_tiny_passt(tmp_path / "passt.pt"))}
    s = settings.resolve(EvaluateSettings, given={"bootstrap": 0, "device": "cpu", "kl_epsilon": 0.0})
    (row,) = ev.evaluate("kl_passt", "generated", [gen], ref, prompts, models, tmp_path / "cache", s)
    assert row["duration_s"] == pytest.approx(10.0) and row["kl_epsilon"] == 0.0
    assert row["value"] == pytest.approx(0.0, abs=1e-4)


def assert_same_windows(a, b) -> bool:
    assert [w.shape for w in a] == [w.shape for w in b]
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, atol=2e-3)  # the same audio up to the resampler's edge
    return True


def test_embed_job_fills_the_cache_so_score_jobs_load_no_model(world, tmp_path, monkeypatch):
    """evaluate-embed (one job per metric model) embeds every clip and prompt text once; the score jobs
    after it import no model and give the rows a cold score job gives."""
    from ssmttm.eval import embed
    from ssmttm.eval.embedders import clap as C
    from ssmttm.eval.embedders import passt as P
    from ssmttm.eval.options import EmbedSettings

    tmp, ref, prompts, gens = world
    C.build_tiny_roberta(tmp_path / "roberta", seed=0)
    models = {"passt": str(P.build_tiny_passt(tmp_path / "passt.pt")),
              "clap": str(C.build_tiny_clap(tmp_path / "clap.pt", seed=0)), "clap_text": str(tmp_path / "roberta")}
    sets = [gens[0.01], gens[0.4]]
    cold = {m: ev.evaluate(m, "generated", sets, ref, prompts, models, tmp_path / "cold", _settings(20))
            for m in ("kl_passt", "clap_score")}

    es = settings.resolve(EmbedSettings, given={"device": "cpu"})
    for name in ("passt", "clap"):
        s = embed.embed_all(name, models, ref, prompts, sets, [], tmp_path / "warm", es)
        # 6 reference clips + 2 sets x 6 generated clips; 6 prompt texts for the text-audio model
        assert (s["files"], s["computed"], s["cached"], s["skipped"], s["model_loaded"]) == (18, 18, 0, [], True)
        assert s["texts"] == (6 if name == "clap" else 0) and s["protocol"]["model"] == name
    again = embed.embed_all("passt", models, ref, prompts, sets, [], tmp_path / "warm", es)
    assert (again["computed"], again["cached"], again["model_loaded"]) == (0, 18, False)

    def no_load(self):
        raise AssertionError(f"{self.name}: a score job loaded its model although every file was cached")

    for cls in (P.PaSSTEmbedder, C.CLAPEmbedder):
        monkeypatch.setattr(cls, "_load", no_load)
    for metric, rows in cold.items():
        warm = ev.evaluate(metric, "generated", sets, ref, prompts, models, tmp_path / "warm", _settings(20))
        assert len(warm) == len(rows) == 2
        for w, c in zip(warm, rows):
            assert w["value"] == pytest.approx(c["value"], rel=1e-6, abs=1e-7)
            assert {k: w[k] for k in ("n", "n_ref", "checkpoint_sha256", "duration_s")} == \
                   {k: c[k] for k in ("n", "n_ref", "checkpoint_sha256", "duration_s")}
    # a clip the cache does not hold (a new system) still scores: the model is loaded for it
    monkeypatch.undo()
    row = ev.evaluate("kl_passt", "generated", [gens[0.1]], ref, prompts, models, tmp_path / "warm", _settings(0))[0]
    assert row["n"] == 6 and row["value"] > 0


def test_embed_job_refuses_unknown_models_and_a_broken_checkpoint(world, tmp_path, capsys):
    from ssmttm.eval import embed

    tmp, ref, prompts, gens = world
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    out = tmp_path / "e.json"
    base = ["--reference", str(ref), "--prompts", str(prompts), "--set", str(gens[0.1]), "--settings",
            json.dumps({"device": "cpu"}), "--cache-dir", str(tmp_path / "c"), "--out", str(out)]
    with pytest.raises(SystemExit):
        embed.main(["--embedder", "logmel", *base])  # no checkpoint: nothing to load once
    capsys.readouterr()
    with pytest.raises(Exception, match="broken.pt"):
        embed.main(["--embedder", "passt", "--model", f"passt={tmp_path / 'broken.pt'}", *base])
    assert not out.exists()
