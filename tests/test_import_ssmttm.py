"""import-checkpoint --format ssm-ttm: the authors' Prefix SiMBA checkpoints as LMs of this package.

A tiny checkpoint is built here in the authors' exact Lightning layout (github.com/Lonian6/SSM-TTM:
``music_model.`` keys of simba.py's Text_Mmamba, ``text_encoder.`` keys of the T5 encoder, a
config.json as main_pl.py writes it), converted, loaded back through our loader, and its logits are
compared with :func:`their_forward`, a plain-torch transcription of their forward written from
simba.py (Text_Mmamba.forward, M_F_Block, MambaLayer, FFLayer, create_sin_embedding) and, for the
mamba layer, from mamba_ssm's Mamba2 with its default options (a step-by-step recurrence, not our
chunked module). Their condition_linear is 768 -> d_model; here it takes the tiny T5's 32-d states,
the only size that differs from their code (the converter reads it from the tensor).
"""

import argparse
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssmttm import io, pattern, weights
from ssmttm.constants import CODEBOOK_SIZE, SPECIAL_TOKEN, VOCAB_SIZE
from ssmttm.errors import CheckpointError
from ssmttm.generate import generate as gen
from ssmttm.generate import sampling as smp
from ssmttm.generate.compat import compat_rows, prompt_states
from ssmttm.models.checkpoint import load_model, resolve_checkpoint
from ssmttm.models.config import COMPAT_PRESETS, CompatConfig, LMConfig

pytestmark = pytest.mark.usefixtures("one_thread")

D, LAYERS, K, D_STATE, TEXT_DIM = 64, 2, 2, 16, 32  # headdim 64 (mamba_ssm's default): 2 heads
HEADDIM = 64


# --- the authors' layout ------------------------------------------------------------------------------
def their_config(**model):
    """config.json as main_pl.py:106-157 writes it."""
    m = {"layers": LAYERS, "vocab_size": 1024 + 1, "codec_layer": K, "d_model": D, "drop_p": 0.3,
         "d_state": D_STATE, "is_incontext": True}
    m.update(model)
    return {"training": {"name": "tiny", "dataset": "Jamendo", "epoch": 500, "batch": 4, "accumulation_step": 32,
                         "precision": "bf16", "model_size": {"total_params": 0.1, "total_trainable_params": 0.1}},
            "model": m, "optimizer": {"optim_lr": 1e-4, "weight_decay": 0.02, "betas": [0.9, 0.999]}}


