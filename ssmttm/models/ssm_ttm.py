"""The authors' Prefix SiMBA checkpoints (github.com/Lonian6/SSM-TTM) as LMs of this package.

Written from the authors' source at commit db08c2f (files cited as ``file:line`` there); no code of
theirs is copied. Their Lightning module (pl_model.py:38-72) holds the LM as ``music_model``
(``Text_Mmamba``, simba.py:189-256) and the frozen FLAN-T5-base encoder as ``text_encoder``
(pl_model.py:45-47); ``main_pl.py`` writes ``config.json`` (main_pl.py:106-157, ``model``: layers,
vocab_size 1024 + 1, codec_layer, d_model, drop_p, d_state).

State-dict keys (``music_model.`` prefix), mapped by :func:`key_map` onto :class:`ssmttm.models.lm.LM`:

==========================================================  ==============================================
theirs                                                      ours
==========================================================  ==============================================
``embedding.k.weight`` [1025, d] (simba.py:201)             ``emb.k.weight``
``condition_linear.{weight,bias}`` (simba.py:200)           ``text_proj.{weight,bias}``
``condition_norm.{weight,bias}`` LayerNorm (simba.py:199)   ``text_norm.{weight,bias}``
``backbone.i.mamba.norm.weight`` RMSNorm (simba.py:130)     ``layers.i.sublayers.0.norm.weight``
``backbone.i.mamba.mamba.*`` mamba_ssm Mamba2 (133-138)     ``layers.i.sublayers.0.mixer.*`` (same names)
``backbone.i.ff.norm.weight`` (simba.py:155)                ``layers.i.sublayers.1.norm.weight``
``backbone.i.ff.feed_forward.0`` Linear(d, 2d) (158-164)    ``layers.i.sublayers.1.mixer.fc1``
``backbone.i.ff.feed_forward.3`` Linear(2d, d)              ``layers.i.sublayers.1.mixer.fc2``
``lm_head.k.weight`` [1025, d] (simba.py:209)               ``heads.k.weight`` (1025 outputs: compat)
==========================================================  ==============================================

Same computation as ours (so no compat flag): summed per-codebook embeddings (simba.py:232);
``LayerNorm(Linear(768 -> d)(text))`` (simba.py:235); pre-norm residual sub-layers
``x + Dropout(op(RMSNorm(x)))``, Mamba2 then MLP (simba.py:143, 169, 185-186); RMSNorm and LayerNorm
eps 1e-5 (the defaults of mamba_ssm's RMSNorm and torch's LayerNorm); Mamba2 with mamba_ssm's
defaults (headdim 64, ngroups 1, d_conv 4, expand 2, gated RMSNorm after the scan, chunk 256), the
layer :mod:`ssmttm.models.mamba2` re-implements; GELU (exact); no final norm; bias-free heads; the
prefix layout ``[text; BOS, codes[:-1]]`` with logits read from the last text position on
(simba.py:237, 254; dataloader.py:42-46); the delay pattern, codebook k shifted by k + 1 behind an
all-1024 BOS column (utils.py:8-35, 68-77). What differs is recorded as ``compat`` (COMPAT_PRESETS["ssm-ttm"]):

- heads of 1025 outputs (main_pl.py:118, simba.py:209): the special token is a class; generation
  masks it at real positions (their sampler, pl_model.py:160-169, utils.py:80-95, can draw it);
- positions: audiocraft's sinusoid, exponent ``i / (half - 1)`` (simba.py:66-85), counted over the
  whole padded text prefix plus the audio (simba.py:239-244);
- the text mask is never read (simba.py:224-248): the padded T5 states are part of the prefix.
  At inference prompts are tokenised together with the empty prompt (pad id 0, mask 0) and then
  padded with id 1 (T5's ``</s>``) and mask 0 up to 60 tokens (pl_model.py:119-143);
- their loop samples every codebook at every step after BOS, delay fillers included, and feeds the
  samples back (pl_model.py:153-175); :mod:`ssmttm.generate.generate` does so for ``fillers: sampled``.

Differences left as they are (training only, or immaterial to a converted model): the MLP has a
Dropout between GELU and its output Linear (simba.py:162; inference: identity); drop_p 0.3; the loss
is cross-entropy over 1025 classes with ignore_index 1024 (pl_model.py:110); their CFG dropout zeroes
the attention mask after the encoder ran (pl_model.py:95-98), which the model never reads, so it
trained on no empty prompts; text padding in training is to the batch's longest caption only
(pl_model.py:84-86); T5 runs in fp32 at their inference (pl_inference.py:102), in our encoder's dtype
here (bf16 on CUDA), and prompts are not truncated there (ours: the checkpoint's max_length).
"""

