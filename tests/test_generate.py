"""Generation: sampling, cached CFG-batched decoding of the delay pattern, the generate stage."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from ssmttm import io
from ssmttm.constants import CODEBOOK_SIZE, SPECIAL_TOKEN
from ssmttm.generate import generate as gen
from ssmttm.generate import prompts as pr
from ssmttm.generate import sampling as smp
from ssmttm.models import VARIANTS, build_lm
from ssmttm.models.checkpoint import CheckpointError, load_model, resolve_checkpoint, save_model
from ssmttm.models.config import from_preset

TEXT_DIM = 32  # the tiny T5's d_model


pytestmark = pytest.mark.usefixtures("one_thread")


def _save_tiny(path, variant="prefix-simba", kappa=2, seed=0, meta=None):
    torch.manual_seed(seed)
    lm = build_lm(from_preset("tiny", variant, n_codebooks=kappa, text_dim=TEXT_DIM, mamba_backend="torch"))
    return save_model(path, lm, meta if meta is not None else {"step": 7, "variant": variant})


def _seeds(seed, n):
    """Per-row seeds of prompts p0..p{n-1} (ssmttm.rng: one generator per prompt and sample)."""
    return smp.prompt_seeds(seed, [f"p{i}" for i in range(n)])


def _states(n=2, seed=0):
    rng = np.random.default_rng(seed)
    cond = [rng.standard_normal((L, TEXT_DIM)).astype(np.float32) for L in (5, 3, 7)[:n]]
    return cond, rng.standard_normal((1, TEXT_DIM)).astype(np.float32)


# --- sampling ----------------------------------------------------------------------------------------
def test_top_k_keeps_exactly_k():
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 1024)
    f = smp.top_k_filter(logits, 7)
    assert (torch.isfinite(f).sum(-1) == 7).all()
    top = torch.topk(logits, 7, dim=-1).indices
    gens = smp.make_generators([1] * 3)
    seen = torch.stack([smp.sample(logits, 5.0, 7, gens) for _ in range(300)])  # [300, 3, 2]
    for r in range(3):
        for k in range(2):
            got = set(seen[:, r, k].tolist())
            assert got <= set(top[r, k].tolist())
            assert len(got) == 7  # temperature 5: all k candidates appear in 300 draws
    assert torch.equal(smp.top_k_filter(logits, 0), logits)


def test_temperature_to_zero_is_argmax_and_sampling_matches_probabilities():
    torch.manual_seed(1)
    logits = torch.randn(4, 3, 1024)
    assert torch.equal(smp.sample(logits, 1e-6, 0, smp.make_generators([0] * 4)), logits.argmax(-1))
    assert torch.equal(smp.sample(logits, 0.0, 250), logits.argmax(-1))
    assert torch.equal(smp.sample(logits, 1.2, 1), logits.argmax(-1))
    # empirical frequencies follow softmax(logits / T) over 3 candidates
    lg = torch.tensor([[2.0, 1.0, 0.0] + [-1e9] * 5])
    draws = torch.stack([smp.sample(lg, 1.0, 0, smp.make_generators([s] * 1)) for s in range(4000)]).flatten()
    freq = torch.bincount(draws, minlength=3)[:3].float() / 4000
    assert torch.allclose(freq, torch.softmax(lg[0, :3], 0), atol=0.03)


def test_cfg_combine_formula():
    c, u = torch.tensor([1.0, 4.0]), torch.tensor([2.0, 1.0])
    assert torch.allclose(smp.cfg_combine(c, u, 3.0), u + 3.0 * (c - u))
    assert torch.allclose(smp.cfg_combine(c, u, 3.0), torch.tensor([-1.0, 10.0]))
    assert torch.equal(smp.cfg_combine(c, u, 1.0), c)
    with pytest.raises(ValueError):
        smp.cfg_combine(c, u[:1], 3.0)


def test_seeded_determinism_per_row():
    logits = torch.randn(2, 4, 1024)
    a = smp.sample(logits, 1.2, 250, smp.make_generators([3] * 2))
    b = smp.sample(logits, 1.2, 250, smp.make_generators([3] * 2))
    c = smp.sample(logits, 1.2, 250, smp.make_generators([4] * 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # a row's draw does not depend on the other rows of its batch
    solo = smp.sample(logits[1:], 1.2, 250, smp.make_generators([3] * 1))
    assert torch.equal(solo[0], a[1])


def test_seeds_are_per_prompt_and_sample_and_stream():
    from ssmttm import rng

    a = rng.prompt_seeds(0, ["p0", "p1", "p2"])
    assert len(set(a)) == 3  # different prompts, different seeds
    assert a == rng.prompt_seeds(0, ["p0", "p1", "p2"]) and a[1:] == rng.prompt_seeds(0, ["p1", "p2"])
    assert a != rng.prompt_seeds(1, ["p0", "p1", "p2"])
    assert rng.sample_seed(0, "p0", 1) != a[0] and rng.sample_seed(0, "p0", 0, "refiner") != a[0]
    assert all(0 <= x < 2**63 for x in a)
    with pytest.raises(TypeError, match="one seed per row"):
        rng.make_generators(3)


def test_different_prompts_get_different_noise_even_when_the_text_is_ignored(tmp_path):
    """With the same text states for every row (a model that ignores its prompt), per-prompt
    generators still give each prompt its own sample; one seed shared by all rows (the old scheme)
    gives n copies of one sample."""
    _save_tiny(tmp_path / "ck", "prefix-simba", kappa=2)
    lm, _ = load_model(tmp_path / "ck", "cpu")
    cond, unc = _states(1)
    same = cond * 4
    cfg = smp.SamplingConfig(3.0, 1.2, 250)
    codes = gen.revert_codes(gen.generate_cached(lm, same, unc, 12, cfg, _seeds(0, 4)))
    rows = {tuple(c.flatten().tolist()) for c in codes}
    assert len(rows) == 4
    shared = gen.revert_codes(gen.generate_cached(lm, same, unc, 12, cfg, [7] * 4))
    assert len({tuple(c.flatten().tolist()) for c in shared}) == 1


def test_sampling_config_validation():
    with pytest.raises(smp.SamplingError, match="--temperature"):
        smp.SamplingConfig(3.0, -1, 250)
    with pytest.raises(smp.SamplingError, match="--top-k"):
        smp.SamplingConfig(3.0, 1.2, -3)
    assert smp.SamplingConfig(3.0, 0, 250).greedy


# --- decoding ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_generation_every_variant(tmp_path, variant):
    kappa, n = 3, 10
    _save_tiny(tmp_path / "ck", variant, kappa=kappa)
    lm, _ = load_model(tmp_path / "ck", "cpu", kappa=kappa)
    cond, unc = _states(2)
    cfg = smp.SamplingConfig(3.0, 1.2, 250)
    seq = gen.generate_cached(lm, cond, unc, n, cfg, _seeds(0, len(cond)))
    assert seq.shape == (2, kappa, n + kappa)
    assert (seq[:, :, 0] == SPECIAL_TOKEN).all()  # BOS column
    from ssmttm import pattern

    filler = ~pattern.valid_mask(kappa, n)
    assert (seq[:, torch.from_numpy(filler)] == SPECIAL_TOKEN).all()
    codes = gen.revert_codes(seq)
    assert codes.shape == (2, kappa, n)
    assert int(codes.min()) >= 0 and int(codes.max()) < CODEBOOK_SIZE
    assert torch.equal(codes, gen.revert_codes(gen.generate_cached(lm, cond, unc, n, cfg, _seeds(0, len(cond)))))
    assert not torch.equal(codes, gen.revert_codes(gen.generate_cached(lm, cond, unc, n, cfg, _seeds(1, len(cond)))))


@pytest.mark.parametrize("variant", ["prefix-simba", "cross-transformer"])
def test_cached_equals_naive_full_recompute(tmp_path, variant):
    _save_tiny(tmp_path / "ck", variant, kappa=2)
    lm, _ = load_model(tmp_path / "ck", "cpu")
    cond, unc = _states(3)
    greedy = smp.SamplingConfig(cfg_scale=3.0, temperature=0.0, top_k=1)
    a = gen.generate_cached(lm, cond, unc, 16, greedy, _seeds(0, len(cond)))
    b = gen.generate_naive(lm, cond, unc, 16, greedy, _seeds(0, len(cond)))
    assert torch.equal(a, b)
    # and with the paper's sampling: same seed, same per-row noise -> same tokens
    cfg = smp.SamplingConfig(3.0, 1.2, 250)
    assert torch.equal(gen.generate_cached(lm, cond, unc, 12, cfg, _seeds(5, 3)),
                       gen.generate_naive(lm, cond, unc, 12, cfg, _seeds(5, 3)))


def test_cfg_one_lm_call_per_step_with_2b_rows(tmp_path, monkeypatch):
    _save_tiny(tmp_path / "ck", "prefix-simba", kappa=2)
    lm, _ = load_model(tmp_path / "ck", "cpu")
    calls = []
    real_step, real_prefill = lm.step, lm.prefill
    monkeypatch.setattr(lm, "step", lambda x, c: calls.append(("step", x.shape[0])) or real_step(x, c))
    monkeypatch.setattr(lm, "prefill", lambda c: calls.append(("prefill", c.pos.shape[0])) or real_prefill(c))
    monkeypatch.setattr(lm, "forward", lambda *a, **k: pytest.fail("full forward during cached decoding"))
    cond, unc = _states(3)
    n, kappa = 9, 2
    gen.generate_cached(lm, cond, unc, n, smp.SamplingConfig(3.0, 1.2, 250), _seeds(0, len(cond)))
    assert calls[0] == ("prefill", 6)
    assert calls[1:] == [("step", 6)] * (n + kappa - 1)


def test_oov_tokens_fail_clearly(tmp_path, monkeypatch):
    _save_tiny(tmp_path / "ck", "prefix-simba", kappa=2)
    lm, _ = load_model(tmp_path / "ck", "cpu")
    cond, unc = _states(1)
    monkeypatch.setattr(smp, "sample", lambda logits, *a, **k: torch.full(logits.shape[:-1], 1030))
    with pytest.raises(gen.GenerationError, match="out-of-vocabulary token id 1030"):
        gen.generate_cached(lm, cond, unc, 5, smp.SamplingConfig(3.0, 1.2, 250), _seeds(0, len(cond)))
    bad = torch.zeros(1, 2, 5, dtype=torch.long)
    bad[0, 1, 3] = SPECIAL_TOKEN
    with pytest.raises(gen.GenerationError, match="out-of-vocabulary token id 1024"):
        gen.check_codes(bad, CODEBOOK_SIZE, "codes given to codec dac")


def test_resolve_checkpoint_from_run_dir(tmp_path):
    ck = _save_tiny(tmp_path / "run" / "ckpt" / "step_0000007")
    assert resolve_checkpoint(ck) == ck
    io.write_text(tmp_path / "run" / "ckpt" / "last", "step_0000007\n")
    assert resolve_checkpoint(tmp_path / "run") == ck
    io.write_text(tmp_path / "run" / "ckpt" / "last", "step_0000099\n")
    with pytest.raises(CheckpointError, match=r"^--checkpoint .*step_0000099"):
        resolve_checkpoint(tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"^refiner .*no ckpt/last file"):
        resolve_checkpoint(tmp_path / "nowhere", label="refiner")


# --- prompts -----------------------------------------------------------------------------------------
def test_prompt_sets(tmp_path):
    assert pr.load_prompt_set("demo", prompts=["a", "b"]) == [("p000", "a"), ("p001", "b")]
    assert len(pr.load_prompt_set("demo")) == len(pr.DEMO_PROMPTS)
    (tmp_path / "p.txt").write_text("# comment\npiano\n\nrock song\n")
    assert pr.load_prompt_set("file", prompts_file=tmp_path / "p.txt") == [("p000", "piano"), ("p001", "rock song")]
    (tmp_path / "p.csv").write_text("prompt_id,caption\nx1,jazz\nx2,\"soft, calm\"\n")
    assert pr.read_prompts_file(tmp_path / "p.csv") == [("x1", "jazz"), ("x2", "soft, calm")]
    (tmp_path / "p.yaml").write_text("prompts:\n  - {id: a1, text: metal}\n  - folk\n")
    assert pr.read_prompts_file(tmp_path / "p.yaml") == [("a1", "metal"), ("p001", "folk")]
    (tmp_path / "p.json").write_text(json.dumps({"k1": "x", "k2": "y"}))
    assert pr.read_prompts_file(tmp_path / "p.json") == [("k1", "x"), ("k2", "y")]
    (tmp_path / "bad.json").write_text(json.dumps({"../evil": "x"}))
    with pytest.raises(pr.PromptError, match="not a safe file name"):
        pr.read_prompts_file(tmp_path / "bad.json")
    (tmp_path / "dup.json").write_text(json.dumps([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]))
    with pytest.raises(pr.PromptError, match="'a' appears twice"):
        pr.read_prompts_file(tmp_path / "dup.json")
    with pytest.raises(pr.PromptError, match="--prompts-file"):
        pr.load_prompt_set("file")
    with pytest.raises(pr.PromptError, match="unknown"):
        pr.load_prompt_set("musiccapz")


# --- the stage end to end ---------------------------------------------------------------------------
def _argv(ck, receipts, out, *extra):
    dac, t5 = receipts
    return ["--checkpoint", str(ck), "--codec", "dac", "--codec-weights", str(dac), "--text-encoder", str(t5),
            "--n-tokens", "40", "--device", "cpu", "--out-dir", str(out), *extra]


def test_stage_end_to_end(tmp_path, receipts):
    ck = _save_tiny(tmp_path / "run" / "ckpt" / "step_0000007", kappa=2)
    io.write_text(tmp_path / "run" / "ckpt" / "last", "step_0000007")
    out = tmp_path / "gen" / "demo"
    rc = gen.main(_argv(tmp_path / "run", receipts, out, "--prompt", "a calm piano piece",
                        "--prompt", "an energetic rock track", "--seed", "3", "--batch-size", "1"))
    assert rc == 0
    index = io.read_json(out / "index.json")
    assert [it["prompt_id"] for it in index["items"]] == ["p000", "p001"] and index["rejected"] == []
    for it in index["items"]:
        info = sf.info(str(out / it["audio"]))
        assert info.samplerate == 44100 and info.channels == 1 and info.frames == 40 * 512
        side = io.read_json(out / it["sidecar"])
        for key in ("prompt", "prompt_id", "seed", "checkpoint", "checkpoint_sha256", "kappa", "cfg_scale",
                    "temperature", "top_k", "n_tokens", "seconds", "codec", "decode_kappa"):
            assert key in side, key
        assert side["kappa"] == side["decode_kappa"] == 2 and side["seed"] == 3 and side["n_tokens"] == 40
        assert side["checkpoint_sha256"] == io.sha256_file(ck / "model.safetensors")
        assert side["cfg_scale"] == 3.0 and side["temperature"] == 1.2 and side["top_k"] == 250
        assert abs(side["seconds"] - 40 / (44100 / 512)) < 1e-6
    a = sf.read(str(out / "p000.wav"))[0]
    assert np.abs(a).max() > 0 and not np.allclose(a, sf.read(str(out / "p001.wav"))[0])
    # same seed, batched differently -> the same audio (per-prompt generators)
    out2 = tmp_path / "gen2"
    assert gen.main(_argv(ck, receipts, out2, "--prompt", "a calm piano piece", "--prompt",
                          "an energetic rock track", "--seed", "3", "--batch-size", "2")) == 0
    assert np.allclose(sf.read(str(out2 / "p000.wav"))[0], a, atol=1e-4)


def _with_states(argv: list[str], states) -> list[str]:
    """generate's argv with --text-encoder <t5> swapped for --text-states <states>."""
    i = argv.index("--text-encoder")
    return argv[:i] + ["--text-states", str(states)] + argv[i + 2:]


