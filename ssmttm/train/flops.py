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

Attention (docs/reference.md §6). torch's counter has formulas for the CUDA attention kernels but
none for the CPU one (``aten._scaled_dot_product_flash_attention_for_cpu``), which every CPU call of
``F.scaled_dot_product_attention`` runs, so attention counted 0 there. :func:`flop_counter` adds one
formula for every fused attention kernel, forward and backward, the same ones torch uses for its
CUDA kernels: forward 4 x B x H x Lq x Lk x d (Q K^T and P V, 2 FLOPs per multiply-add), backward
2.5 x that (the scores recomputed plus four products). A causal call is counted over the whole
Lq x Lk square, as torch counts its CUDA kernels and as the unfused path (two bmm, also what a
meta-device or MPS run decomposes to) counts it, so one model counts the same on every device and
kernel; a kernel that skips the masked half does about half of that work.

:func:`count_forward_flops` counts a forward pass without running it: the model and its inputs are
fake tensors (shapes only), so a paper-size model at a 30 s sequence costs about a second on a CPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

# Fused attention kernels that take (query, key, value, ...) [B, H, L, d] first, and their backward
# kernels, which take (grad_out, query, key, value, ...). A name the installed torch lacks is skipped.
ATTENTION_FORWARD = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                     "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
                     "_scaled_dot_product_fused_attention_overrideable", "_scaled_dot_product_attention_math_for_mps")
ATTENTION_BACKWARD = ("_scaled_dot_product_flash_attention_for_cpu_backward",
                      "_scaled_dot_product_flash_attention_backward",
                      "_scaled_dot_product_efficient_attention_backward",
                      "_scaled_dot_product_cudnn_attention_backward",
                      "_scaled_dot_product_fused_attention_overrideable_backward")


def attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Forward FLOPs of one attention call: 4 x B x H x Lq x Lk x d (torch's ``sdpa_flop_count``;
    shapes [B, H, L, d], key/value heads may divide the query heads). Causal or masked: the full square."""
    from torch.utils.flop_counter import sdpa_flop_count

    return int(sdpa_flop_count(query_shape, key_shape, value_shape))


def attention_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                             **kwargs) -> int:
    """Backward FLOPs of one attention call (torch's ``sdpa_backward_flop_count``): 2.5 x the forward."""
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return int(sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape))


def attention_formulas() -> dict:
    """{attention kernel (aten op packet): its formula} for every kernel of ATTENTION_FORWARD / _BACKWARD
    that the installed torch has."""
    import torch

    formulas = {}
    for names, formula in ((ATTENTION_FORWARD, attention_flops), (ATTENTION_BACKWARD, attention_backward_flops)):
        for name in names:
            op = getattr(torch.ops.aten, name, None)
            if op is not None:
                formulas[op] = formula
    return formulas


def flop_counter():
    """A ``torch.utils.flop_counter.FlopCounterMode`` (no printout) that also counts the attention kernels
    (module docstring): the one counter of this project."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=attention_formulas())


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

    from ssmttm.models.lm import LM

    cfg = dataclasses.replace(cfg, mamba_backend="torch")
    lm = LM(cfg, device=device).eval()
    with torch.no_grad(), flop_counter() as counter:
        lm(codes.to(device), text.to(device), text_mask.to(device))
    B, _, S = codes.shape
    return int(counter.get_total_flops()), int(B * S)


def _all_masks_true():
    """A dispatch mode answering every read of a boolean tensor's value with True and refusing any other
    read: under fake tensors a model's mask checks (``bool(mask.all())``) have no value to read, and
    :func:`count_forward_flops` only ever passes masks that are all True (nothing padded)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class AllMasksTrue(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                if args[0].dtype != torch.bool:
                    raise RuntimeError(f"count_forward_flops: the forward reads a {args[0].dtype} value; counting "
                                       "from shapes works only for code whose control flow reads masks alone")
                return True
            return func(*args, **(kwargs or {}))

    return AllMasksTrue()


def count_forward_flops(build: Callable[[], Any], run: Callable[[Any], Any],
                        fake: bool = True) -> tuple[int, Any, dict]:
    """(forward FLOPs, the module, FLOPs per aten op) of ``run(build())`` under :func:`flop_counter`, no grad.

    ``fake`` (default): the module and every tensor ``run`` makes are fake tensors (shapes, no data, CPU as
    their device, so the CPU kernels' formulas apply), which counts the same as a real CPU run (checked in
    tests/test_flops.py) at a fraction of the cost; ``run`` must pass masks that are all True. ``fake=False``
    builds and runs for real. Parameter counts of the returned module are exact either way."""
    import torch

    def count():
        module = build()
        with torch.no_grad(), flop_counter() as counter:
            if fake:
                with _all_masks_true():
                    run(module)
            else:
                run(module)
        per_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
        return int(counter.get_total_flops()), module, per_op

    if not fake:
        return count()
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        return count()


def lm_forward_cost(cfg, positions: int | None = None, text_len: int | None = None, fake: bool = True) -> dict:
    """Parameters and counted forward FLOPs of ``LM(cfg)`` (pure-PyTorch Mamba2), built from shapes.

    One sequence of ``positions`` delayed audio positions ([1, kappa, positions] codes, the S of
    :func:`measure_forward_flops`) with ``text_len`` real (unpadded) text states. Returns n_params,
    n_params_non_embedding and, when both lengths are given, forward_flops, per_position (forward FLOPs
    / positions, text prefix included in the numerator as in a training batch) and per_op."""
    import torch

    from ssmttm.models.lm import LM

    cfg = dataclasses.replace(cfg, mamba_backend="torch")
    counted = positions is not None and text_len is not None

    def run(lm) -> None:
        if counted:
            lm(torch.zeros(1, cfg.n_codebooks, int(positions), dtype=torch.long),
               torch.zeros(1, int(text_len), cfg.text_dim), torch.ones(1, int(text_len), dtype=torch.bool))

    flops, lm, per_op = count_forward_flops(lambda: LM(cfg).eval(), run, fake=fake)
    n, n_non_emb = count_params(lm)
    out = {"n_params": n, "n_params_non_embedding": n_non_emb}
    if counted:
        out.update(forward_flops=flops, positions=int(positions), text_len=int(text_len),
                   per_position=flops / int(positions), per_op=per_op)
    return out
