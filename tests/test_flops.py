"""FLOPs counting (ssmttm.train.flops): the attention kernels torch's counter misses on CPU, and counting
from shapes (fake tensors) agreeing with a real run."""

import pytest
import torch
import torch.nn.functional as F

from ssmttm.models import VARIANTS
from ssmttm.models.config import from_preset
from ssmttm.train import flops

B, H, D = 2, 4, 8


def _qkv(lq, lk, device="cpu", grad=False):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, n, D, generator=g) for n in (lq, lk, lk))
    q, k, v = (t.to(device).requires_grad_(grad) for t in (q, k, v))
    return q, k, v


def _count(fn) -> tuple[int, dict]:
    with flops.flop_counter() as counter:
        fn()
    return counter.get_total_flops(), {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}


@pytest.mark.parametrize("case", ["causal", "mask", "cross"])
def test_cpu_attention_forward_is_4_b_h_lq_lk_d(case, one_thread):
    """The CPU kernel counts 4 B H Lq Lk d (QK^T and PV, 2 FLOPs per multiply-add), a causal or masked
    call over the full square, as the unfused path (meta device: two bmm) counts it."""
    lq, lk = (16, 12) if case == "cross" else (16, 16)
    kw = {"causal": {"is_causal": True}, "mask": {"attn_mask": torch.ones(lq, lk, dtype=torch.bool).tril()},
          "cross": {}}[case]
    total, per_op = _count(lambda: F.scaled_dot_product_attention(*_qkv(lq, lk), **kw))
    assert total == 4 * B * H * lq * lk * D == 2 * B * H * lq * lk * D * 2
    assert per_op == {"aten._scaled_dot_product_flash_attention_for_cpu": total}
    meta_kw = {k: (v.to("meta") if torch.is_tensor(v) else v) for k, v in kw.items()}
    unfused, ops = _count(lambda: F.scaled_dot_product_attention(*_qkv(lq, lk, "meta"), **meta_kw))
    assert unfused == total and set(ops) == {"aten.bmm"}


def test_cpu_attention_backward_is_torch_convention(one_thread):
    """Backward: the scores recomputed plus four products, 2.5 x the forward (torch's formula for its CUDA
    kernels); the default counter sees neither CPU kernel."""
    from torch.utils.flop_counter import FlopCounterMode

    q, k, v = _qkv(16, 16, grad=True)
    total, per_op = _count(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward())
    fwd = 4 * B * H * 16 * 16 * D
    assert per_op == {"aten._scaled_dot_product_flash_attention_for_cpu": fwd,
                      "aten._scaled_dot_product_flash_attention_for_cpu_backward": 5 * fwd // 2}
    with FlopCounterMode(display=False) as plain:
        F.scaled_dot_product_attention(*_qkv(16, 16), is_causal=True)
    assert plain.get_total_flops() in (0, fwd)  # 0 in torch <= 2.13; equal if torch learns the kernel


def test_every_attention_kernel_has_a_formula():
    names = {str(op) for op in flops.attention_formulas()}
    assert "aten._scaled_dot_product_flash_attention_for_cpu" in names
    assert "aten._scaled_dot_product_flash_attention_for_cpu_backward" in names
    assert all(hasattr(torch.ops.aten, n) for n in ("_scaled_dot_product_flash_attention",
                                                    "_scaled_dot_product_efficient_attention"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_counting_from_shapes_matches_a_real_run(variant, one_thread):
    """Fake tensors count exactly what a real CPU forward counts, attention included, and the trainer's
    measurement (a real forward on the batch) agrees."""
    cfg = from_preset("tiny", variant, n_codebooks=2, dropout=0.0)
    fake = flops.lm_forward_cost(cfg, 40, 7)
    real = flops.lm_forward_cost(cfg, 40, 7, fake=False)
    assert fake["forward_flops"] == real["forward_flops"] > 0 and fake["per_op"] == real["per_op"]
    assert (fake["n_params"], fake["n_params_non_embedding"]) == (real["n_params"], real["n_params_non_embedding"])
    attention = fake["per_op"].get("aten._scaled_dot_product_flash_attention_for_cpu", 0)
    assert (attention > 0) == any(k.endswith("_attn") for kinds in cfg.layout for k in kinds)
    batch = (torch.zeros(3, 2, 40, dtype=torch.long), torch.zeros(3, 7, cfg.text_dim),
             torch.ones(3, 7, dtype=torch.bool))
    measured, positions = flops.measure_forward_flops(cfg, *batch)
    assert (measured, positions) == (3 * fake["forward_flops"], 3 * 40)
    assert "per_op" not in flops.lm_forward_cost(cfg)  # parameters only


def test_paper_width_prefix_simba_costs_1_20_times_2n():
    """The SSD scan at d_state 512 makes a paper-size Prefix SiMBA forward cost 1.20 x 2N per position at
    30 s (2584 frames + kappa), counted from shapes in about a second (docs/reference.md §4)."""
    cost = flops.lm_forward_cost(from_preset("paper", "prefix-simba"), 2585, 21)
    assert cost["n_params_non_embedding"] == pytest.approx(281.04e6 - 1025 * 1024, rel=1e-3)
    assert cost["per_position"] / (2 * cost["n_params_non_embedding"]) == pytest.approx(1.200, abs=0.005)