def their_state(seed=0, layers=LAYERS, kappa=K):
    """Random tensors under the keys and shapes of Text_Mmamba (simba.py:189-209) with mamba_ssm's
    Mamba2(d_model, d_state, d_conv=4, expand=2) (headdim 64, ngroups 1)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std=0.2, mean=0.0):
        return torch.randn(*shape, generator=g) * std + mean

    d_inner = 2 * D
    H, conv_dim = d_inner // HEADDIM, d_inner + 2 * D_STATE
    sd = {"condition_linear.weight": rnd(D, TEXT_DIM), "condition_linear.bias": rnd(D, std=0.1),
          "condition_norm.weight": rnd(D, std=0.1, mean=1.0), "condition_norm.bias": rnd(D, std=0.1)}
    for k in range(kappa):
        sd[f"embedding.{k}.weight"] = rnd(VOCAB_SIZE, D, std=1.0)
        sd[f"lm_head.{k}.weight"] = rnd(VOCAB_SIZE, D)
    for i in range(layers):
        p = f"backbone.{i}."
        dt = torch.exp(torch.rand(H, generator=g) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
        sd.update({
            p + "mamba.norm.weight": rnd(D, std=0.1, mean=1.0),
            p + "mamba.mamba.in_proj.weight": rnd(2 * d_inner + 2 * D_STATE + H, D),
            p + "mamba.mamba.conv1d.weight": rnd(conv_dim, 1, 4, std=0.3),
            p + "mamba.mamba.conv1d.bias": rnd(conv_dim, std=0.1),
            p + "mamba.mamba.dt_bias": dt + torch.log(-torch.expm1(-dt)),
            p + "mamba.mamba.A_log": torch.log(torch.rand(H, generator=g) * 15 + 1),
            p + "mamba.mamba.D": rnd(H, std=0.1, mean=1.0),
            p + "mamba.mamba.norm.weight": rnd(d_inner, std=0.1, mean=1.0),
            p + "mamba.mamba.out_proj.weight": rnd(D, d_inner),
            p + "ff.norm.weight": rnd(D, std=0.1, mean=1.0),
            p + "ff.feed_forward.0.weight": rnd(2 * D, D), p + "ff.feed_forward.0.bias": rnd(2 * D, std=0.1),
            p + "ff.feed_forward.3.weight": rnd(D, 2 * D), p + "ff.feed_forward.3.bias": rnd(D, std=0.1),
        })
    return {"music_model." + k: v for k, v in sd.items()}


def save_lightning(path, state, config, t5_state=None, **extra):
    """A Lightning-like checkpoint: what L.Trainer's ModelCheckpoint writes, only plain containers."""
    sd = dict(state)
    sd.update({"text_encoder." + k: v for k, v in (t5_state or {}).items()})
    ckpt = {"epoch": 3, "global_step": 1234, "pytorch-lightning_version": "2.6.0", "state_dict": sd,
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4}}}},
            "callbacks": {"ModelCheckpoint{'every_n_train_steps': 500}": {"best_model_path": "", "kth_value":
                                                                          torch.tensor(float("inf"))}},
            "optimizer_states": [{"state": {0: {"step": torch.tensor(1.0), "exp_avg": torch.zeros(3)}},
                                  "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0]}]}],
            "lr_schedulers": [{"base_lrs": [1e-4], "last_epoch": 5, "lr_lambdas": [None]}],
            "hparams_name": "kwargs", "hyper_parameters": {"config": config}}
    ckpt.update(extra)
    torch.save(ckpt, path)
    return path


# --- an independent transcription of their forward ----------------------------------------------------
def _rms(x, w, eps=1e-5):  # mamba_ssm.ops.triton.layer_norm.RMSNorm (eps 1e-5), and the gated norm's core
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _mamba2(p, u):
    """mamba_ssm Mamba2 forward, default options (rmsnorm, norm_before_gate False, D per head), one token
    at a time: in_proj -> [z | xBC | dt]; causal depthwise conv + SiLU; h_t = exp(dt A) h + dt x B;
    y = C.h + D x; rmsnorm(y * silu(z)) * w; out_proj."""
    b, L, _ = u.shape
    d_inner, H = p["out_proj.weight"].shape[1], p["dt_bias"].shape[0]
    P, N = d_inner // H, (p["conv1d.weight"].shape[0] - d_inner) // 2
    z, xBC, dt = torch.split(u @ p["in_proj.weight"].T, [d_inner, d_inner + 2 * N, H], dim=-1)
    xBC = F.conv1d(xBC.transpose(1, 2), p["conv1d.weight"], p["conv1d.bias"], padding=3, groups=xBC.shape[-1])
    xBC = F.silu(xBC[..., :L].transpose(1, 2))
    x, Bm, Cm = torch.split(xBC, [d_inner, N, N], dim=-1)
    dt = F.softplus(dt + p["dt_bias"])
    A = -torch.exp(p["A_log"])
    h = torch.zeros(b, H, P, N)
    ys = []
    for t in range(L):
        xt = x[:, t].reshape(b, H, P)
        h = h * torch.exp(dt[:, t] * A)[:, :, None, None] + (dt[:, t, :, None] * xt)[..., None] * Bm[:, t, None, None]
        ys.append(((h * Cm[:, t, None, None]).sum(-1) + p["D"][:, None] * xt).reshape(b, d_inner))
    y = _rms(torch.stack(ys, dim=1) * F.silu(z), p["norm.weight"])
    return y @ p["out_proj.weight"].T


def their_forward(sd, x, condition):
    """Text_Mmamba.forward (simba.py:224-256) in eval mode: x [B, K, S] (BOS first), condition
    [B, Lc, text_dim] -> logits [B, K, S + 1, 1025] (from the last condition position on)."""
    g = {k[len("music_model."):]: v for k, v in sd.items() if k.startswith("music_model.")}
    kappa = x.shape[1]
    emb = sum(F.embedding(x[:, k], g[f"embedding.{k}.weight"]) for k in range(kappa))
    cond = F.layer_norm(F.linear(condition, g["condition_linear.weight"], g["condition_linear.bias"]), (D,),
                        g["condition_norm.weight"], g["condition_norm.bias"], eps=1e-5)
    h = torch.cat([cond, emb], dim=1)
    half = D // 2  # create_sin_embedding: cos first, max_period ** (i / (half - 1))
    phase = torch.arange(h.shape[1], dtype=torch.float32).view(1, -1, 1) / \
        (torch.tensor(10000.0) ** (torch.arange(half, dtype=torch.float32).view(1, 1, -1) / (half - 1)))
    h = h + torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)
    for i in range(len({k.split(".")[1] for k in g if k.startswith("backbone.")})):
        p = f"backbone.{i}."
        mam = {k[len(p + "mamba.mamba."):]: v for k, v in g.items() if k.startswith(p + "mamba.mamba.")}
        h = h + _mamba2(mam, _rms(h, g[p + "mamba.norm.weight"]))
        ff = _rms(h, g[p + "ff.norm.weight"])
        ff = F.linear(F.gelu(F.linear(ff, g[p + "ff.feed_forward.0.weight"], g[p + "ff.feed_forward.0.bias"])),
                      g[p + "ff.feed_forward.3.weight"], g[p + "ff.feed_forward.3.bias"])
        h = h + ff
    logits = torch.stack([h @ g[f"lm_head.{k}.weight"].T for k in range(kappa)], dim=1)
    return logits[:, :, condition.shape[1] - 1:]


