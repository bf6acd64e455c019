"""LM configuration: one dataclass (nanoGPT ``GPTConfig`` style) plus the named presets as data.

Presets (docs/reference.md §1; trainable LM parameters, T5 excluded, kappa = 1, vocab 1025):

- ``paper``: d_model 1024, Mamba2 d_state 512 / d_conv 4 / expand 2 / headdim 64 / ngroups 1 /
  chunk 256, 8 attention heads. Depths: Prefix SiMBA 24 (281.04M, the paper's "281M") and Cross
  Transformer 24 (305.22M here; the paper states 305.08M: our attention keeps torch
  MultiheadAttention's in-projection biases, see ssmttm.models.attention) and Prefix Transformer
  24 (extra, 204.44M). The paper compares ~300M models without giving the depths of the other two;
  we match them to ~300M: Cross SiMBA 19 layers (302.88M; 18 would give 287.09M) and Prefix Mamba
  20 two-Mamba2 blocks (298.54M; 19 gives 283.76M, further from 300M).
- ``quarter``: the paper's "four times smaller" scaling-down, same widths with a quarter of the
  depth: Prefix SiMBA 6 (72.43M), Cross Transformer 6 (78.47M; paper 78.44M), Prefix
  Transformer 6, Cross SiMBA 5 and Prefix Mamba 5 (a quarter of 19/20, rounded).
- ``tiny``: d_model 32, 2 layers, d_state 16, headdim 16, chunk 16, 4 heads: the offline demo and
  the tests (a few thousand parameters, fast on CPU).

``python -m ssmttm params`` (ssmttm.models.params) prints the table of every preset x variant.
This module imports no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ssmttm import io
from ssmttm.constants import CODEBOOK_SIZE, VOCAB_SIZE
from ssmttm.models import SUBLAYER_KINDS, VARIANTS, variant_conditioning, variant_layout

MAMBA_BACKENDS = ("auto", "torch", "mamba_ssm")
CONDITIONINGS = ("prefix", "cross")


# --- compatibility with checkpoints imported from other code ----------------------------------------
COMPAT_POSITIONS = ("ssmttm", "audiocraft")  # ssmttm.models.lm.POSITION_EMBEDDINGS
COMPAT_SPECIAL_AT_REAL = ("mask",)
COMPAT_FILLERS = ("special", "sampled")


@dataclass(frozen=True)
class CompatConfig:
    """Where an LM imported from another codebase computes differently from ours, kept in its
    checkpoint (``LMConfig.compat``, lm_config.json) so that generation repeats that code. Models
    trained here have ``compat = None``; every default below is our behaviour.

    - ``source``: the codebase (``"ssm-ttm"``: github.com/Lonian6/SSM-TTM, see ssmttm/models/ssm_ttm.py).
    - ``n_logits``: outputs per head, 1025 when the heads also score SPECIAL_TOKEN (the authors'
      ``vocab_size: 1024 + 1``).
    - ``special_at_real``: generation with ``n_logits`` 1025 at a position that must hold a real code:
      ``"mask"`` sets logit 1024 to -inf after CFG, i.e. samples from the distribution renormalised
      over the 1024 codes (the authors' sampler can draw 1024 there, which no codec decodes).
    - ``fillers``: delay-pattern positions after BOS that hold no code: ``"special"`` forces
      SPECIAL_TOKEN (ours), ``"sampled"`` feeds back the token sampled there (the authors' loop samples
      every codebook at every step); the reverted codes never contain them either way.
    - ``positions``: the sinusoid, cos half first in both: ``"ssmttm"`` angle ``p * P ** (-i / half)``,
      ``"audiocraft"`` angle ``p / P ** (i / (half - 1))`` (audiocraft's ``create_sin_embedding``).
    - ``text_keep_padding``: prompts are T5-encoded WITH padding and the padded positions' states stay
      in the LM prefix as if real (positions count them too): the authors' Prefix SiMBA ignores its
      text mask. Then ``text_min_tokens`` / ``text_fill_id``: token id appended (attention mask 0) up
      to that many tokens; ``uncond_padded_to_prompt``: the empty prompt is first padded with the
      tokenizer's pad id (mask 0) to its prompt's length, as when both share one tokenizer call.
    """

    source: str
    n_logits: int = CODEBOOK_SIZE
    special_at_real: str = "mask"
    fillers: str = "special"
    positions: str = "ssmttm"
    text_keep_padding: bool = False
    text_min_tokens: int = 0
    text_fill_id: int = 0
    uncond_padded_to_prompt: bool = False

    def errors(self) -> list[str]:
        errs = []
        if not self.source:
            errs.append("compat.source: empty")
        if self.n_logits not in (CODEBOOK_SIZE, VOCAB_SIZE):
            errs.append(f"compat.n_logits={self.n_logits} (expected {CODEBOOK_SIZE} or {VOCAB_SIZE})")
        for name, known in (("special_at_real", COMPAT_SPECIAL_AT_REAL), ("fillers", COMPAT_FILLERS),
                            ("positions", COMPAT_POSITIONS)):
            if getattr(self, name) not in known:
                errs.append(f"compat.{name}={getattr(self, name)!r} (expected one of {known})")
        if self.text_min_tokens < 0 or self.text_fill_id < 0:
            errs.append("compat.text_min_tokens and compat.text_fill_id must be >= 0")
        if not self.text_keep_padding and (self.text_min_tokens or self.uncond_padded_to_prompt):
            errs.append("compat: text_min_tokens / uncond_padded_to_prompt need text_keep_padding")
        return errs

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CompatConfig":
        return io.dataclass_from_dict(cls, d)


# Named compat settings (data): what each importer writes into the checkpoints it converts.
COMPAT_PRESETS: dict[str, dict[str, Any]] = {
    # github.com/Lonian6/SSM-TTM (ssmttm/models/ssm_ttm.py lists each difference with its file:line)
    "ssm-ttm": dict(source="ssm-ttm", n_logits=VOCAB_SIZE, special_at_real="mask", fillers="sampled",
                    positions="audiocraft", text_keep_padding=True, text_min_tokens=60, text_fill_id=1,
                    uncond_padded_to_prompt=True),
}


@dataclass
class LMConfig:
    """Everything needed to build an :class:`ssmttm.models.lm.LM` (and stored in its checkpoints).

    ``layout``: one list of sub-layer kinds per layer (``"mamba2"``, ``"mlp"``, ``"self_attn"``,
    ``"cross_attn"``); derived from ``variant`` and ``n_layers`` when not given. When given, it
    wins and ``n_layers`` is set to its length (hybrids are config). ``conditioning`` is derived
    from the variant unless given (``"prefix"`` or ``"cross"``); cross conditioning needs at least
    one ``cross_attn`` sub-layer, prefix conditioning allows none.
    """

    variant: str = "prefix-simba"
    n_layers: int = 24
    d_model: int = 1024
    n_codebooks: int = 1  # kappa: codebooks modelled (1 for the two-stage system, 4 or 9 single-stage)
    text_dim: int = 768  # FLAN-T5-base encoder states
    d_state: int = 512
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    chunk_size: int = 256
    n_heads: int = 8
    mlp_ratio: int = 2  # MLP d -> 2d -> d with GELU
    dropout: float = 0.3
    final_norm: bool = False  # the authors have none before the heads; an option, off for fidelity
    norm_eps: float = 1e-5
    max_period: float = 10000.0  # sinusoidal positions
    layout: list[list[str]] | None = None
    conditioning: str | None = None
    mamba_backend: str = "auto"  # "auto": mamba_ssm when it imports and CUDA is present, else torch
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept in checkpoints
    # None for every model trained here; an imported checkpoint's differences (CompatConfig)
    compat: CompatConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.compat, dict):
            self.compat = CompatConfig.from_dict(self.compat)
        if self.layout is None:
            self.layout = variant_layout(self.variant, self.n_layers)
        else:
            if self.variant not in VARIANTS and self.conditioning is None:
                raise ValueError(f"LMConfig.conditioning: required for the custom variant {self.variant!r}")
            self.layout = [list(kinds) for kinds in self.layout]
            self.n_layers = len(self.layout)
        if self.conditioning is None:
            self.conditioning = variant_conditioning(self.variant)
        self.validate()

    def validate(self) -> None:
        """Fail fast with a message naming the offending field."""
        errs = []
        if self.conditioning not in CONDITIONINGS:
            errs.append(f"conditioning={self.conditioning!r} (expected one of {CONDITIONINGS})")
        if self.n_layers < 1 or not self.layout:
            errs.append(f"n_layers={self.n_layers} (need >= 1 layer)")
        for i, kinds in enumerate(self.layout or []):
            bad = [k for k in kinds if k not in SUBLAYER_KINDS]
            if not kinds or bad:
                errs.append(f"layout[{i}]={kinds!r} (sub-layer kinds: {', '.join(SUBLAYER_KINDS)})")
        kinds = {k for blk in (self.layout or []) for k in blk}
        if self.conditioning == "cross" and "cross_attn" not in kinds:
            errs.append("layout: cross conditioning needs at least one 'cross_attn' sub-layer")
        if self.conditioning == "prefix" and "cross_attn" in kinds:
            errs.append("layout: 'cross_attn' sub-layers need conditioning='cross'")
        for name in ("d_model", "n_codebooks", "text_dim", "d_state", "d_conv", "expand", "headdim",
                     "ngroups", "chunk_size", "n_heads", "mlp_ratio"):
            if int(getattr(self, name)) < 1:
                errs.append(f"{name}={getattr(self, name)} (must be >= 1)")
        if self.d_model % max(self.n_heads, 1):
            errs.append(f"n_heads={self.n_heads} (must divide d_model={self.d_model})")
        if "mamba2" in kinds and (self.expand * self.d_model) % max(self.headdim, 1):
            errs.append(f"headdim={self.headdim} (must divide expand * d_model = {self.expand * self.d_model})")
        if not 0.0 <= self.dropout < 1.0:
            errs.append(f"dropout={self.dropout} (must be in [0, 1))")
        if self.mamba_backend not in MAMBA_BACKENDS:
            errs.append(f"mamba_backend={self.mamba_backend!r} (expected one of {MAMBA_BACKENDS})")
        if self.compat is not None:
            errs.extend(self.compat.errors())
            if self.compat.positions == "audiocraft" and (self.d_model % 2 or self.d_model < 4):
                errs.append(f"d_model={self.d_model} (compat.positions 'audiocraft' needs an even d_model >= 4)")
        if errs:
            raise ValueError("LMConfig: " + "; ".join(errs))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (checkpoint metadata); :meth:`from_dict` inverts it."""
        d = dataclasses.asdict(self)
        if d["compat"] is None:  # configs of models trained here stay exactly as they were
            del d["compat"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LMConfig":
        return io.dataclass_from_dict(cls, d)


# --- presets (data) -------------------------------------------------------------------------------
# Widths shared by every variant of a preset (docs/reference.md §1: authors' hyper-parameters).
PAPER_WIDTH = dict(d_model=1024, d_state=512, d_conv=4, expand=2, headdim=64, ngroups=1, chunk_size=256,
                   n_heads=8)
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(PAPER_WIDTH, depth={"prefix-mamba": 20, "prefix-simba": 24, "cross-simba": 19,
                                      "cross-transformer": 24, "prefix-transformer": 24}),
    "quarter": dict(PAPER_WIDTH, depth={"prefix-mamba": 5, "prefix-simba": 6, "cross-simba": 5,
                                        "cross-transformer": 6, "prefix-transformer": 6}),
    "tiny": dict(d_model=32, d_state=16, d_conv=4, expand=2, headdim=16, ngroups=1, chunk_size=16, n_heads=4,
                 depth={v: 2 for v in VARIANTS}),
}
# The counts the paper states (kappa = 1), checked to +-0.1 % by tests/test_lm.py.
PAPER_PARAMS_M = {("paper", "prefix-simba"): 281.04, ("paper", "cross-transformer"): 305.08,
                  ("quarter", "prefix-simba"): 72.43, ("quarter", "cross-transformer"): 78.44}


def from_preset(preset: str, variant: str, **overrides: Any) -> LMConfig:
    """The :class:`LMConfig` of ``variant`` at ``preset`` size; ``overrides`` replace any field
    (e.g. ``n_codebooks=4``, ``n_layers=12``, ``dropout=0.0``)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    p = dict(PRESETS[preset])
    depth = p.pop("depth")
    kw: dict[str, Any] = dict(p, variant=variant, n_layers=depth[variant])
    kw.update(overrides)
    return LMConfig(**kw)
