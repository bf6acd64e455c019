"""The MusicGen baseline (generate-musicgen): offline loading, our decoding loop against transformers'
``generate``, per-prompt noise, generate's output layout, and named errors. A tiny random-init
MusicGen (the real transformers classes at toy sizes) is built once per module in tmp_path."""

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch

from ssmttm import io, rng, settings, weights
from ssmttm.constants import FRAME_RATE
from ssmttm.errors import SsmttmError
from ssmttm.eval import evaluate
from ssmttm.generate import musicgen as mg
from ssmttm.generate import sampling as smp
from ssmttm.weight_cache import MissingWeightError

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["a calm piano piece with soft strings", "rock",
         "an energetic rock track with electric guitar, bass and driving drums"]

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(folder, receipt) of the tiny MusicGen, fetched into a weights cache like the demo's."""
    root = tmp_path_factory.mktemp("musicgen")
    folder = mg.build_tiny_musicgen(root / "src" / "musicgen_tiny", seed=0)
    weights.fetch("musicgen_tiny", str(folder), root / "weights", licence="CC-BY-NC-4.0 (random init)")
    return folder, root / "weights" / "musicgen_tiny.json"


@pytest.fixture(scope="module")
def loaded(tiny):
    return mg.load_musicgen(tiny[1], "cpu")


@pytest.fixture(scope="module")
def generator(tiny):
    return mg.MusicgenGenerator(tiny[1], "cpu")


def _hf_codes(model, tok, texts, n_frames, guidance_scale):
    """Codes of transformers' greedy ``generate`` (read where it hands them to the audio encoder)."""
    seen = {}
    orig = model.audio_encoder.decode

    def spy(codes, *a, **k):
        seen["codes"] = codes.clone()
        return orig(codes, *a, **k)

    model.audio_encoder.decode = spy
    try:
        inp = tok(texts, padding=True, return_tensors="pt")
        audio = model.generate(**inp, do_sample=False, guidance_scale=guidance_scale,
                               max_new_tokens=n_frames + model.decoder.num_codebooks - 1)
    finally:
        model.audio_encoder.decode = orig
    return seen["codes"][0], audio  # [B, K, T], [B, 1, N]


def _codes(model, tok, texts, n_frames, cfg, seeds):
    return mg.generate_codes(model, [mg.encode_text(model, tok, t) for t in texts], n_frames, cfg, seeds)


# --- loading ------------------------------------------------------------------------------------------
def test_tiny_model_round_trips_through_the_offline_loader(tiny, loaded, tmp_path):
    folder, receipt = tiny
    model, tok, where = loaded
    assert where == io.read_json(receipt)["path"] or str(where) == io.read_json(receipt)["path"]
    c = model.config
    assert (c.audio_encoder.sampling_rate, c.audio_encoder.frame_rate, model.decoder.num_codebooks) == (32000, 50, 4)
    assert c.decoder.vocab_size == 2048 and model.generation_config.pad_token_id == 2048
    assert model.generation_config.top_k == 250 and model.generation_config.guidance_scale == 3.0
    assert hasattr(model, "enc_to_dec_proj")  # text width 32 -> decoder width 16, as 768 -> 1024 for real
    # the same weights from the plain folder and from the receipt; save + load again changes nothing
    m2, tok2, _ = mg.load_musicgen(folder, "cpu")
    model.save_pretrained(str(tmp_path / "again"))
    tok.save_pretrained(str(tmp_path / "again"))
    m3, tok3, _ = mg.load_musicgen(tmp_path / "again", "cpu")
    ref = model.state_dict()
    for other in (m2, m3):
        sd = other.state_dict()
        assert sd.keys() == ref.keys() and all(torch.equal(sd[k], ref[k]) for k in ref)
    assert tok(TEXTS[0])["input_ids"] == tok2(TEXTS[0])["input_ids"] == tok3(TEXTS[0])["input_ids"]
    assert tok.unk_token_id not in tok(TEXTS[0])["input_ids"]
    # the identity recorded in the outputs: the receipt's key and sha256
    assert mg.weights_identity(receipt) == ("musicgen_tiny", io.read_json(receipt)["sha256"])


# --- the decoding loop --------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [3.0, 1.0])
def test_greedy_loop_equals_transformers_generate(loaded, scale):
    model, tok, _ = loaded
    hf, hf_audio = _hf_codes(model, tok, TEXTS, 25, scale)
    ours = _codes(model, tok, TEXTS, 25, smp.SamplingConfig(scale, 1.0, 1), [0, 1, 2])
    assert ours.shape == hf.shape == (3, 4, 25)
    assert torch.equal(ours, hf)
    # our per-prompt decoding gives transformers' audio
    assert np.allclose(mg.decode(model, ours), hf_audio[:, 0].numpy(), atol=1e-5)


