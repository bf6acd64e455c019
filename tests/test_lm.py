"""The LM backbones: parameter counts, conventions, causality, padding, step decoding."""

import json

import pytest
import torch

from ssmttm.constants import CODEBOOK_SIZE, SPECIAL_TOKEN
from ssmttm.models import VARIANTS
from ssmttm.models.config import PAPER_PARAMS_M, LMConfig, from_preset
from ssmttm.models.lm import LM, left_align
from ssmttm.models.params import count_parameters, main as params_main

PREFIX = [v for v in VARIANTS if v.startswith("prefix")]
CROSS = [v for v in VARIANTS if v.startswith("cross")]


def tiny(variant, **kw):
    torch.manual_seed(0)
    return LM(from_preset("tiny", variant, **kw)).eval()


def batch(B=2, K=1, S=12, L=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, CODEBOOK_SIZE, (B, K, S), generator=g)
    codes[:, :, 0] = SPECIAL_TOKEN  # BOS column of the delay pattern
    text = torch.randn(B, L, 768, generator=g)
    return codes, text, torch.ones(B, L, dtype=torch.bool)


# --- parameter counts (meta device) -------------------------------------------------------------
@pytest.mark.parametrize("preset,variant", sorted(PAPER_PARAMS_M))
def test_paper_param_counts_within_0_1_percent(preset, variant):
    n = count_parameters(from_preset(preset, variant)) / 1e6
    assert abs(n - PAPER_PARAMS_M[preset, variant]) / PAPER_PARAMS_M[preset, variant] < 1e-3


def test_prefix_simba_count_is_exact_arithmetic():
    # docs/reference.md §1: 281,041,152 (24 layers) and 72,426,048 (6 layers).
    assert count_parameters(from_preset("paper", "prefix-simba")) == 281_041_152
    assert count_parameters(from_preset("quarter", "prefix-simba")) == 72_426_048


@pytest.mark.parametrize("variant", ["cross-simba", "prefix-mamba"])
def test_depth_matched_variants_near_300m(variant):
    n = count_parameters(from_preset("paper", variant)) / 1e6
    assert 285.0 <= n <= 310.0, n


def test_final_norm_adds_exactly_d_model():
    for preset in ("paper", "tiny"):
        cfg = from_preset(preset, "prefix-simba")
        on = count_parameters(from_preset(preset, "prefix-simba", final_norm=True))
        assert on - count_parameters(cfg) == cfg.d_model


def test_meta_count_equals_real_model():
    cfg = from_preset("tiny", "cross-simba", n_codebooks=4)
    assert count_parameters(cfg) == LM(cfg).num_parameters()


# --- training path ------------------------------------------------------------------------------
@pytest.mark.parametrize("K", [1, 4])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_forward_loss_backward(variant, K):
    lm = tiny(variant, n_codebooks=K).train()
    codes, text, mask = batch(K=K)
    mask[1, 3:] = False
    logits = lm(codes, text, mask)
    assert logits.shape == (2, K, 12, CODEBOOK_SIZE)
    loss = lm.loss(logits, codes)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    missing = [n for n, p in lm.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


def test_loss_ignores_special_and_masked_targets_and_smooths():
    torch.manual_seed(0)
    logits = torch.randn(1, 2, 4, CODEBOOK_SIZE)
    codes = torch.tensor([[[SPECIAL_TOKEN, 3, 5, 7], [SPECIAL_TOKEN, SPECIAL_TOKEN, 9, 11]]])
    mask = torch.ones_like(codes, dtype=torch.bool)
    mask[0, 1, 3] = False
    got = LM.loss(logits, codes, mask)
    ref = torch.nn.functional.cross_entropy(
        torch.stack([logits[0, 0, 1], logits[0, 0, 2], logits[0, 0, 3], logits[0, 1, 2]]),
        torch.tensor([3, 5, 7, 9]), label_smoothing=0.1)
    assert torch.allclose(got, ref)
    logits2 = logits.clone()
    logits2[0, 0, 0] += 5.0  # a SPECIAL target: no influence
    logits2[0, 1, 3] += 5.0  # masked out: no influence
    assert torch.allclose(LM.loss(logits2, codes, mask), got)


# --- conventions --------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_causality(variant):
    lm = tiny(variant, n_codebooks=2)
    codes, text, mask = batch(K=2)
    t0 = 6
    other = codes.clone()
    other[:, :, t0:] = torch.randint(0, CODEBOOK_SIZE, other[:, :, t0:].shape)
    with torch.no_grad():
        a, b = lm(codes, text, mask), lm(other, text, mask)
    # logits[:, :, t] predicts codes[:, :, t] from codes[:, :, :t]: steps <= t0 cannot see the change
    assert torch.allclose(a[:, :, :t0 + 1], b[:, :, :t0 + 1], atol=1e-6)
    assert not torch.allclose(a[:, :, t0 + 1:], b[:, :, t0 + 1:], atol=1e-3)


@pytest.mark.parametrize("variant", PREFIX)
def test_prefix_first_logit_is_last_text_position(variant):
    # The first audio logit depends on the text only (no audio token has been seen yet).
    lm = tiny(variant)
    codes, text, mask = batch()
    other = torch.randint(0, CODEBOOK_SIZE, codes.shape)
    with torch.no_grad():
        a, b = lm(codes, text, mask)[:, :, 0], lm(other, text, mask)[:, :, 0]
        c = lm(codes, text.flip(1), mask)[:, :, 0]
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, c, atol=1e-3)