# --- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def t5(receipts):
    from ssmttm.text.encoder import load_t5_encoder

    return load_t5_encoder(receipts[1], "cpu", "float32")


def _import(tmp_path, receipts, t5, state=None, config=None, t5_state=None, argv_extra=(), **extra):
    state = their_state() if state is None else state
    t5_state = {k: v.clone() for k, v in t5[0].state_dict().items()} if t5_state is None else t5_state
    ckpt = save_lightning(tmp_path / "simba.ckpt", state, config or their_config(), t5_state, **extra)
    io.write_json(tmp_path / "config.json", config or their_config())
    from ssmttm import importer

    out = tmp_path / "imported"
    argv = ["--format", "ssm-ttm", str(ckpt), str(tmp_path / "config.json"), "--out", str(out),
            "--text-encoder", str(receipts[1]), "--codec-weights", str(receipts[0]), *argv_extra]
    return importer.main(argv), out, state


# --- conversion -----------------------------------------------------------------------------------------
def test_converted_logits_equal_their_forward(tmp_path, receipts, t5):
    rc, out, state = _import(tmp_path, receipts, t5)
    assert rc == 0 and resolve_checkpoint(out) == out
    lm, meta = load_model(out, "cpu")
    assert lm.cfg.compat == CompatConfig(**COMPAT_PRESETS["ssm-ttm"]) and lm.cfg.n_codebooks == K
    assert lm.heads[0].out_features == VOCAB_SIZE
    torch.manual_seed(0)
    B, Lc, S = 2, 7, 9
    x = torch.randint(0, CODEBOOK_SIZE, (B, K, S))
    x[:, :, 0] = SPECIAL_TOKEN  # BOS column
    x[:, 1, 1] = SPECIAL_TOKEN  # a delay filler
    cond = torch.randn(B, Lc, TEXT_DIM)
    with torch.no_grad():
        want = their_forward(state, x, cond)
        ours = lm(torch.cat([x, x[:, :, -1:]], dim=2), cond, torch.ones(B, Lc, dtype=torch.bool))
    assert ours.shape == want.shape == (B, K, S + 1, VOCAB_SIZE)
    torch.testing.assert_close(ours, want, atol=2e-4, rtol=1e-4)
    # cached decoding (prefill, then one step per token) gives the same logits
    with torch.no_grad():
        cache = lm.allocate_cache(B, cond, torch.ones(B, Lc, dtype=torch.bool))
        steps = [lm.prefill(cache)] + [lm.step(x[:, :, t:t + 1], cache) for t in range(S)]
    torch.testing.assert_close(torch.stack(steps, dim=2), want, atol=2e-4, rtol=1e-4)