def test_delay_pattern_is_ours(loaded):
    """MusicGen's delay pattern is the one ssmttm.pattern defines for our LMs (BOS column, codebook k
    at steps k+1 .. k+T)."""
    from ssmttm import pattern

    model, _, _ = loaded
    start = torch.full((4, 1), 2048)
    _, mask = model.decoder.build_delay_pattern_mask(start, pad_token_id=2048, max_length=7 + 4)
    assert torch.equal(mask.reshape(4, 11) == -1, torch.as_tensor(pattern.valid_mask(4, 7)))


def test_a_prompts_codes_do_not_depend_on_its_batch(loaded):
    model, tok, _ = loaded
    cfg = smp.SamplingConfig(3.0, 1.0, 250)
    seeds = rng.prompt_seeds(0, ["a", "b", "c"], "musicgen")
    batch = _codes(model, tok, TEXTS, 30, cfg, seeds)
    alone = _codes(model, tok, TEXTS[1:2], 30, cfg, seeds[1:2])
    assert torch.equal(batch[1], alone[0])
    reordered = _codes(model, tok, [TEXTS[2], TEXTS[1]], 30, cfg, [seeds[2], seeds[1]])
    assert torch.equal(reordered[1], batch[1]) and torch.equal(reordered[0], batch[2])


def test_different_prompts_get_different_noise(loaded):
    """The same text under two prompt ids: two samples (one seed for every row gave n copies)."""
    model, tok, _ = loaded
    cfg = smp.SamplingConfig(3.0, 1.0, 250)
    seeds = rng.prompt_seeds(0, ["p0", "p1", "p2"], "musicgen")
    codes = _codes(model, tok, [TEXTS[0]] * 3, 30, cfg, seeds)
    assert len({tuple(c.flatten().tolist()) for c in codes}) == 3
    shared = _codes(model, tok, [TEXTS[0]] * 3, 30, cfg, [7] * 3)
    assert len({tuple(c.flatten().tolist()) for c in shared}) == 1
    assert seeds != rng.prompt_seeds(0, ["p0", "p1", "p2"], "lm")  # not our LM's noise either


def test_run_writes_identical_audio_alone_and_in_a_batch(generator, tmp_path):
    cfg = smp.SamplingConfig(3.0, 1.0, 250)
    recs = [{"prompt_id": f"q{i}", "text": t} for i, t in enumerate(TEXTS)]
    generator.run(recs[1:2], tmp_path / "alone", 0.6, cfg, seed=5)
    generator.run(recs, tmp_path / "batch", 0.6, cfg, seed=5, batch_size=3)
    alone, batched = sf.read(str(tmp_path / "alone" / "q1.wav"))[0], sf.read(str(tmp_path / "batch" / "q1.wav"))[0]
    assert np.array_equal(alone, batched) and np.abs(alone).max() > 0
    others = [sf.read(str(tmp_path / "batch" / f"q{i}.wav"))[0] for i in (0, 2)]
    assert not any(np.array_equal(alone, o) for o in others)


# --- the stage ----------------------------------------------------------------------------------------
def _prompt_set(tmp_path):
    path = tmp_path / "prompts" / "demo.json"
    io.write_json(path, {"name": "demo", "options": {}, "prompts": [
        {"prompt_id": "calm", "text": TEXTS[0], "ref_id": "r1"},
        {"prompt_id": "rock", "text": TEXTS[2], "ref_id": None},
        {"prompt_id": "short", "text": TEXTS[1], "ref_id": "r2"}]})
    return path