def test_prompt_states_give_the_audio_of_the_encoder(tmp_path, receipts, capsys):
    """prompt-embed encodes a prompt set once; generate --text-states then writes byte for byte the audio
    generate --text-encoder writes, and refuses states that cannot serve its prompts or checkpoint."""
    from ssmttm.generate import prompt_embed as pe
    from ssmttm.models.config import COMPAT_PRESETS

    ck = _save_tiny(tmp_path / "ck", kappa=2)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a calm piano piece\nan energetic rock track\na calm piano piece\n")
    states = tmp_path / "states"
    embed = ["--prompts-file", str(prompts), "--prompt-set", "file", "--text-encoder", str(receipts[1]),
             "--device", "cpu", "--out-dir", str(states)]
    assert pe.main([*embed, "--max-length", "256"]) == 0
    meta = io.read_json(states / "meta.json")
    assert meta["max_length"] == 256 and meta["n_unique"] == 2 and meta["n_clips"] == 3
    assert meta["weights_sha256"] == io.read_json(receipts[1])["sha256"]
    common = ["--prompt-set", "file", "--prompts-file", str(prompts), "--seed", "3", "--batch-size", "2"]
    assert gen.main(_argv(ck, receipts, tmp_path / "enc", *common)) == 0
    assert gen.main(_with_states(_argv(ck, receipts, tmp_path / "st", *common), states)) == 0
    for pid in ("p000", "p001", "p002"):
        assert (tmp_path / "st" / f"{pid}.wav").read_bytes() == (tmp_path / "enc" / f"{pid}.wav").read_bytes()
    a, b = io.read_json(tmp_path / "enc" / "index.json"), io.read_json(tmp_path / "st" / "index.json")
    assert (a["text_encoder"], a["text_encoder_sha256"]) == (b["text_encoder"], b["text_encoder_sha256"])
    capsys.readouterr()
    # states of another prompt set: the generate job fails naming the folder and the prompt
    other = tmp_path / "q.txt"
    other.write_text("a dark ambient drone\n")
    argv = _with_states(_argv(ck, receipts, tmp_path / "q", "--prompt-set", "file", "--prompts-file", str(other)),
                        states)
    assert gen.main(argv) == 2
    assert f"{states} holds no states for prompt 'a dark ambient drone'" in capsys.readouterr().err
    # prompts cut at another length than the checkpoint's captions were
    ck8 = _save_tiny(tmp_path / "ck8", kappa=2, meta={"step": 7, "variant": "prefix-simba",
                                                     "text_encoder": {"key": "t5_tiny", "max_length": 8}})
    with pytest.raises(gen.GenerationError, match=r"cut at 256 T5 tokens but checkpoint .*ck8 was trained on 8"):
        gen.Generator(ck8, "dac", receipts[0], device="cpu", text_states=states)
    # an imported LM that keeps padded T5 states needs the encoder itself
    torch.manual_seed(0)
    padded = build_lm(from_preset("tiny", "prefix-simba", n_codebooks=2, text_dim=TEXT_DIM, mamba_backend="torch",
                                  compat=dict(COMPAT_PRESETS["ssm-ttm"])))
    save_model(tmp_path / "ckp", padded, {"step": 7, "variant": "prefix-simba"})
    with pytest.raises(gen.GenerationError, match="padding kept: generate it with --text-encoder"):
        gen.Generator(tmp_path / "ckp", "dac", receipts[0], device="cpu", text_states=states)
    with pytest.raises(gen.GenerationError, match="not both or neither"):
        gen.Generator(ck, "dac", receipts[0], receipts[1], "cpu", text_states=states)


