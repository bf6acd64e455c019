"""Residual blocks of the LM, chosen per layer by :func:`create_block` (mamba_ssm ``create_block`` style).

A block is a list of residual sub-layers, each ``x + Dropout(op(RMSNorm(x)))`` (pre-norm,
docs/reference.md §1), with ``op`` one of:

- ``"mamba2"``: Mamba2 mixer (ssmttm.models.mamba2: mamba_ssm's kernel on CUDA when available, the
  pure-PyTorch chunked SSD scan elsewhere; same parameter names either way);
- ``"mlp"``: Linear(d -> mlp_ratio * d) -> GELU -> Linear(-> d), with biases;
- ``"self_attn"``: causal multi-head self-attention (key padding mask, KV cache);
- ``"cross_attn"``: multi-head attention to the projected text states (key padding mask; text
  keys/values computed once per generation).

The variants of the paper are lists of these kinds (``ssmttm.models.VARIANTS``); any other list is a
hybrid. Every block has ``forward(x, ctx, cache=None)`` (training / prefill; a given cache is filled
so decoding can continue), ``step(x, cache, ctx)`` (one token, O(1) in the sequence length for the
SSM and MLP sub-layers) and ``allocate_cache(batch_size, ctx)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ssmttm.models.attention import CrossAttention, SelfAttention


@dataclass
class Context:
    """What every sub-layer may need besides its input.

    mask: [B, T] bool over the mixed sequence (True = real; prefix mode's left text padding) or
        None (all real; lets mixers take their unmasked fast path).
    text: [B, L, d] projected text states and text_mask [B, L] bool (cross conditioning), or None.
    """

    mask: torch.Tensor | None = None
    text: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None


class MLP(nn.Module):
    """d -> mlp_ratio * d -> d with GELU and biases (docs/reference.md §1)."""

    def __init__(self, d_model: int, ratio: int = 2, device=None, dtype=None):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.fc1 = nn.Linear(d_model, ratio * d_model, **fk)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(ratio * d_model, d_model, **fk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _build_mamba2(cfg, layer_idx, fk):
    from ssmttm.models.mamba2 import make_mamba2

    return make_mamba2(d_model=cfg.d_model, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand,
                       headdim=cfg.headdim, ngroups=cfg.ngroups, chunk_size=cfg.chunk_size, layer_idx=layer_idx,
                       backend=cfg.mamba_backend, **fk)


# kind -> (build(cfg, layer_idx, factory kwargs), forward(op, h, ctx, cache), step(op, h, cache, ctx),
#          allocate(op, batch_size, ctx, dtype, device)): a registry, not an if-chain.
_KINDS: dict[str, tuple[Any, Any, Any, Any]] = {
    "mamba2": (
        _build_mamba2,
        lambda op, h, ctx, cache: op(h, mask=ctx.mask, cache=cache),
        lambda op, h, cache, ctx: op.step(h, cache),
        lambda op, B, ctx, dtype, device: op.allocate_inference_cache(B, dtype=dtype, device=device),
    ),
    "mlp": (
        lambda cfg, i, fk: MLP(cfg.d_model, cfg.mlp_ratio, **fk),
        lambda op, h, ctx, cache: op(h),
        lambda op, h, cache, ctx: op(h),
        lambda op, B, ctx, dtype, device: None,
    ),
    "self_attn": (
        lambda cfg, i, fk: SelfAttention(cfg.d_model, cfg.n_heads, **fk),
        lambda op, h, ctx, cache: op(h, mask=ctx.mask, cache=cache),
        lambda op, h, cache, ctx: op.step(h, cache),
        lambda op, B, ctx, dtype, device: op.allocate_cache(B, dtype=dtype, device=device),
    ),
    "cross_attn": (
        lambda cfg, i, fk: CrossAttention(cfg.d_model, cfg.n_heads, **fk),
        lambda op, h, ctx, cache: op(h, ctx.text, ctx.text_mask, cache=cache),
        lambda op, h, cache, ctx: op.step(h, cache),
        # The text keys/values are computed here, once per generation.
        lambda op, B, ctx, dtype, device: op.text_kv(ctx.text, ctx.text_mask),
    ),
}


class SubLayer(nn.Module):
    """``x + Dropout(op(RMSNorm(x)))``; parameters ``norm.weight`` and ``mixer.*``."""

    def __init__(self, kind: str, cfg, layer_idx: int, device=None, dtype=None):
        super().__init__()
        from ssmttm.models.norms import RMSNorm

        if kind not in _KINDS:
            raise ValueError(f"unknown sub-layer kind {kind!r}; known: {', '.join(_KINDS)}")
        fk = {"device": device, "dtype": dtype}
        self.kind = kind
        self.norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, **fk)
        self.mixer = _KINDS[kind][0](cfg, layer_idx, fk)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, ctx: Context, cache=None) -> torch.Tensor:
        return x + self.drop(_KINDS[self.kind][1](self.mixer, self.norm(x), ctx, cache))

    def step(self, x: torch.Tensor, cache, ctx: Context) -> torch.Tensor:
        return x + self.drop(_KINDS[self.kind][2](self.mixer, self.norm(x), cache, ctx))

    def allocate_cache(self, batch_size: int, ctx: Context, dtype=None, device=None):
        return _KINDS[self.kind][3](self.mixer, batch_size, ctx, dtype, device)


class Block(nn.Module):
    """One layer: its sub-layers in order. ``kinds`` e.g. ``["mamba2", "mlp"]`` (Prefix SiMBA)."""

    def __init__(self, kinds: list[str], cfg, layer_idx: int, device=None, dtype=None):
        super().__init__()
        self.kinds = list(kinds)
        self.layer_idx = layer_idx
        self.sublayers = nn.ModuleList(SubLayer(k, cfg, layer_idx, device=device, dtype=dtype) for k in kinds)

    def forward(self, x: torch.Tensor, ctx: Context, cache: list | None = None) -> torch.Tensor:
        """x: [B, T, d] -> [B, T, d]; ``cache`` (from :meth:`allocate_cache`) is filled when given."""
        for j, sub in enumerate(self.sublayers):
            x = sub(x, ctx, None if cache is None else cache[j])
        return x

    def step(self, x: torch.Tensor, cache: list, ctx: Context) -> torch.Tensor:
        """x: [B, 1, d] -> [B, 1, d]; updates ``cache`` in place."""
        for sub, c in zip(self.sublayers, cache):
            x = sub.step(x, c, ctx)
        return x

    def allocate_cache(self, batch_size: int, ctx: Context | None = None, dtype=None, device=None) -> list:
        """One cache per sub-layer: Mamba2 conv + SSM state, self-attention KV cache, cross-attention
        text keys/values (needs ``ctx.text``), None for the MLP."""
        ctx = ctx or Context()
        return [sub.allocate_cache(batch_size, ctx, dtype=dtype, device=device) for sub in self.sublayers]


def create_block(kinds: list[str], cfg, layer_idx: int, device=None, dtype=None) -> Block:
    """The block of layer ``layer_idx``: ``kinds`` is its list of sub-layer kinds (a row of
    ``cfg.layout``)."""
    return Block(kinds, cfg, layer_idx, device=device, dtype=dtype)