def test_left_align_moves_real_tokens_to_the_end():
    x = torch.arange(5.0)[None, :, None].repeat(2, 1, 1)
    m = torch.tensor([[True, True, True, False, False], [False, True, True, True, True]])
    y, ym = left_align(x, m)
    assert y[0, :, 0].tolist()[2:] == [0.0, 1.0, 2.0] and ym[0].tolist() == [False, False, True, True, True]
    assert torch.equal(y[1], x[1]) and torch.equal(ym[1], m[1])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_text_padding_cannot_change_audio_logits(variant):
    lm = tiny(variant, n_codebooks=2)
    codes, text, _ = batch(B=1, K=2, L=4)
    with torch.no_grad():
        ref = lm(codes, text, torch.ones(1, 4, dtype=torch.bool))
        g = torch.Generator().manual_seed(7)
        for side, n_pad in (("right", 3), ("left", 2), ("right", 1)):
            junk = 100 * torch.randn(1, n_pad, 768, generator=g)
            real = torch.ones(1, 4, dtype=torch.bool)
            pad = torch.zeros(1, n_pad, dtype=torch.bool)
            t, m = ((torch.cat([text, junk], 1), torch.cat([real, pad], 1)) if side == "right"
                    else (torch.cat([junk, text], 1), torch.cat([pad, real], 1)))
            # batched with a longer, different example, as collate builds it
            t2 = torch.cat([t, torch.randn(1, t.shape[1], 768, generator=g)])
            m2 = torch.cat([m, torch.ones_like(m)])
            out = lm(codes.repeat(2, 1, 1), t2, m2)[:1]
            assert torch.allclose(out, ref, atol=1e-5), (side, n_pad, (out - ref).abs().max())
        # the test can fail: the same junk marked as real text does change the logits
        bad = lm(codes, t, torch.ones(1, t.shape[1], dtype=torch.bool))
        assert not torch.allclose(bad, ref, atol=1e-3)


# --- decoding -----------------------------------------------------------------------------------
def _decode_all(lm, codes, text, mask):
    B, K, S = codes.shape
    cache = lm.allocate_cache(B, text, mask)
    out = [lm.prefill(cache)]
    for t in range(S - 1):
        out.append(lm.step(codes[:, :, t:t + 1], cache))
    return torch.stack(out, dim=2)


@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_step_equals_forward(variant, K):
    lm = tiny(variant, n_codebooks=K)
    codes, text, mask = batch(B=2, K=K, S=20)  # S > chunk size 16 and > KV cache's first capacity
    mask[0, 3:] = False  # mixed text lengths in one batch
    with torch.no_grad():
        full = lm(codes, text, mask)
    stepped = _decode_all(lm, codes, text, mask)
    assert stepped.shape == full.shape
    assert torch.allclose(stepped, full, atol=1e-4), (stepped - full).abs().max()


def test_hybrid_layout_builds_and_steps():
    layout = [["mamba2", "mlp"], ["self_attn", "mlp"], ["mamba2", "mlp"], ["self_attn", "mlp"]]
    cfg = from_preset("tiny", "prefix-simba", layout=layout, n_codebooks=2)
    assert cfg.n_layers == 4 and cfg.conditioning == "prefix"
    torch.manual_seed(0)
    lm = LM(cfg).eval()
    kinds = [[s.kind for s in blk.sublayers] for blk in lm.layers]
    assert kinds == layout
    codes, text, mask = batch(K=2, S=10)
    mask[1, :2] = False
    with torch.no_grad():
        full = lm(codes, text, mask)
    assert torch.allclose(_decode_all(lm, codes, text, mask), full, atol=1e-4)
    cross = from_preset("tiny", "cross-simba", layout=[["mamba2", "mlp"], ["self_attn", "cross_attn", "mlp"]])
    assert LM(cross).num_parameters() > 0