def test_a_prompts_output_does_not_depend_on_its_batch_neighbours(tmp_path, receipts):
    ck = _save_tiny(tmp_path / "ck", kappa=2)
    g = gen.Generator(ck, "dac", receipts[0], receipts[1], "cpu")
    cfg = smp.SamplingConfig(3.0, 1.2, 250)
    g.run([("rock", "an energetic rock track")], tmp_path / "alone", 20, cfg, seed=3)
    g.run([("jazz", "a smooth jazz trio"), ("rock", "an energetic rock track"), ("x", "noise")], tmp_path / "batch",
          20, cfg, seed=3, batch_size=3)
    alone, batched = sf.read(str(tmp_path / "alone" / "rock.wav"))[0], sf.read(str(tmp_path / "batch" / "rock.wav"))[0]
    assert np.allclose(alone, batched, atol=1e-4)
    side = io.read_json(tmp_path / "batch" / "rock.json")
    assert side["lm_seed"] == smp.prompt_seeds(3, ["rock"])[0] and side["sample"] == 0
    # the same prompt text under another id is another sample
    g.run([("rock2", "an energetic rock track")], tmp_path / "other", 20, cfg, seed=3)
    assert not np.allclose(sf.read(str(tmp_path / "other" / "rock2.wav"))[0], alone, atol=1e-4)