from __future__ import annotations

import re
from typing import Any

from ssmttm.constants import VOCAB_SIZE
from ssmttm.errors import CheckpointError
from ssmttm.models.config import COMPAT_PRESETS, PRESETS, LMConfig

PREFIX = "music_model."
TEXT_ENCODER_PREFIX = "text_encoder."
FORMAT = "ssm-ttm"
SOURCE_URL = "https://github.com/Lonian6/SSM-TTM"
# mamba_ssm Mamba2's parameters (default options), the names ssmttm.models.mamba2.Mamba2 also uses
MAMBA2_PARAMS = ("in_proj.weight", "conv1d.weight", "conv1d.bias", "dt_bias", "A_log", "D", "norm.weight",
                 "out_proj.weight")
# Text_Mmamba defaults not written to config.json (simba.py:190-195) and mamba_ssm Mamba2's (headdim, chunk)
FIXED = {"d_conv": 4, "expand": 2, "headdim": 64, "ngroups": 1, "chunk_size": 256, "mlp_ratio": 2}


def key_map(n_layers: int, n_codebooks: int) -> dict[str, str]:
    """Their key (without ``music_model.``) -> ours, for a Prefix SiMBA of this size."""
    m = {"condition_linear.weight": "text_proj.weight", "condition_linear.bias": "text_proj.bias",
         "condition_norm.weight": "text_norm.weight", "condition_norm.bias": "text_norm.bias"}
    for k in range(n_codebooks):
        m[f"embedding.{k}.weight"] = f"emb.{k}.weight"
        m[f"lm_head.{k}.weight"] = f"heads.{k}.weight"
    for i in range(n_layers):
        ours = f"layers.{i}.sublayers"
        m[f"backbone.{i}.mamba.norm.weight"] = f"{ours}.0.norm.weight"
        for p in MAMBA2_PARAMS:
            m[f"backbone.{i}.mamba.mamba.{p}"] = f"{ours}.0.mixer.{p}"
        m[f"backbone.{i}.ff.norm.weight"] = f"{ours}.1.norm.weight"
        for j, name in ((0, "fc1"), (3, "fc2")):  # feed_forward = [Linear, GELU, Dropout, Linear]
            m[f"backbone.{i}.ff.feed_forward.{j}.weight"] = f"{ours}.1.mixer.{name}.weight"
            m[f"backbone.{i}.ff.feed_forward.{j}.bias"] = f"{ours}.1.mixer.{name}.bias"
    return m


def _model_section(config: dict, label: str) -> dict:
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        raise CheckpointError(f"{label}: no 'model' section (the config.json main_pl.py writes next to a checkpoint)")
    missing = [k for k in ("layers", "vocab_size", "codec_layer", "d_model", "d_state") if k not in model]
    if missing:
        raise CheckpointError(f"{label}: 'model' lacks {missing}")
    return model


def _shape(state: dict, key: str, label: str) -> tuple[int, ...]:
    if PREFIX + key not in state:
        raise CheckpointError(f"{label}: missing key {PREFIX + key!r}")
    return tuple(state[PREFIX + key].shape)