def test_rows_of_different_prefix_lengths_each_behave_as_alone(tmp_path, receipts, t5):
    """Kept-padding rows are all real; batching rows of other lengths (padded and masked here) must not
    change them: each equals their forward on that row alone, positions from its own prefix start."""
    rc, out, state = _import(tmp_path, receipts, t5)
    lm, _ = load_model(out, "cpu")
    torch.manual_seed(1)
    S = 6
    x = torch.randint(0, CODEBOOK_SIZE, (2, K, S))
    x[:, :, 0] = SPECIAL_TOKEN
    rows = [torch.randn(1, 5, TEXT_DIM), torch.randn(1, 9, TEXT_DIM)]
    text, mask = gen.pad_states([r[0].numpy() for r in rows], "cpu")
    with torch.no_grad():
        ours = lm(torch.cat([x, x[:, :, -1:]], dim=2), text, mask)
        for b, r in enumerate(rows):
            torch.testing.assert_close(ours[b:b + 1], their_forward(state, x[b:b + 1], r), atol=2e-4, rtol=1e-4)


def test_meta_and_config_of_the_converted_folder(tmp_path, receipts, t5):
    rc, out, _ = _import(tmp_path, receipts, t5)
    assert rc == 0
    meta = io.read_json(out / "meta.json")
    rec_t5, rec_dac = io.read_json(receipts[1]), io.read_json(receipts[0])
    assert meta["pattern"] == pattern.NAME and meta["kappa"] == K and meta["step"] == 1234
    assert meta["variant"] == "prefix-simba" and meta["preset"] is None
    assert meta["text_encoder"] == {"key": "t5_tiny", "sha256": rec_t5["sha256"], "max_length": 256}
    assert meta["codec"] == {"codec": "dac", "key": "dac_tiny", "sha256": rec_dac["sha256"]}
    assert meta["imported"]["format"] == "ssm-ttm" and meta["imported"]["epoch"] == 3
    assert meta["imported"]["checkpoint_sha256"] == io.sha256_file(tmp_path / "simba.ckpt")
    assert meta["imported"]["text_encoder_weights"] == "equal to --text-encoder"
    assert not (out / "text_encoder").exists()
    cfg = io.read_json(out / "lm_config.json")
    assert cfg["compat"]["source"] == "ssm-ttm" and cfg["compat"]["n_logits"] == 1025
    assert cfg["compat"]["text_min_tokens"] == 60 and cfg["compat"]["text_fill_id"] == 1
    assert cfg["dropout"] == 0.3 and cfg["headdim"] == 64 and cfg["text_dim"] == TEXT_DIM
    assert meta["n_params"] == sum(v.numel() for v in their_state().values())


def test_config_without_compat_is_written_as_before():
    cfg = LMConfig(variant="prefix-simba", n_layers=2, d_model=32)
    assert "compat" not in cfg.to_dict()
    assert LMConfig.from_dict(cfg.to_dict()) == cfg
    c = LMConfig(variant="prefix-simba", n_layers=2, d_model=32, compat=dict(COMPAT_PRESETS["ssm-ttm"]))
    assert isinstance(c.compat, CompatConfig) and LMConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match="compat.fillers"):
        LMConfig(d_model=32, n_layers=1, compat=dict(COMPAT_PRESETS["ssm-ttm"], fillers="guess"))