def test_stage_errors(tmp_path, receipts, capsys):
    ck = _save_tiny(tmp_path / "ck", kappa=2)
    with pytest.raises(CheckpointError, match="kappa=2 codebooks, but kappa=3"):
        gen.Generator(ck, "dac", receipts[0], receipts[1], "cpu", kappa=3)
    assert gen.main(_argv(ck, receipts, tmp_path / "o", "--kappa", "3")) == 2
    assert "kappa=3 was requested" in capsys.readouterr().err  # logged to stderr, naming the checkpoint
    big = _save_tiny(tmp_path / "ck5", kappa=5)
    with pytest.raises(gen.GenerationError, match="kappa=5 codebooks but codec dac .* has only 4"):
        gen.Generator(big, "dac", receipts[0], receipts[1], "cpu")
    wrong = _save_tiny(tmp_path / "ckw", kappa=2, meta={"codec": {"key": "dac_44khz", "sha256": "ab" * 32}})
    with pytest.raises(gen.GenerationError, match="codec tokens of sha256 abab"):
        gen.Generator(wrong, "dac", receipts[0], receipts[1], "cpu")
    g = gen.Generator(ck, "dac", receipts[0], receipts[1], "cpu")
    codes = torch.zeros(1, 2, 4, dtype=torch.long)
    codes[0, 0, 2] = 1500
    with pytest.raises(gen.GenerationError, match="out-of-vocabulary token id 1500"):
        g.decode(codes)
    with pytest.raises(SystemExit):
        gen.main(_argv(ck, receipts, tmp_path / "o", "--temperature", "-1"))