def config_from(config: dict, state: dict, label: str, config_label: str) -> LMConfig:
    """The :class:`LMConfig` (with ``compat``) of the checkpoint ``state`` described by ``config``
    (their config.json). Sizes the config does not state are read from the tensors and checked
    against the config's; any disagreement is a CheckpointError naming both values."""
    model = _model_section(config, config_label)
    if model.get("is_incontext") is False:
        raise CheckpointError(f"{config_label}: is_incontext is false; only the prefix (in-context) model converts")
    if int(model["vocab_size"]) != VOCAB_SIZE:
        raise CheckpointError(f"{config_label}: vocab_size {model['vocab_size']}, expected {VOCAB_SIZE} (1024 DAC "
                              f"codes + the special token)")
    layers = sorted({int(m.group(1)) for k in state for m in [re.match(re.escape(PREFIX) + r"backbone\.(\d+)\.", k)]
                     if m})
    if layers != list(range(int(model["layers"]))):
        raise CheckpointError(f"{label}: holds {len(layers)} backbone layers (indices {layers[:1]}..{layers[-1:]}), "
                              f"{config_label} says layers={model['layers']}")
    K, d = int(model["codec_layer"]), int(model["d_model"])
    n_emb = len({k for k in state if re.match(re.escape(PREFIX) + r"embedding\.\d+\.weight$", k)})
    if n_emb != K:
        raise CheckpointError(f"{label}: {n_emb} codebook embeddings, {config_label} says codec_layer={K}")
    got = {"embedding": _shape(state, "embedding.0.weight", label), "lm_head": _shape(state, "lm_head.0.weight", label)}
    for name, shape in got.items():
        if shape != (VOCAB_SIZE, d):
            raise CheckpointError(f"{label}: {PREFIX}{name}.0.weight has shape {list(shape)}, expected "
                                  f"[{VOCAB_SIZE}, {d}] (vocab_size x d_model of {config_label})")
    text_dim = _shape(state, "condition_linear.weight", label)[1]
    m0 = "backbone.0.mamba.mamba."
    nheads = _shape(state, m0 + "dt_bias", label)[0]
    d_inner = _shape(state, m0 + "out_proj.weight", label)[1]
    conv_dim, _, d_conv = _shape(state, m0 + "conv1d.weight", label)
    d_state = int(model["d_state"])
    if (conv_dim - d_inner) % (2 * d_state) or d_inner % d or d_inner % nheads:
        raise CheckpointError(f"{label}: Mamba2 shapes (conv1d {conv_dim} channels, d_inner {d_inner}, {nheads} "
                              f"heads) do not fit d_state={d_state} and d_model={d} of {config_label}")
    mlp = _shape(state, "backbone.0.ff.feed_forward.0.weight", label)[0]
    sizes = dict(FIXED, d_conv=d_conv, expand=d_inner // d, headdim=d_inner // nheads,
                 ngroups=(conv_dim - d_inner) // (2 * d_state), mlp_ratio=mlp // d)
    try:
        return LMConfig(variant="prefix-simba", n_layers=int(model["layers"]), d_model=d, n_codebooks=K,
                        text_dim=text_dim, d_state=d_state, n_heads=8 if d % 8 == 0 else 1,
                        dropout=float(model.get("drop_p", 0.2)), final_norm=False, norm_eps=1e-5,
                        max_period=10000.0, compat=dict(COMPAT_PRESETS[FORMAT]), **sizes)
    except ValueError as exc:
        raise CheckpointError(f"{config_label}: {exc}") from exc


def preset_of(cfg: LMConfig) -> str | None:
    """The preset (``paper``, ``quarter``, ...) whose Prefix SiMBA has exactly these sizes, or None."""
    for name, p in PRESETS.items():
        if all(getattr(cfg, k) == v for k, v in p.items() if k != "depth") and \
                cfg.n_layers == p["depth"]["prefix-simba"]:
            return name
    return None


def convert(state: dict[str, Any], config: dict, label: str, config_label: str) -> tuple[LMConfig, dict, dict]:
    """(LMConfig, our LM state_dict as float32 tensors, the ``text_encoder.`` tensors without the prefix)
    from their Lightning ``state_dict`` and config.json. Every one of their LM keys must be present
    and used, with the shape our LM expects: otherwise a CheckpointError naming the key."""
    import torch

    from ssmttm.models import build_lm

    cfg = config_from(config, state, label, config_label)
    mapping = key_map(cfg.n_layers, cfg.n_codebooks)
    missing = [PREFIX + k for k in mapping if PREFIX + k not in state]
    if missing:
        raise CheckpointError(f"{label}: missing key {missing[0]!r}" + (f" (and {len(missing) - 1} more)"
                                                                        if len(missing) > 1 else ""))
    theirs = {k[len(PREFIX):] for k in state if k.startswith(PREFIX)}
    unused = sorted(theirs - set(mapping))
    if unused:
        raise CheckpointError(f"{label}: unexpected key {PREFIX + unused[0]!r} ({len(unused)} unused): only the "
                              f"Prefix SiMBA (Mamba2 + MLP blocks, simba.py M_F_Block) converts")
    shapes = {k: tuple(v.shape) for k, v in build_lm(cfg, device="meta").state_dict().items()}
    out = {}
    for theirs_key, ours in mapping.items():
        t = state[PREFIX + theirs_key]
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{label}: {PREFIX + theirs_key} is not a tensor")
        if tuple(t.shape) != shapes[ours]:
            raise CheckpointError(f"{label}: {PREFIX + theirs_key} has shape {list(t.shape)}, the converted LM "
                                  f"expects {list(shapes[ours])} for {ours}")
        out[ours] = t.detach().to(torch.float32).contiguous()
    left = sorted(set(shapes) - set(out))
    if left:  # a mapping bug, not the user's file
        raise RuntimeError(f"ssm-ttm converter: no tensor for {left[:5]}")
    t5 = {k[len(TEXT_ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(TEXT_ENCODER_PREFIX)}
    return cfg, out, t5
