"""Multi-head attention for the LM: causal self-attention (KV cache) and cross-attention to the text.

Parameter layout is exactly ``torch.nn.MultiheadAttention``'s with ``kdim = vdim = embed_dim`` and
biases on: ``in_proj_weight [3d, d]``, ``in_proj_bias [3d]``, ``out_proj.weight [d, d]``,
``out_proj.bias [d]`` (4 d^2 + 4 d parameters), so a state_dict of a torch MultiheadAttention loads
here and back. With it the Cross Transformer (self + cross attention + MLP per block, 24 layers,
d 1024) has 305.22M trainable parameters, within 0.05 % of the paper's 305.08M; the paper's exact
attention layout is not published (dropping the in-projection biases would give 305.07M).

Both modules compute attention with ``torch.nn.functional.scaled_dot_product_attention`` and no
attention dropout (dropout sits after each residual sub-layer, docs/reference.md §1). Masks are
boolean, True = real token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class _MHA(nn.Module):
    """Shared projections (torch MultiheadAttention parameter names)."""

    def __init__(self, d_model: int, n_heads: int, device=None, dtype=None):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"attention: n_heads={n_heads} must divide d_model={d_model}")
        fk = {"device": device, "dtype": dtype}
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model, **fk))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d_model, **fk))
        self.out_proj = nn.Linear(d_model, d_model, bias=True, **fk)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch MultiheadAttention's initialisation.
        if self.in_proj_weight.device.type == "meta":
            return
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, d] -> [B, H, T, dh]
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)

    def _proj(self, x: torch.Tensor, which: slice) -> torch.Tensor:
        return self._heads(F.linear(x, self.in_proj_weight[which], self.in_proj_bias[which]))

    def _out(self, y: torch.Tensor) -> torch.Tensor:  # [B, H, T, dh] -> [B, T, d]
        B, H, T, dh = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(B, T, H * dh))


@dataclass
class KVCache:
    """Self-attention cache: keys/values [B, H, capacity, dh] (grown by doubling), key mask
    [B, capacity] (True = real key) and the number of filled positions."""

    k: torch.Tensor
    v: torch.Tensor
    mask: torch.Tensor
    length: int = 0

    def append(self, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> None:
        n = k.shape[2]
        need = self.length + n
        if need > self.k.shape[2]:
            cap = max(need, 2 * self.k.shape[2], 16)
            grow = cap - self.k.shape[2]
            pad = lambda t: F.pad(t, (0, 0, 0, grow))  # noqa: E731
            self.k, self.v = pad(self.k), pad(self.v)
            self.mask = F.pad(self.mask, (0, grow), value=False)
        self.k[:, :, self.length:need] = k
        self.v[:, :, self.length:need] = v
        self.mask[:, self.length:need] = mask
        self.length = need


class SelfAttention(_MHA):
    """Causal multi-head self-attention with an optional key padding mask and a KV cache."""

    def allocate_cache(self, batch_size: int, capacity: int = 256, dtype=None, device=None) -> KVCache:
        dtype = dtype or self.in_proj_weight.dtype
        device = device or self.in_proj_weight.device
        shape = (batch_size, self.n_heads, capacity, self.head_dim)
        return KVCache(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device),
                       torch.zeros(batch_size, capacity, dtype=torch.bool, device=device))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """x: [B, T, d]; mask: [B, T] bool (True = real) or None -> [B, T, d].

        Query t attends to keys s <= t that are real. A padded query also attends to itself so
        its row is never empty (no NaN); its output is never read by a real position. With
        ``cache`` (empty), its keys/values are stored for :meth:`step`.
        """
        B, T, d = x.shape
        q = self._proj(x, slice(0, d))
        k = self._proj(x, slice(d, 2 * d))
        v = self._proj(x, slice(2 * d, 3 * d))
        if cache is not None:
            cache.append(k, v, torch.ones(B, T, dtype=torch.bool, device=x.device) if mask is None else mask)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            eye = torch.eye(T, dtype=torch.bool, device=x.device)
            allowed = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            allowed = allowed & (mask[:, None, :] | eye)  # [B, T(query), T(key)]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])
        return self._out(y)

    def step(self, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """x: [B, 1, d] (a real token) -> [B, 1, d]; appends to ``cache``."""
        B, _, d = x.shape
        q = self._proj(x, slice(0, d))
        cache.append(self._proj(x, slice(d, 2 * d)), self._proj(x, slice(2 * d, 3 * d)),
                     torch.ones(B, 1, dtype=torch.bool, device=x.device))
        n = cache.length
        y = F.scaled_dot_product_attention(q, cache.k[:, :, :n], cache.v[:, :, :n],
                                           attn_mask=cache.mask[:, None, None, :n])
        return self._out(y)


@dataclass
class TextKV:
    """Cross-attention cache: the text keys/values [B, H, L, dh], computed once, and mask [B, L]."""

    k: torch.Tensor
    v: torch.Tensor
    mask: torch.Tensor


class CrossAttention(_MHA):
    """Multi-head attention from the audio sequence (queries) to the projected text states."""

    def text_kv(self, text: torch.Tensor, text_mask: torch.Tensor) -> TextKV:
        """text: [B, L, d] projected states; text_mask: [B, L] bool (each row needs a real token)."""
        d = self.d_model
        return TextKV(self._proj(text, slice(d, 2 * d)), self._proj(text, slice(2 * d, 3 * d)), text_mask)

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                cache: TextKV | None = None) -> torch.Tensor:
        """x: [B, T, d] queries; text: [B, L, d]; text_mask: [B, L] bool -> [B, T, d]."""
        kv = cache if cache is not None else self.text_kv(text, text_mask)
        return self.step(x, kv)

    def step(self, x: torch.Tensor, cache: TextKV) -> torch.Tensor:
        """x: [B, T, d] (T = 1 when decoding) against the cached text keys/values -> [B, T, d]."""
        q = self._proj(x, slice(0, self.d_model))
        y = F.scaled_dot_product_attention(q, cache.k, cache.v, attn_mask=cache.mask[:, None, None, :])
        return self._out(y)


def sinusoidal(positions: torch.Tensor, dim: int, max_period: float = 10000.0,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal position embedding (max period 10000, docs/reference.md §1).

    positions: [...] integer or float tensor -> [..., dim]: the first half cos, the second half sin
    of ``position * max_period ** (-i / (dim // 2))`` (the MusicGen layout).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    ang = positions.to(torch.float32)[..., None] * freqs
    emb = torch.cat([torch.cos(ang), torch.sin(ang)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb.to(dtype)
