"""FLOPs accounting (docs/reference.md §4, the "9 % of MusicGen-small's FLOPs" claim).

Two numbers, both recomputable from a run's logs:

- ``6 N D`` (Kaplan et al.): ``N`` = non-embedding parameters = every trainable LM parameter
  except the per-codebook token embedding tables (``lm.emb``: kappa x 1025 x d_model lookups, no
  matmul). The text projection (768 -> d) and the output heads ARE counted (they are matmuls run
  every step); the frozen T5 encoder is not (its states are precomputed once by text-embed).
  ``D`` = audio sequence positions seen = sum over sequences of their delayed length T + kappa
  (docs/reference.md §1: 128 x 2588 per step); text prefix positions and padding are not counted.
  Paper-size Prefix SiMBA: N = 281.04M - 1025 x 1024 = 279.99M. :func:`flops_6nd` also accepts
  the all-parameter count, which the card reports beside it.
- measured forward FLOPs per position: ``torch.utils.flop_counter.FlopCounterMode`` over one
  forward pass of a fresh model built from the same config with the pure-PyTorch Mamba2 path
  (the mamba_ssm Triton kernels are invisible to the counter, and FLOPs depend only on shapes,
  not weights), divided by the batch's B x S positions. A training step costs about 3 x forward
  (backward ~ 2 x forward), so ``measured_flops_total = 3 x per_position x D``.
"""

from __future__ import annotations

import dataclasses


def count_params(lm, embeddings=None) -> tuple[int, int]:
    """(trainable parameters, non-embedding trainable parameters) of an LM (see module docstring);
    ``embeddings``: the lookup tables left out of N (default ``lm.emb``)."""
    total = sum(p.numel() for p in lm.parameters() if p.requires_grad)
    emb = sum(p.numel() for e in (lm.emb if embeddings is None else embeddings) for p in e.parameters()
              if p.requires_grad)
    return int(total), int(total - emb)


def flops_6nd(n_params: int, tokens: int) -> float:
    """6 x N x D training FLOPs."""
    return 6.0 * float(n_params) * float(tokens)


def measure_forward_flops(cfg, codes, text, text_mask, device=None) -> tuple[int, int]:
    """(forward FLOPs, positions B x S) of one forward pass of ``LM(cfg)`` on this batch.

    codes: [B, K, S] int64; text: [B, L, D]; text_mask: [B, L] bool. A fresh model (pure-PyTorch
    Mamba2, eval mode, fp32) is built on ``device``: the caller keeps its RNG untouched by wrapping
    this in ``torch.random.fork_rng`` (model init draws random numbers).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ssmttm.models.lm import LM

    cfg = dataclasses.replace(cfg, mamba_backend="torch")
    lm = LM(cfg, device=device).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        lm(codes.to(device), text.to(device), text_mask.to(device))
    B, _, S = codes.shape
    return int(counter.get_total_flops()), int(B * S)