def test_bench_runs_and_checks_equality(repo, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("generation_speed", repo / "bench" / "generation_speed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rc = bench.main(["--d-model", "64", "--ssm-layers", "2", "--batches", "1", "2", "--n-tokens", "6",
                     "--positions", "4", "10", "--window", "2", "--greedy-tokens", "8", "--threads", "1",
                     "--rounds", "5"])
    lines = capsys.readouterr().out.strip().splitlines()
    figures = dict(kv.split("=") for kv in lines[-1].split())
    assert rc == 0 and lines[0].startswith("machine: ") and figures["greedy_equal"] == "True"
    for key in ("tok_s_ssm_b1", "tok_s_transformer_b2", "ssm_over_transformer_tok_s_b2", "lat_ms_ssm_p10",
                "ssm_over_transformer_latency_p4", "ssm_latency_10_over_4", "transformer_latency_10_over_4"):
        assert float(figures[key]) > 0, key


def test_prompt_set_stage_round_trip(tmp_path):
    out = tmp_path / "demo.json"
    prompts = json.dumps({"p0": "calm piano", "p1": "rock"})
    assert pr.main(["--prompt-set", "demo", "--prompts", prompts, "--out", str(out)]) == 0
    assert pr.load_prompt_set("demo", prompts_file=out) == [("p0", "calm piano"), ("p1", "rock")]
    assert pr.main(["--out", str(tmp_path / "d.json")]) == 0  # schema defaults: the built-in demo set
    assert pr.read_prompts_file(tmp_path / "d.json") == pr.DEMO_PROMPTS
    with pytest.raises(SystemExit):
        pr.main(["--prompts", "{not json", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit):  # a prompt id becomes a file name: the schema's name pattern
        pr.main(["--prompts", json.dumps({"../p": "x"}), "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


def test_one_job_samples_several_checkpoints(tmp_path, receipts, capsys):
    a = _save_tiny(tmp_path / "ckpt" / "step_0000010", seed=0, meta={"step": 10, "variant": "prefix-simba"})
    b = _save_tiny(tmp_path / "ckpt" / "step_0000020", seed=1, meta={"step": 20, "variant": "prefix-simba"})
    argv = _argv(a, receipts, tmp_path / "g10", "--checkpoint", str(b), "--out-dir", str(tmp_path / "g20"),
                 "--prompt", "a calm piano piece", "--seed", "3")
    assert gen.main(argv) == 0
    i10, i20 = io.read_json(tmp_path / "g10/index.json"), io.read_json(tmp_path / "g20/index.json")
    assert (i10["step"], i20["step"]) == (10, 20)
    assert i10["checkpoint_sha256"] == io.sha256_file(a / "model.safetensors") != i20["checkpoint_sha256"]
    # the second checkpoint samples exactly as it would in a job of its own
    assert gen.main(_argv(b, receipts, tmp_path / "alone", "--prompt", "a calm piano piece", "--seed", "3")) == 0
    assert np.allclose(sf.read(str(tmp_path / "g20/p000.wav"))[0], sf.read(str(tmp_path / "alone/p000.wav"))[0])
    with pytest.raises(SystemExit):  # one --out-dir per --checkpoint
        gen.main(_argv(a, receipts, tmp_path / "x", "--checkpoint", str(b)))


def test_prompts_are_truncated_at_the_trained_max_length(tmp_path, receipts, caplog):
    """text.max_length is recorded in the checkpoint by training (the text store's): generation truncates
    prompts at that length, whatever the stage's own default, and a different requested value fails
    naming both."""
    meta = {"step": 7, "variant": "prefix-simba", "text_encoder": {"key": "t5_tiny", "max_length": 8}}
    ck = _save_tiny(tmp_path / "ck8", kappa=2, meta=meta)
    long_prompt = " ".join(["piano"] * 40)
    g = gen.Generator(ck, "dac", receipts[0], receipts[1], "cpu")
    assert g.max_text_length == 8
    with caplog.at_level("WARNING"):
        states = g.encode_texts([long_prompt])
    assert states[long_prompt].shape[0] == 8 and "truncated to 8 tokens" in caplog.text
    assert gen.Generator(ck, "dac", receipts[0], receipts[1], "cpu", max_text_length=8).max_text_length == 8
    with pytest.raises(gen.GenerationError, match=r"--max-length 256 \(config text.max_length\) differs from the 8"):
        gen.Generator(ck, "dac", receipts[0], receipts[1], "cpu", max_text_length=256)
    out = tmp_path / "o"
    assert gen.main(_argv(ck, receipts, out, "--prompt", long_prompt, "--n-tokens", "4")) == 0
    assert io.read_json(out / "index.json")["text_max_length"] == 8
    assert gen.main(_argv(ck, receipts, tmp_path / "o2", "--prompt", "x", "--max-length", "64")) == 2


def test_a_checkpoint_of_another_code_layout_is_refused(tmp_path, receipts):
    from ssmttm import pattern
    from ssmttm.train.loop import Trainer

    assert Trainer.PATTERN == pattern.NAME  # what training records is what generation decodes
    ck = _save_tiny(tmp_path / "ck", kappa=2, meta={"step": 7, "variant": "prefix-simba", "pattern": "aligned"})
    with pytest.raises(gen.GenerationError, match="laid out as 'aligned'"):
        gen.Generator(ck, "dac", receipts[0], receipts[1], "cpu")