def test_a_different_text_encoder_is_written_beside_the_lm(tmp_path, receipts, t5):
    from ssmttm.text.embed import encoder_identity
    from ssmttm.text.encoder import load_t5_encoder

    t5_state = {k: v.clone() for k, v in t5[0].state_dict().items()}
    t5_state["encoder.final_layer_norm.weight"] = t5_state["encoder.final_layer_norm.weight"] + 0.5
    del t5_state["encoder.embed_tokens.weight"]  # a tied copy of shared.weight may be left out
    rc, out, _ = _import(tmp_path, receipts, t5, t5_state=t5_state)
    assert rc == 0
    meta = io.read_json(out / "meta.json")
    assert meta["imported"]["text_encoder_weights"].startswith("differs")
    assert (meta["text_encoder"]["key"], meta["text_encoder"]["sha256"]) == encoder_identity(out / "text_encoder")
    model, _ = load_t5_encoder(out / "text_encoder", "cpu", "float32")
    torch.testing.assert_close(model.state_dict()["encoder.final_layer_norm.weight"],
                               t5_state["encoder.final_layer_norm.weight"])


# --- errors -------------------------------------------------------------------------------------------
def test_an_unsafe_checkpoint_is_refused_naming_it(tmp_path, receipts, t5, capsys):
    from ssmttm import importer

    rc, _, _ = _import(tmp_path, receipts, t5, hyper_parameters=argparse.Namespace(config=their_config()))
    assert rc == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "simba.ckpt") in err and "weights_only" in err
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.ckpt"):
        importer.import_checkpoint("ssm-ttm", tmp_path / "junk.ckpt", tmp_path / "config.json", tmp_path / "o",
                                   receipts[1], importer.ImportSettings(codec="dac", max_length=256))
    assert not (tmp_path / "o").exists()
    # the stage entry point turns it into exit code 2 without a traceback
    from ssmttm import cli

    assert cli.main(["import-checkpoint", "--format", "ssm-ttm", str(tmp_path / "junk.ckpt"),
                     str(tmp_path / "config.json"), "--out", str(tmp_path / "o"), "--text-encoder",
                     str(receipts[1])]) == 2


@pytest.mark.parametrize("change, match", [
    (lambda sd, cfg: sd.pop("music_model.backbone.1.ff.norm.weight"), "music_model.backbone.1.ff.norm.weight"),
    (lambda sd, cfg: sd.pop("music_model.lm_head.1.weight"), "music_model.lm_head.1.weight"),
    (lambda sd, cfg: sd.update({"music_model.backbone.0.self_attn.in_proj_weight": torch.zeros(3)}),
     "backbone.0.self_attn.in_proj_weight"),
    (lambda sd, cfg: sd.update({"music_model.backbone.0.ff.feed_forward.0.bias": torch.zeros(7)}),
     r"feed_forward.0.bias has shape \[7\]"),
    (lambda sd, cfg: cfg["model"].update(layers=3), "layers=3"),
    (lambda sd, cfg: cfg["model"].update(vocab_size=2049), "vocab_size 2049"),
])
def test_a_checkpoint_that_does_not_fit_names_the_key(tmp_path, receipts, t5, change, match):
    from ssmttm import importer

    sd, cfg = their_state(), their_config()
    change(sd, cfg)
    ckpt = save_lightning(tmp_path / "simba.ckpt", sd, cfg)
    io.write_json(tmp_path / "config.json", cfg)
    with pytest.raises(CheckpointError, match=match):
        importer.import_checkpoint("ssm-ttm", ckpt, tmp_path / "config.json", tmp_path / "o", receipts[1],
                                   importer.ImportSettings(codec="dac", max_length=256))


def test_config_must_match_the_checkpoints_own_hyper_parameters(tmp_path, receipts, t5):
    from ssmttm import importer

    ckpt = save_lightning(tmp_path / "simba.ckpt", their_state(), their_config(d_state=32))
    io.write_json(tmp_path / "config.json", their_config())
    with pytest.raises(CheckpointError, match=r"model.d_state = 16, but checkpoint .*simba.ckpt was saved with d_state = 32"):
        importer.import_checkpoint("ssm-ttm", ckpt, tmp_path / "config.json", tmp_path / "o", receipts[1],
                                   importer.ImportSettings(codec="dac", max_length=256))


