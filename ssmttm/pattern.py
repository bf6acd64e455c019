"""The codebook delay pattern: the one place codes are interleaved for the language model.

MusicGen-style delay (docs/reference.md §1): codebook k (0-based) is shifted right by k + 1
steps, and :data:`ssmttm.constants.SPECIAL_TOKEN` (1024) fills every position that holds no code:
the BOS column at position 0, the delay filler before each codebook starts and the tail after it
ends. So ``build`` turns ``[K, T]`` codes into a ``[K, T + K]`` sequence::

    out[k, t] = codes[k, t - (k + 1)]   if 0 <= t - (k + 1) < T
              = SPECIAL_TOKEN           otherwise

With kappa = 4 codebooks and a 30 s clip (T = 2584 frames at 86.13 frames/s) the sequence is
2588 steps long, the length the paper trains on. ``revert`` undoes ``build`` exactly, and
``valid_mask`` marks where real codes sit (the loss ignores the rest).

Every function works on numpy arrays and torch tensors alike (leading batch dimensions allowed),
for any K >= 1 and T >= 0, and keeps the input's dtype and device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ssmttm.constants import SPECIAL_TOKEN

NAME = "musicgen-delay"  # recorded in every LM checkpoint (meta.json "pattern"); generation checks it

def _is_torch(x: Any) -> bool:
    mod = type(x).__module__
    return mod.startswith("torch") and hasattr(x, "dtype") and hasattr(x, "device")


def _check_rank(x: Any, what: str) -> tuple[int, int]:
    if x.ndim < 2:
        raise ValueError(f"{what}: expected an array of shape [..., K, T], got shape {tuple(x.shape)}")
    return int(x.shape[-2]), int(x.shape[-1])


def _full(like: Any, shape: tuple[int, ...], value) -> Any:
    if _is_torch(like):
        import torch

        return torch.full(shape, value, dtype=like.dtype, device=like.device)
    return np.full(shape, value, dtype=like.dtype)


def build(codes: Any) -> Any:
    """Apply the delay pattern.

    codes: [..., K, T] integer codes (numpy or torch), K >= 1, T >= 0.
    Returns [..., K, T + K] of the same dtype/device: codebook k occupies steps k+1 .. k+T,
    everything else is SPECIAL_TOKEN (step 0 is the all-special BOS column).
    """
    K, T = _check_rank(codes, "pattern.build")
    if K < 1:
        raise ValueError("pattern.build: K must be >= 1 (got 0 codebooks)")
    out = _full(codes, (*codes.shape[:-2], K, T + K), SPECIAL_TOKEN)
    for k in range(K):
        out[..., k, k + 1:k + 1 + T] = codes[..., k, :]
    return out


def revert(seq: Any) -> Any:
    """Undo :func:`build`.

    seq: [..., K, T + K] delayed sequence. Returns [..., K, T] (a copy), with
    ``revert(build(codes)) == codes`` for every K and T.
    """
    K, S = _check_rank(seq, "pattern.revert")
    T = S - K
    if K < 1 or T < 0:
        raise ValueError(f"pattern.revert: a delayed sequence has at least K + 1 steps; got shape {tuple(seq.shape)}")
    out = _full(seq, (*seq.shape[:-2], K, T), SPECIAL_TOKEN)
    for k in range(K):
        out[..., k, :] = seq[..., k, k + 1:k + 1 + T]
    return out


def valid_mask(K: int, T: int, like: Any = None) -> Any:
    """Where real codes sit in a delayed sequence of K codebooks and T frames.

    Returns bool [K, T + K] (True at out[k, t] for k + 1 <= t <= k + T; K*T True entries): a numpy
    array, or a torch tensor on ``like``'s device when ``like`` is a torch tensor.
    """
    if K < 1 or T < 0:
        raise ValueError(f"pattern.valid_mask: need K >= 1 and T >= 0, got K={K}, T={T}")
    t = np.arange(T + K)[None, :]
    k = np.arange(K)[:, None]
    mask = (t >= k + 1) & (t <= k + T)
    if like is not None and _is_torch(like):
        import torch

        return torch.from_numpy(mask).to(like.device)
    return mask


def delayed_length(T: int, K: int) -> int:
    """Length of the delayed sequence for T frames and K codebooks (T + K; 2584 + 4 = 2588)."""
    return T + K