def test_state_dict_names_follow_mamba_ssm_and_torch_mha():
    lm = tiny("cross-simba")
    names = set(lm.state_dict())
    for n in ("layers.0.sublayers.0.mixer.in_proj.weight", "layers.0.sublayers.0.mixer.A_log",
              "layers.0.sublayers.0.mixer.norm.weight", "layers.0.sublayers.1.mixer.in_proj_weight",
              "layers.0.sublayers.1.mixer.out_proj.bias", "layers.1.sublayers.2.mixer.fc2.weight",
              "layers.1.sublayers.2.norm.weight", "emb.0.weight", "heads.0.weight"):
        assert n in names, n


def test_self_attention_loads_torch_multihead_attention():
    from ssmttm.models.attention import SelfAttention

    torch.manual_seed(0)
    ref = torch.nn.MultiheadAttention(32, 4, batch_first=True)
    ours = SelfAttention(32, 4)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 7, 32)
    causal = torch.ones(7, 7, dtype=torch.bool).triu(1)  # torch: True = not allowed
    want = ref(x, x, x, attn_mask=causal, need_weights=False)[0]
    assert torch.allclose(ours(x), want, atol=1e-5)


def test_self_attention_kv_cache_writes_in_place_until_it_doubles():
    """Decoding writes keys/values into the preallocated buffers; only a full cache is reallocated
    (capacity doubled), and outputs across a growth equal the full forward."""
    from ssmttm.models.attention import SelfAttention

    torch.manual_seed(0)
    attn = SelfAttention(32, 4).eval()
    x = torch.randn(2, 11, 32)
    with torch.no_grad():
        full = attn(x)
        cache = attn.allocate_cache(2, capacity=4)
        outs = [attn(x[:, :3], cache=cache)]
        grew = 0
        for t in range(3, 11):
            cap, ptrs = cache.k.shape[2], (cache.k.data_ptr(), cache.v.data_ptr(), cache.mask.data_ptr())
            outs.append(attn.step(x[:, t:t + 1], cache))
            if t < cap:
                assert (cache.k.data_ptr(), cache.v.data_ptr(), cache.mask.data_ptr()) == ptrs, t
            else:
                grew += 1
                assert cache.k.shape[2] >= 2 * cap
        assert grew == 1 and cache.length == 11 and cache.k.shape[2] == 16
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-5)


# --- config and CLI -----------------------------------------------------------------------------
def test_config_round_trip_and_validation():
    cfg = from_preset("tiny", "cross-transformer", n_codebooks=4, final_norm=True)
    back = LMConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    hyb = from_preset("tiny", "prefix-simba", layout=[["mamba2"], ["self_attn", "mlp"]])
    assert LMConfig.from_dict(hyb.to_dict()) == hyb
    with pytest.raises(ValueError, match="bogus"):
        LMConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="n_heads"):
        from_preset("tiny", "cross-transformer", n_heads=5)
    with pytest.raises(ValueError, match="cross_attn"):
        from_preset("tiny", "prefix-simba", layout=[["mamba2", "cross_attn"]])
    with pytest.raises(ValueError, match="unknown variant"):
        from_preset("tiny", "nope")


def test_forward_rejects_rows_without_text():
    lm = tiny("prefix-simba")
    codes, text, mask = batch()
    mask[1] = False
    with pytest.raises(ValueError, match="real text token"):
        lm(codes, text, mask)


def test_params_cli(tmp_path, capsys):
    out = tmp_path / "params.tsv"
    assert params_main(["--presets", "paper", "quarter", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for number in ("281.04", "305.22", "72.43", "78.47", "302.88", "298.54"):
        assert number in text, number
    import pandas as pd

    df = pd.read_csv(out, sep="\t")
    assert len(df) == 2 * len(VARIANTS)
    row = df[(df.preset == "paper") & (df.variant == "prefix-simba")].iloc[0]
    assert row.params == 281_041_152
    with pytest.raises(SystemExit):
        params_main(["--presets", "huge"])