# --- text: their padding ---------------------------------------------------------------------------------
def their_text_states(t5, caption):
    """pl_model.py:119-143 for one caption (their pl_inference.py batches copies of one caption): the
    caption and "" in one tokenizer call (padding=True), then id 1 / mask 0 up to 60, T5 with that mask."""
    model, tok = t5
    batch = tok([caption, ""], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if ids.shape[1] < 60:
        ids = torch.cat([ids, torch.ones(2, 60 - ids.shape[1], dtype=torch.int64)], dim=1)
        mask = torch.cat([mask, torch.zeros(2, 60 - mask.shape[1], dtype=torch.int64)], dim=1)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).last_hidden_state


def test_prompt_states_repeat_their_padding(t5):
    compat = CompatConfig(**COMPAT_PRESETS["ssm-ttm"])
    short, long = "a calm piano piece", " ".join(["a calm piano piece with soft strings"] * 12)
    got = prompt_states(t5[0], t5[1], [short, long, short], compat, max_length=256)
    assert set(got) == {short, long}
    for text in (short, long):
        want = their_text_states(t5, text)
        cond, uncond = got[text]
        assert cond.shape == uncond.shape == tuple(want.shape[1:])
        np.testing.assert_allclose(cond, want[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(uncond, want[1].numpy(), atol=1e-5)
    assert got[short][0].shape[0] == 60 and got[long][0].shape[0] > 60
    ids = t5[1](long)["input_ids"]
    (row, n), (urow, un) = compat_rows(ids, [1], compat, pad_id=0)
    assert n == len(ids) and un == 1 and urow == [1] + [0] * (len(ids) - 1) and row == ids


# --- generation ----------------------------------------------------------------------------------------
def _biased_to_special(state):
    """Make SPECIAL_TOKEN (1024) the largest logit everywhere: the last MLP adds 50 along one direction,
    which only head row 1024 reads strongly."""
    e = torch.zeros(D)
    e[0] = 1.0
    state = dict(state)
    state[f"music_model.backbone.{LAYERS - 1}.ff.feed_forward.3.bias"] = 50.0 * e
    for k in range(K):
        head = state[f"music_model.lm_head.{k}.weight"].clone()
        head[:, 0] = 0.0
        head[SPECIAL_TOKEN] = 5.0 * e
        state[f"music_model.lm_head.{k}.weight"] = head
    return state


def test_generation_never_emits_special_at_a_real_position(tmp_path, receipts, t5):
    rc, out, _ = _import(tmp_path, receipts, t5, state=_biased_to_special(their_state()))
    assert rc == 0
    g = gen.Generator(out, "dac", receipts[0], receipts[1], "cpu")
    assert g.max_text_length == 256
    texts = ["a calm piano piece", "an energetic rock track with drums"]
    states = [np.zeros((3, TEXT_DIM), np.float32)] * 2  # ignored: a compat LM is given its own states
    enc = prompt_states(g.encoder, g.tokenizer, texts, g.lm.cfg.compat, 256)
    n = 10
    with torch.no_grad():  # without the mask the sampler would pick 1024 at every position
        lm = g.lm
        cache = lm.allocate_cache(1, torch.from_numpy(enc[texts[0]][0])[None], torch.ones(1, 60, dtype=torch.bool))
        assert int(lm.prefill(cache).argmax(-1).min()) == SPECIAL_TOKEN
    for cfg in (smp.SamplingConfig(3.0, 1.2, 250), smp.SamplingConfig(3.0, 0.0, 1), smp.SamplingConfig(1.0, 1.0, 0)):
        seeds = smp.prompt_seeds(0, ["p0", "p1"])
        seq = gen.generate_cached(g.lm, [enc[t][0] for t in texts], [enc[t][1] for t in texts], n, cfg, seeds)
        valid = torch.from_numpy(pattern.valid_mask(K, n))
        assert seq.shape == (2, K, n + K)
        assert int(seq[:, valid].max()) < CODEBOOK_SIZE  # no 1024 at a real position
        assert (seq[:, :, 0] == SPECIAL_TOKEN).all()
        codes = g.generate_codes(states, states[0], n, cfg, seeds, texts=texts)
        assert torch.equal(codes, gen.revert_codes(seq))
    # the stage writes audio from the converted checkpoint
    index = g.run([("p0", texts[0]), ("p1", texts[1])], tmp_path / "gen", 12, smp.SamplingConfig(3.0, 1.2, 250),
                  seed=1, batch_size=2)
    assert [it["prompt_id"] for it in index["items"]] == ["p0", "p1"] and not index["rejected"]


def test_compat_cached_equals_naive_with_per_row_uncond(tmp_path, receipts, t5):
    rc, out, _ = _import(tmp_path, receipts, t5)
    lm, _ = load_model(out, "cpu")
    texts = ["a calm piano piece", " ".join(["soft strings and a slow rhythm"] * 14)]
    enc = prompt_states(t5[0], t5[1], texts, lm.cfg.compat, 256)
    cond, unc = [enc[t][0] for t in texts], [enc[t][1] for t in texts]
    greedy = smp.SamplingConfig(3.0, 0.0, 1)
    seeds = smp.prompt_seeds(0, ["a", "b"])
    a = gen.generate_cached(lm, cond, unc, 8, greedy, seeds)
    b = gen.generate_naive(lm, cond, unc, 8, greedy, seeds)
    assert torch.equal(a, b)


def test_decode_pattern_masks_special_only_at_real_positions():
    compat = CompatConfig(**COMPAT_PRESETS["ssm-ttm"])
    kappa, n = 3, 5

    def next_logits(t, seq):
        if t == 0:
            return None
        logits = torch.zeros(2, kappa, VOCAB_SIZE)
        logits[..., SPECIAL_TOKEN] = 100.0
        return logits, logits

    greedy = smp.SamplingConfig(3.0, 0.0, 1)
    seq = gen.decode_pattern(next_logits, 2, kappa, n, greedy, [1, 2], "cpu", compat=compat)
    valid = torch.from_numpy(pattern.valid_mask(kappa, n))
    assert int(seq[:, valid].max()) < CODEBOOK_SIZE
    assert (seq[:, ~valid] == SPECIAL_TOKEN).all()  # greedy at fillers picks the (unmasked) special token
    with pytest.raises(gen.GenerationError, match="1025 outputs, expected 1024"):
        gen.decode_pattern(next_logits, 2, kappa, n, greedy, [1, 2], "cpu")

    def prefers_code_7(t, seq):
        if t == 0:
            return None
        logits = torch.zeros(2, kappa, VOCAB_SIZE)
        logits[..., 7] = 10.0
        return logits, logits

    sampled = gen.decode_pattern(prefers_code_7, 2, kappa, n, greedy, [1, 2], "cpu", compat=compat)
    forced = gen.decode_pattern(prefers_code_7, 2, kappa, n, greedy, [1, 2], "cpu",
                                compat=CompatConfig(**dict(COMPAT_PRESETS["ssm-ttm"], fillers="special")))
    bos = torch.zeros_like(valid)
    bos[:, 0] = True
    fillers = ~valid & ~bos
    assert (sampled[:, fillers] == 7).all() and (forced[:, fillers] == SPECIAL_TOKEN).all()  # pl_model.py:166-172
    assert (sampled[:, bos] == SPECIAL_TOKEN).all() and torch.equal(sampled[:, valid], forced[:, valid])


# --- in the pipeline ------------------------------------------------------------------------------------
def test_receipts_in_and_a_run_record_out(tmp_path, receipts, t5):
    """The rule's call: checkpoint and config as weights receipts (sha256-pinned), --done writes the run
    record later stages wait for."""
    (tmp_path / "src").mkdir()
    ckpt = save_lightning(tmp_path / "src" / "simba.ckpt", their_state(), their_config(),
                          {k: v.clone() for k, v in t5[0].state_dict().items()})
    io.write_json(tmp_path / "src" / "config.json", their_config())
    weights.fetch("their_ckpt", str(ckpt), tmp_path / "w", licence="unknown")
    weights.fetch("their_config", str(tmp_path / "src" / "config.json"), tmp_path / "w", licence="unknown")
    from ssmttm import importer

    run = tmp_path / "train" / "authors" / "seed0"
    rc = importer.main(["--format", "ssm-ttm", str(tmp_path / "w" / "their_ckpt.json"),
                        str(tmp_path / "w" / "their_config.json"), "--out", str(run / "ckpt" / "step_0100000"),
                        "--text-encoder", str(receipts[1]), "--codec-weights", str(receipts[0]),
                        "--done", str(run / "done.json"), "--experiment", "authors", "--seed", "0"])
    assert rc == 0
    done = io.read_json(run / "done.json")
    assert done["experiment"] == "authors" and done["seed"] == 0 and done["variant"] == "prefix-simba"
    assert done["imported"]["checkpoint_sha256"] == io.sha256_file(ckpt) and done["flops_6nd"] is None
    assert resolve_checkpoint(run) == run / "ckpt" / "step_0100000"
    assert importer.main(["--format", "ssm-ttm", str(tmp_path / "w" / "missing.json"),
                          str(tmp_path / "w" / "their_config.json"), "--out", str(tmp_path / "o"),
                          "--text-encoder", str(receipts[1])]) == 2


def test_an_experiment_naming_an_imported_checkpoint_is_generated_and_evaluated_not_trained(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    overlay = tmp_path / "imported.yaml"
    overlay.write_text(
        "weights:\n  models:\n"
        "    their_ckpt: {source: /nowhere/simba.ckpt, licence: unknown}\n"
        "    their_config: {source: /nowhere/config.json, licence: unknown}\n"
        "experiments:\n  authors:\n    variant: prefix-simba\n    preset: paper\n    kappa: 1\n    steps: 100000\n"
        "    import: {format: ssm-ttm, checkpoint: their_ckpt, config: their_config}\n")
    smk = Path(sys.executable).parent / "snakemake"
    r = subprocess.run([str(smk), "results/eval/scores/song_describer/authors/fd_logmel.json", "loss_curves", "-np",
                        "--cores", "1", "--snakefile", str(repo / "Snakefile"), "--directory", str(tmp_path),
                        "--configfile", str(repo / "config" / "demo.yaml"), str(overlay)],
                       capture_output=True, text=True, cwd=repo)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    jobs = r.stdout + r.stderr
    assert "rule import_checkpoint:" in jobs and "wildcards: exp=authors, seed=0" in jobs
    assert "ckpt/step_0100000" in jobs and "--format ssm-ttm" in jobs
    assert "results/train/authors/seed0/done.json" in jobs
    # nothing trains it, and its missing training logs keep it out of the loss plots
    trains = [block for block in jobs.split("rule ")[1:] if block.startswith("train:")]
    assert trains and not any("exp=authors" in block for block in trains)
    assert "loss/authors_seed0" not in jobs and "loss/simba_k1_seed0" in jobs


def test_config_check_names_what_an_import_cannot_do(tmp_path):
    from pathlib import Path

    from ssmttm import config
    from ssmttm.schema import ConfigError

    repo = Path(__file__).resolve().parent.parent
    overlay = tmp_path / "bad.yaml"
    overlay.write_text(
        "experiments:\n  authors:\n    variant: cross-transformer\n    preset: paper\n    kappa: 1\n    steps: 10\n"
        "    seeds: [0, 1]\n    import: {format: ssm-ttm, checkpoint: nope, config: nope}\n")
    with pytest.raises(ConfigError) as e:
        config.load(repo / "config.yaml", overlay)
    msg = str(e.value)
    for part in ("experiments.authors.import.checkpoint", "experiments.authors.variant",
                 "experiments.authors.seeds"):
        assert part in msg