def test_stage_writes_generates_layout_and_evaluate_reads_it(tiny, tmp_path):
    from ssmttm import cli

    prompts = _prompt_set(tmp_path)
    out = tmp_path / "generate" / "musicgen_tiny" / "seed0" / "demo"
    rc = cli.main(["generate-musicgen", "--prompts", str(prompts), "--weights", str(tiny[1]), "--out-dir", str(out),
                   "--seconds", "0.5", "--device", "cpu", "--batch-size", "2", "--seed", "4"], own_numba_cache=False)
    assert rc == 0
    index = io.read_json(out / "index.json")
    assert [it["prompt_id"] for it in index["items"]] == ["calm", "rock", "short"] and index["rejected"] == []
    assert index["system_kind"] == "musicgen" and index["prompt_set"] == "demo" and index["stages"] == "single-stage"
    assert index["weights"] == "musicgen_tiny" and index["checkpoint_sha256"] == io.read_json(tiny[1])["sha256"]
    assert (index["cfg_scale"], index["temperature"], index["top_k"]) == (3.0, 1.2, 250)  # generate's defaults
    assert index["sample_rate"] == 32000 and index["n_tokens"] == 25 and index["seconds"] == 0.5
    for it in index["items"]:
        assert set(it) == {"prompt_id", "prompt", "audio", "sidecar"} and it["audio"] == f"{it['prompt_id']}.wav"
        info = sf.info(str(out / it["audio"]))
        assert info.samplerate == 32000 and info.channels == 1 and info.frames == 25 * 640
        side = io.read_json(out / it["sidecar"])
        assert side["prompt"] == it["prompt"] and side["seed"] == 4 and side["sample"] == 0
        assert side["lm_seed"] == rng.sample_seed(4, it["prompt_id"], 0, "musicgen")
        for key in ("checkpoint", "checkpoint_sha256", "kappa", "cfg_scale", "temperature", "top_k", "n_tokens",
                    "seconds", "sample_rate", "system_kind", "rng"):
            assert key in side, key
    # the evaluation reads it unchanged: items with their prompt text and reference id
    items, meta = evaluate.generated_items(out, evaluate.read_prompts(prompts))
    assert [(i.prompt_id, i.ref_id) for i in items] == [("calm", "r1"), ("rock", None), ("short", "r2")]
    assert all(i.audio.is_file() for i in items) and items[0].text == TEXTS[0]
    assert meta["system_kind"] == "musicgen" and meta["stages"] == "single-stage" and meta["kappa"] == 4


def test_settings_are_the_config_keys(capsys):
    # every field is a config key (no second default); which keys of generate / systems.<name> are read
    # elsewhere (prompt set, weights receipt, kind, ...) is the rules' side
    fields = settings.setting_fields(mg.MusicgenSettings)
    assert {f.name for f in fields} == {f.name for f in dataclasses.fields(mg.MusicgenSettings)} == {
        "n_tokens", "seconds", "cfg_scale", "temperature", "top_k", "seed", "batch_size", "device", "format"}
    assert all(f.default is dataclasses.MISSING for f in fields)
    keys = settings.key_schemas(mg.MusicgenSettings.SCHEMA_NODES)
    assert keys["cfg_scale"][0] == "generate.cfg_scale" and keys["seconds"][0] == "systems.*.seconds"
    s = settings.resolve(mg.MusicgenSettings)
    assert s.seconds is None and mg.clip_seconds(s) == s.n_tokens / FRAME_RATE
    assert mg.clip_seconds(dataclasses.replace(s, seconds=10.0)) == 10.0
    with pytest.raises(SystemExit):
        mg.main(["--help"])
    text = capsys.readouterr().out
    for f in settings.setting_fields(mg.MusicgenSettings):
        assert settings.flag(f.name) in text
    with pytest.raises(SystemExit) as exc:
        mg.parse_args(["--prompts", "p.json", "--weights", "w", "--out-dir", "o", "--seconds", "-1"])
    assert exc.value.code == 2 and "config key systems.*.seconds" in capsys.readouterr().err


def test_bad_weights_are_named_errors_and_exit_2(tiny, tmp_path, capsys):
    from ssmttm import cli
    from ssmttm.text.encoder import build_tiny_t5

    missing = tmp_path / "nowhere"
    with pytest.raises(MissingWeightError, match="nowhere"):
        mg.load_musicgen(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(mg.MusicgenError, match=f"{empty}.*config.json"):
        mg.load_musicgen(empty)
    t5 = build_tiny_t5(tmp_path / "t5", seed=0)  # a transformers folder of another model
    with pytest.raises(mg.MusicgenError, match=f"{t5}.*'t5'"):
        mg.load_musicgen(t5)
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):  # no model.safetensors
        (broken / f).write_bytes((tiny[0] / f).read_bytes())
    with pytest.raises(mg.MusicgenError, match=f"{broken}: cannot load"):
        mg.load_musicgen(broken)
    assert issubclass(mg.MusicgenError, SsmttmError)
    prompts = _prompt_set(tmp_path)
    for bad in (missing, empty, broken):
        rc = cli.main(["generate-musicgen", "--prompts", str(prompts), "--weights", str(bad),
                       "--out-dir", str(tmp_path / "o"), "--device", "cpu"], own_numba_cache=False)
        assert rc == 2 and str(bad) in capsys.readouterr().err
    assert not (tmp_path / "o" / "index.json").exists()
