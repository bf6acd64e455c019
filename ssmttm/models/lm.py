"""The language model over delay-patterned DAC codes, for every backbone variant (docs/reference.md §1).

Shared skeleton: summed per-codebook token embeddings (``nn.Embedding(1025, d)`` per codebook:
1024 codes + SPECIAL_TOKEN); frozen FLAN-T5-base states (768-d) -> Linear(768 -> d) -> LayerNorm;
sinusoidal positions (max period 10000); the blocks of ``cfg.layout``; an optional final RMSNorm
(off by default: the authors have none); one ``Linear(d, 1024, bias=False)`` head per codebook.

Convention (both conditionings): for input ``codes [B, K, S]``, ``logits[:, k, t]`` predicts
``codes[:, k, t]`` from the text and ``codes[:, :, :t]``.

- prefix: the mixed sequence is ``[text states (L); embed(codes[:, :, :S-1])]`` (length L + S - 1)
  and logits are read from position L - 1 on, so the last text position predicts the first audio
  token (the authors' layout). Text is LEFT-padded (a right-padded batch, as
  ``ssmttm.text.store.pad`` builds it, is re-aligned inside :meth:`LM.forward` from the mask),
  positions are ``cumsum(mask) - 1`` so real tokens sit where they would without padding, and the
  mask reaches every mixer (Mamba2 zeroes its inputs at pads, attention masks pad keys): padded
  text cannot change audio logits (the authors' Prefix SiMBA ignores its mask; fixed here).
- cross: the audio sequence is ``embed([SPECIAL_TOKEN; codes[:, :, :S-1]])`` with positions 0..S-1
  (the BOS-shifted codes), and the text enters through cross-attention with a key padding mask.

Decoding (O(1) per token for the SSM sub-layers, KV caches for attention, cross-attention text
keys/values computed once)::

    cache = lm.allocate_cache(B, text, text_mask)
    logits = lm.prefill(cache)              # [B, K, 1024], predicts codes[:, :, 0]
    for t in range(S - 1):
        logits = lm.step(codes[:, :, t:t + 1], cache)   # predicts codes[:, :, t + 1]

gives the same logits as ``lm(codes, text, text_mask)`` (eval mode).

Imported checkpoints (``cfg.compat``, :class:`ssmttm.models.config.CompatConfig`) change two things
here, nothing else: the heads have ``compat.n_logits`` outputs (1025 for the authors' checkpoints)
and ``compat.positions`` picks the sinusoid (:data:`POSITION_EMBEDDINGS`). What their text prefix
needs (padded states kept as real tokens) is made by the caller: such rows come with an all-real mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ssmttm.constants import CODEBOOK_SIZE, SPECIAL_TOKEN, VOCAB_SIZE
from ssmttm.models.attention import sinusoidal
from ssmttm.models.blocks import Context, create_block
from ssmttm.models.config import LMConfig

LABEL_SMOOTHING = 0.1  # docs/reference.md §1 (authors' training)


def sinusoidal_audiocraft(positions: torch.Tensor, dim: int, max_period: float = 10000.0,
                          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """audiocraft's ``create_sin_embedding``, which the authors' simba.py (lines 66-85) copies:
    positions [...] -> [..., dim], ``cat(cos, sin)`` of ``p / max_period ** (i / (dim // 2 - 1))``,
    computed in float32 (our :func:`sinusoidal` divides the exponent by ``dim // 2``)."""
    half = dim // 2
    i = torch.arange(half, device=positions.device, dtype=torch.float32)
    period = torch.full([], max_period, device=positions.device, dtype=torch.float32) ** (i / (half - 1))
    phase = positions.to(torch.float32)[..., None] / period
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1).to(dtype)


# CompatConfig.positions -> the positional embedding (models trained here: "ssmttm")
POSITION_EMBEDDINGS = {"ssmttm": sinusoidal, "audiocraft": sinusoidal_audiocraft}


def left_align(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real tokens to the end, keeping their order (left padding).

    x: [B, L, D]; mask: [B, L] bool (True = real, any pattern). Returns (x, mask) re-ordered; a
    batch already left-padded comes back unchanged.
    """
    order = torch.sort(mask.to(torch.int8), dim=1, stable=True).indices  # pads first, then reals
    return torch.gather(x, 1, order[..., None].expand_as(x)), torch.gather(mask, 1, order)


@dataclass
class LMCache:
    """Decoding state: one cache list per block, the conditioning context, the next position per
    row ([B] int64) and, in prefix mode, the left-aligned projected text waiting for prefill."""

    layers: list
    ctx: Context
    pos: torch.Tensor
    prefix: torch.Tensor | None = None
    prefix_mask: torch.Tensor | None = None
    prefilled: bool = False


class LM(nn.Module):
    """Text-conditioned LM over ``cfg.n_codebooks`` delayed codebooks; see the module docstring."""

    def __init__(self, cfg: LMConfig, device=None, dtype=None):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.cfg = cfg
        d, K = cfg.d_model, cfg.n_codebooks
        self.emb = nn.ModuleList(nn.Embedding(VOCAB_SIZE, d, **fk) for _ in range(K))
        self.text_proj = nn.Linear(cfg.text_dim, d, **fk)
        self.text_norm = nn.LayerNorm(d, **fk)
        self.layers = nn.ModuleList(create_block(kinds, cfg, i, **fk) for i, kinds in enumerate(cfg.layout))
        if cfg.final_norm:
            from ssmttm.models.norms import RMSNorm

            self.norm_f = RMSNorm(d, eps=cfg.norm_eps, **fk)
        else:
            self.norm_f = None
        # an imported checkpoint's heads may also score SPECIAL_TOKEN (cfg.compat.n_logits = 1025)
        n_logits = CODEBOOK_SIZE if cfg.compat is None else cfg.compat.n_logits
        self.heads = nn.ModuleList(nn.Linear(d, n_logits, bias=False, **fk) for _ in range(K))
        self._pos_fn = POSITION_EMBEDDINGS["ssmttm" if cfg.compat is None else cfg.compat.positions]
        self._init_weights()

    # --- construction -------------------------------------------------------------------------------
    def _init_weights(self) -> None:
        """mamba_ssm MixerModel-style init: embeddings N(0, 0.02), Linear biases 0, residual output
        projections (``out_proj``, ``fc2``) scaled by 1/sqrt(number of residual sub-layers)."""
        if next(self.parameters()).device.type == "meta":
            return
        n_res = sum(len(kinds) for kinds in self.cfg.layout)
        with torch.no_grad():
            for e in self.emb:
                nn.init.normal_(e.weight, std=0.02)
            for name, p in self.layers.named_parameters():
                if name.endswith("out_proj.weight") or name.endswith("fc2.weight"):
                    p.div_(math.sqrt(n_res))
                elif name.endswith("fc1.bias") or name.endswith("fc2.bias"):
                    p.zero_()

    def num_parameters(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # --- shared pieces ------------------------------------------------------------------------------
    @property
    def prefix(self) -> bool:
        return self.cfg.conditioning == "prefix"

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: [B, K, T] int64 (SPECIAL_TOKEN allowed) -> summed embeddings [B, T, d]."""
        return sum(e(codes[:, k]) for k, e in enumerate(self.emb))

    def _text(self, text: torch.Tensor, text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (projected text [B, L, d], text_mask [B, L] bool on the model's device)."""
        if text.ndim != 3 or text_mask.shape != text.shape[:2]:
            raise ValueError(f"LM: text must be [B, L, {self.cfg.text_dim}] with text_mask [B, L]; got "
                             f"{tuple(text.shape)} and {tuple(text_mask.shape)}")
        if not bool(text_mask.any(dim=1).all()):
            raise ValueError("LM: every row needs at least one real text token (use the empty prompt's "
                             "encoder states for unconditional rows)")
        w = self.text_proj.weight
        tx = self.text_norm(self.text_proj(text.to(device=w.device, dtype=w.dtype)))
        return tx, text_mask.to(device=w.device, dtype=torch.bool)

    def _pos(self, pos: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self._pos_fn(pos, self.cfg.d_model, self.cfg.max_period, dtype=x.dtype)

    def _heads(self, h: torch.Tensor) -> torch.Tensor:
        """h: [B, T, d] -> logits [B, K, T, 1024]."""
        if self.norm_f is not None:
            h = self.norm_f(h)
        return torch.stack([head(h) for head in self.heads], dim=1)

    def _check_codes(self, codes: torch.Tensor, what: str) -> None:
        if codes.ndim != 3 or codes.shape[1] != self.cfg.n_codebooks:
            raise ValueError(f"LM.{what}: codes must be [B, {self.cfg.n_codebooks}, T]; got {tuple(codes.shape)}")

    # --- training -----------------------------------------------------------------------------------
    def forward(self, codes: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """codes: [B, K, S] int64 delayed codes; text: [B, L, text_dim] float; text_mask: [B, L] bool
        (True = real, left- or right-padded). Returns logits [B, K, S, 1024], logits[:, :, t]
        predicting codes[:, :, t] from the text and codes[:, :, :t]."""
        self._check_codes(codes, "forward")
        B, K, S = codes.shape
        tx, text_mask = self._text(text, text_mask)
        if self.prefix:
            tx, tmask = left_align(tx, text_mask)
            L = tx.shape[1]
            x = torch.cat([tx, self.embed(codes[:, :, :S - 1])], dim=1)  # [B, L + S - 1, d]
            mask = torch.cat([tmask, tmask.new_ones(B, S - 1)], dim=1)
            x = x + self._pos((mask.long().cumsum(1) - 1).clamp_min(0), x)
            # mask=None when nothing is padded lets the mixers take their unmasked path.
            ctx = Context(mask=None if bool(tmask.all()) else mask)
            for blk in self.layers:
                x = blk(x, ctx)
            h = x[:, L - 1:]  # the last text position predicts the first audio token
        else:
            start = codes.new_full((B, K, 1), SPECIAL_TOKEN)
            x = self.embed(torch.cat([start, codes[:, :, :S - 1]], dim=2))
            x = x + self._pos(torch.arange(S, device=x.device), x)
            ctx = Context(text=tx, text_mask=text_mask)
            for blk in self.layers:
                x = blk(x, ctx)
            h = x
        return self._heads(h)

    @staticmethod
    def loss(logits: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor | None = None,
             label_smoothing: float = LABEL_SMOOTHING) -> torch.Tensor:
        """Mean cross-entropy (label smoothing 0.1) over targets that are real codes.

        logits: [B, K, S, 1024]; codes: [B, K, S] (targets; SPECIAL_TOKEN positions are ignored);
        mask: [B, K, S] bool or None (e.g. the dataset's codes_mask; False = ignored too).
        """
        valid = codes != SPECIAL_TOKEN
        if mask is not None:
            valid = valid & mask.to(valid.device)
        if not bool(valid.any()):
            return logits.sum() * 0.0
        target = codes.masked_fill(~valid, -100)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1),
                               ignore_index=-100, label_smoothing=label_smoothing)

    # --- decoding -----------------------------------------------------------------------------------
    def allocate_cache(self, batch_size: int, text: torch.Tensor, text_mask: torch.Tensor) -> LMCache:
        """Caches of every block for ``batch_size`` rows (text: [B, L, text_dim], text_mask: [B, L]);
        cross-attention text keys/values are computed here, once."""
        if text.shape[0] != batch_size:
            raise ValueError(f"LM.allocate_cache: batch_size={batch_size} but text has {text.shape[0]} rows")
        tx, text_mask = self._text(text, text_mask)
        dtype, device = tx.dtype, tx.device
        if self.prefix:
            tx, tmask = left_align(tx, text_mask)
            ctx = Context()
            cache = LMCache([], ctx, tmask.long().sum(1), prefix=tx, prefix_mask=tmask)
        else:
            ctx = Context(text=tx, text_mask=text_mask)
            cache = LMCache([], ctx, torch.zeros(batch_size, dtype=torch.long, device=device))
        cache.layers = [blk.allocate_cache(batch_size, ctx, dtype=dtype, device=device) for blk in self.layers]
        return cache

    @torch.no_grad()
    def prefill(self, cache: LMCache) -> torch.Tensor:
        """Consume the conditioning; returns logits [B, K, 1024] predicting codes[:, :, 0].

        prefix: runs the left-padded text through every block, filling the caches; cross: steps
        the SPECIAL_TOKEN start token at position 0."""
        if cache.prefilled:
            raise ValueError("LM.prefill: this cache was already prefilled; allocate a new one")
        cache.prefilled = True
        if not self.prefix:
            B = cache.pos.shape[0]
            start = torch.full((B, self.cfg.n_codebooks, 1), SPECIAL_TOKEN, dtype=torch.long, device=cache.pos.device)
            return self._step(start, cache)
        x, tmask = cache.prefix, cache.prefix_mask
        x = x + self._pos((tmask.long().cumsum(1) - 1).clamp_min(0), x)
        ctx = Context(mask=None if bool(tmask.all()) else tmask)
        for blk, c in zip(self.layers, cache.layers):
            x = blk(x, ctx, cache=c)
        cache.prefix = cache.prefix_mask = None
        return self._heads(x[:, -1:])[:, :, 0]

    @torch.no_grad()
    def step(self, codes_t: torch.Tensor, cache: LMCache) -> torch.Tensor:
        """codes_t: [B, K, 1] (or [B, K]) int64, the codes of the last step -> logits [B, K, 1024]
        predicting the next step; updates ``cache``."""
        if not cache.prefilled:
            raise ValueError("LM.step: call prefill(cache) first")
        if codes_t.ndim == 2:
            codes_t = codes_t[:, :, None]
        self._check_codes(codes_t, "step")
        return self._step(codes_t, cache)

    def _step(self, codes_t: torch.Tensor, cache: LMCache) -> torch.Tensor:
        x = self.embed(codes_t.to(cache.pos.device))  # [B, 1, d]
        x = x + self._pos(cache.pos[:, None], x)
        for blk, c in zip(self.layers, cache.layers):
            x = blk.step(x, c, cache.ctx)
        cache.pos = cache.pos + 1
        return self._heads(x)[:, :, 0]
