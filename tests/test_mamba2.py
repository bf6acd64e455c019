"""Pure-PyTorch Mamba2 (ssmttm.models.mamba2): scan exactness, mamba_ssm layout, decoding, masking."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from ssmttm.models.mamba2 import (Mamba2, Mamba2Cache, _mamba_ssm_usable, make_mamba2, ssd_chunked,
                                  ssd_naive)
from ssmttm.models.norms import RMSNorm, RMSNormGated


def _small(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(d_model=16, d_state=8, d_conv=4, expand=2, headdim=4, ngroups=1, chunk_size=5)
    cfg.update(kw)
    return Mamba2(**cfg).eval()


def _scan_inputs(L, G=1, seed=0, b=2, H=4, P=3, N=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, L, H, P, generator=g)
    dt = F.softplus(torch.randn(b, L, H, generator=g) - 1.0)  # after softplus, like the module
    A = -torch.empty(H).uniform_(1.0, 8.0, generator=g)
    B = torch.randn(b, L, G, N, generator=g)
    C = torch.randn(b, L, G, N, generator=g)
    D = torch.randn(H, generator=g)
    h0 = torch.randn(b, H, P, N, generator=g)
    return x, dt, A, B, C, D, h0


# ------------------------------------------------------------------------------------------ scan
@pytest.mark.parametrize("chunk", [1, 3, 16, 64])
@pytest.mark.parametrize("L", [1, 5, 63, 64, 65, 200])
def test_chunked_scan_equals_naive_recurrence(chunk, L):
    for G, use_d, use_h0 in [(1, False, False), (1, True, True), (2, True, False), (2, False, True)]:
        x, dt, A, B, C, D, h0 = _scan_inputs(L, G=G, seed=L * 7 + chunk)
        D = D if use_d else None
        h0 = h0 if use_h0 else None
        y_ref, h_ref = ssd_naive(x, dt, A, B, C, D=D, initial_state=h0)
        y, h = ssd_chunked(x, dt, A, B, C, chunk, D=D, initial_state=h0, return_final_state=True)
        assert y.shape == x.shape and h.shape == h_ref.shape
        torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)
        y_only = ssd_chunked(x, dt, A, B, C, chunk, D=D, initial_state=h0)
        assert torch.equal(y_only, y)


def test_naive_recurrence_is_the_closed_form():
    # one head, one state dim, no decay (A -> 0): h_t = sum dt*x*B, y_t = C_t h_t + D x_t
    x = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    dt = torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1)
    B = torch.tensor([1.0, -1.0, 2.0]).view(1, 3, 1, 1)
    C = torch.tensor([2.0, 1.0, 1.0]).view(1, 3, 1, 1)
    y, h = ssd_naive(x, dt, torch.zeros(1), B, C, D=torch.tensor([10.0]))
    h_t = torch.tensor([0.5, 0.5 - 2.0, 0.5 - 2.0 + 12.0])
    expected = torch.tensor([2.0, 1.0, 1.0]) * h_t + 10.0 * torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(y.flatten(), expected)
    torch.testing.assert_close(h.flatten(), h_t[-1:])


def test_chunked_scan_keeps_input_dtype_and_accumulates_in_float32():
    x, dt, A, B, C, D, _ = _scan_inputs(40)
    y = ssd_chunked(x.bfloat16(), dt.bfloat16(), A, B.bfloat16(), C.bfloat16(), 16, D=D)
    assert y.dtype == torch.bfloat16
    y_ref, _ = ssd_naive(x.bfloat16(), dt.bfloat16(), A, B.bfloat16(), C.bfloat16(), D=D)
    torch.testing.assert_close(y.float(), y_ref, atol=2e-2, rtol=2e-2)


# ---------------------------------------------------------------------------------------- layout
MAMBA_SSM_LAYOUT_1024 = {  # mamba_ssm 2.x Mamba2(1024, d_state=512, headdim=64, ngroups=1)
    # state_dict order: a module's own parameters come before its submodules'
    "dt_bias": (32,),
    "A_log": (32,),
    "D": (32,),
    "in_proj.weight": (5152, 1024),  # 2*2048 + 2*512 + 32 rows: [z, x, B, C, dt]
    "conv1d.weight": (3072, 1, 4),
    "conv1d.bias": (3072,),
    "norm.weight": (2048,),
    "out_proj.weight": (1024, 2048),
}


def test_parameter_names_and_shapes_match_mamba_ssm():
    m = Mamba2(1024, d_state=512, d_conv=4, expand=2, headdim=64, ngroups=1, device="meta")
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == MAMBA_SSM_LAYOUT_1024
    assert list(shapes) == list(MAMBA_SSM_LAYOUT_1024)  # registration order too
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == 7_390_304  # docs/reference.md §1


def test_initialisation_follows_mamba_ssm():
    m = Mamba2(64, d_state=16, headdim=8, device="cpu")  # 16 heads
    dt = F.softplus(m.dt_bias.detach())
    assert torch.all(dt >= 1e-3 - 1e-6) and torch.all(dt <= 0.1 + 1e-6)
    A = torch.exp(m.A_log.detach())
    assert torch.all(A >= 1.0) and torch.all(A <= 16.0)
    assert torch.equal(m.D.detach(), torch.ones(16))
    assert torch.equal(m.norm.weight.detach(), torch.ones(128))
    for name in ("dt_bias", "A_log", "D"):
        assert getattr(getattr(m, name), "_no_weight_decay", False), name
    assert not getattr(m.in_proj.weight, "_no_weight_decay", False)


# -------------------------------------------------------------------------------------- forward
def test_forward_shape_and_causality():
    m = _small()
    u = torch.randn(3, 17, 16)
    with torch.no_grad():
        y = m(u)
        assert y.shape == u.shape and torch.isfinite(y).all()
        for t in (0, 3, 9, 15):
            v = u.clone()
            v[:, t + 1:] = torch.randn_like(v[:, t + 1:]) * 5
            y2 = m(v)
            torch.testing.assert_close(y2[:, :t + 1], y[:, :t + 1], atol=1e-6, rtol=1e-6)
            assert not torch.allclose(y2[:, t + 1:], y[:, t + 1:])


def test_forward_gradients_reach_every_parameter():
    m = _small()
    m(torch.randn(2, 11, 16)).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("ngroups", [1, 2])
@pytest.mark.parametrize("prefix", [1, 2, 3, 4, 9])
def test_prefill_then_step_equals_full_forward(ngroups, prefix):
    m = _small(seed=prefix, ngroups=ngroups)
    u = torch.randn(2, 14, 16)
    with torch.no_grad():
        full = m(u)
        cache = m.allocate_inference_cache(2)
        assert isinstance(cache, Mamba2Cache)
        assert cache.conv_state.shape == (2, m.conv_dim, 4)
        assert cache.ssm_state.shape == (2, m.nheads, m.headdim, m.d_state)
        cache.ssm_state.fill_(3.0)  # stale content must be overwritten by the prefill
        outs = [m(u[:, :prefix], cache=cache)]
        outs += [m.step(u[:, t:t + 1], cache) for t in range(prefix, 14)]
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-5)


def test_step_from_empty_cache_equals_forward():
    m = _small(seed=3)
    u = torch.randn(1, 6, 16)
    with torch.no_grad():
        cache = m.allocate_inference_cache(1)
        steps = torch.cat([m.step(u[:, t:t + 1], cache) for t in range(6)], dim=1)
        torch.testing.assert_close(steps, m(u), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="one token"):
        m.step(u[:, :2], cache)


def _rebuilding_step(m, u, cache):
    """Mamba2.step as it was before issue 14: the conv window rolled into a new tensor and the SSM
    state rebuilt out of place, both copied back. The reference the in-place step must equal."""
    b = u.shape[0]
    z, xBC, dt = torch.split(m.in_proj(u[:, 0]), [m.d_inner, m.conv_dim, m.nheads], dim=-1)
    conv = cache.conv_state
    conv.copy_(torch.roll(conv, shifts=-1, dims=-1))
    conv[:, :, -1] = xBC
    xBC = (conv * m.conv1d.weight[:, 0]).sum(dim=-1) + m.conv1d.bias
    xBC = m.act(xBC).to(u.dtype)
    x, B, C = torch.split(xBC, [m.d_inner, m.ngroups * m.d_state, m.ngroups * m.d_state], dim=-1)
    rep = m.nheads // m.ngroups
    x = x.float().view(b, m.nheads, m.headdim)
    B = B.float().view(b, m.ngroups, m.d_state).repeat_interleave(rep, dim=1)
    C = C.float().view(b, m.ngroups, m.d_state).repeat_interleave(rep, dim=1)
    dt = F.softplus(dt.float() + m.dt_bias.float())
    decay = torch.exp(dt * -torch.exp(m.A_log.float()))
    h = cache.ssm_state.float() * decay[..., None, None] + (dt[..., None] * x)[..., None] * B[:, :, None, :]
    cache.ssm_state.copy_(h)
    y = torch.einsum("bhpn,bhn->bhp", h, C) + m.D.float()[:, None] * x
    y = m.norm(y.reshape(b, m.d_inner).to(u.dtype), z)
    return m.out_proj(y)[:, None]


def _clone_cache(c):
    conv = torch.empty_like(c.conv_state.transpose(1, 2)).transpose(1, 2)  # same channel-last layout
    return Mamba2Cache(conv.copy_(c.conv_state), c.ssm_state.clone())


@pytest.mark.parametrize("ngroups", [1, 2])
def test_step_updates_the_cache_in_place_and_equals_the_rebuilding_step(ngroups):
    m = _small(seed=11, ngroups=ngroups)
    u = torch.randn(3, 12, 16)
    with torch.no_grad():
        cache = m.allocate_inference_cache(3)
        ptrs = (cache.conv_state.data_ptr(), cache.ssm_state.data_ptr())
        m(u[:, :3], cache=cache)
        ref = _clone_cache(cache)
        for t in range(3, 12):
            out = m.step(u[:, t:t + 1], cache)
            assert torch.equal(out, _rebuilding_step(m, u[:, t:t + 1], ref))  # bitwise: the same arithmetic
            assert torch.equal(cache.conv_state, ref.conv_state) and torch.equal(cache.ssm_state, ref.ssm_state)
            assert (cache.conv_state.data_ptr(), cache.ssm_state.data_ptr()) == ptrs
        assert cache.conv_state.stride() == ref.conv_state.stride()  # still the channel-last layout


def test_step_allocates_one_state_sized_buffer_not_three():
    """The SSM state is updated inside the cache's own storage: per step the only new buffer the size
    of the state is the term added to it (the rebuilding step made the decayed state, the term and
    their sum, then copied back)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class NewStorages(TorchDispatchMode):
        def __init__(self, known):
            super().__init__()
            self.known, self.big, self.seen = known, [], set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in (out if isinstance(out, (tuple, list)) else [out]):
                if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.known:
                    if t.untyped_storage().nbytes() >= limit and t.untyped_storage().data_ptr() not in self.seen:
                        self.seen.add(t.untyped_storage().data_ptr())
                        self.big.append(str(func))
            return out

    m = _small(seed=4, d_state=16)  # SSM state 512 and conv window 256 floats per row
    u = torch.randn(2, 1, 16)
    with torch.no_grad():
        for step, buffers in ((m.step, 1), (lambda x, c: _rebuilding_step(m, x, c), 3)):
            cache = m.allocate_inference_cache(2)
            limit = cache.ssm_state.numel() * 4
            known = {t.untyped_storage().data_ptr() for t in [u, cache.conv_state, cache.ssm_state, *m.parameters()]}
            step(u, cache)  # warm-up outside the mode
            with NewStorages(known) as mode:
                step(u, cache)
            assert len(mode.big) == buffers, mode.big


def test_left_padding_mask_gives_the_unpadded_outputs():
    m = _small(seed=5)
    lengths, pads = [7, 12, 3], [5, 0, 9]  # arbitrary pad counts, incl. none and > d_conv
    T = max(n + p for n, p in zip(lengths, pads))
    u = torch.randn(3, T, 16) * 50.0  # pad content is garbage on purpose
    mask = torch.zeros(3, T, dtype=torch.bool)
    real = []
    for i, n in enumerate(lengths):
        mask[i, T - n:] = True
        real.append(torch.randn(1, n, 16))
        u[i, T - n:] = real[-1][0]
    with torch.no_grad():
        y = m(u, mask=mask)
        cache = m.allocate_inference_cache(3)
        m(u, mask=mask, cache=cache)
        nxt = torch.randn(3, 2, 16)
        steps = torch.cat([m.step(nxt[:, t:t + 1], cache) for t in range(2)], dim=1)
        assert torch.all(y[~mask] == 0)  # x = 0 there: pads add nothing to the residual stream
        for i, n in enumerate(lengths):
            alone = m(real[i])
            torch.testing.assert_close(y[i, T - n:], alone[0], atol=1e-5, rtol=1e-5)
            cont = m(torch.cat([real[i], nxt[i:i + 1]], dim=1))[0, n:]
            torch.testing.assert_close(steps[i], cont, atol=1e-5, rtol=1e-5)
    unmasked = m(u)
    assert not torch.allclose(unmasked[0, T - lengths[0]:], y[0, T - lengths[0]:])  # mask matters


def test_cpu_scan_tiling_does_not_change_the_function():
    m = _small(seed=2, chunk_size=256)
    u = torch.randn(2, 150, 16)
    assert m.scan_chunk_size("cpu") == 64 and m.scan_chunk_size("cuda") == 256
    with torch.no_grad():
        y64 = m(u)
        m.chunk_size = 7
        torch.testing.assert_close(m(u), y64, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------- norms
def test_rmsnorm_gated_matches_hand_formula():
    torch.manual_seed(0)
    x, z = torch.randn(2, 5, 12), torch.randn(2, 5, 12)
    w = torch.randn(12)
    for group in (None, 4):
        n = RMSNormGated(12, eps=1e-5, group_size=group)
        n.weight.data.copy_(w)
        g = x * z * torch.sigmoid(z)
        gs = 12 if group is None else group
        gg = g.view(2, 5, 12 // gs, gs)
        expected = (gg / torch.sqrt(gg.pow(2).mean(-1, keepdim=True) + 1e-5)).view(2, 5, 12) * w
        torch.testing.assert_close(n(x, z), expected)
        nb = RMSNormGated(12, eps=1e-5, norm_before_gate=True, group_size=group)
        nb.weight.data.copy_(w)
        xx = x.view(2, 5, 12 // gs, gs)
        before = (xx / torch.sqrt(xx.pow(2).mean(-1, keepdim=True) + 1e-5)).view(2, 5, 12) * w
        torch.testing.assert_close(nb(x, z), before * z * torch.sigmoid(z))
    assert list(RMSNormGated(12).state_dict()) == ["weight"]
    with pytest.raises(ValueError, match="group_size"):
        RMSNormGated(12, group_size=5)


def test_rmsnorm_matches_hand_formula_and_keeps_dtype():
    x = torch.randn(4, 10)
    n = RMSNorm(10)
    n.weight.data.uniform_(0.5, 2.0)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * n.weight.detach()
    torch.testing.assert_close(n(x), expected)
    assert n(x.bfloat16()).dtype == torch.bfloat16


# ------------------------------------------------------------------------------- checkpoints etc
def test_state_dict_round_trip_is_strict(tmp_path):
    from safetensors.torch import load_file, save_file

    a = _small(seed=1)
    save_file(a.state_dict(), str(tmp_path / "m.safetensors"))
    b = _small(seed=2)
    b.load_state_dict(load_file(str(tmp_path / "m.safetensors")), strict=True)
    u = torch.randn(1, 9, 16)
    with torch.no_grad():
        assert torch.equal(a(u), b(u))


def test_make_mamba2_backend_choice():
    kw = dict(d_model=16, d_state=8, headdim=4)
    assert type(make_mamba2(backend="torch", **kw)) is Mamba2
    assert type(make_mamba2(backend="auto", device="cpu", **kw)) is Mamba2
    with pytest.raises(ValueError, match="backend"):
        make_mamba2(backend="triton", **kw)
    if not _mamba_ssm_usable():
        assert type(make_mamba2(**kw)) is Mamba2
        with pytest.raises(RuntimeError, match="mamba_ssm"):
            make_mamba2(backend="mamba_ssm", **kw)


def test_importing_the_module_does_not_import_mamba_ssm_or_triton():
    code = ("import sys, ssmttm.models.mamba2 as m; m.make_mamba2(backend='torch', d_model=8, "
            "d_state=4, headdim=4); bad = [k for k in sys.modules if k.split('.')[0] in "
            "('mamba_ssm', 'triton', 'causal_conv1d')]; assert not bad, bad")
    from pathlib import Path
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


# ------------------------------------------------------------------------------ mamba_ssm parity
@pytest.mark.skipif(not _mamba_ssm_usable(), reason="needs CUDA and mamba_ssm")
def test_parity_with_mamba_ssm_on_shared_weights():
    torch.manual_seed(0)
    kw = dict(d_model=64, d_state=32, d_conv=4, expand=2, headdim=16, ngroups=1, chunk_size=16,
              device="cuda")
    ours = make_mamba2(backend="torch", **kw).eval()
    theirs = make_mamba2(backend="mamba_ssm", **kw).eval()
    assert type(theirs) is not Mamba2
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    u = torch.randn(2, 50, 64, device="cuda")
    tol = dict(atol=2e-3, rtol=2e-3)  # Triton kernels may use TF32 dot products
    with torch.no_grad():
        torch.testing.assert_close(theirs(u), ours(u), **tol)
        mask = torch.ones(2, 50, dtype=torch.bool, device="cuda")
        mask[0, :13] = False
        torch.testing.assert_close(theirs(u, mask=mask)[0, 13:], ours(u, mask=mask)[0, 13:], **tol)
        c_ours, c_theirs = ours.allocate_inference_cache(2), theirs.allocate_inference_cache(2)
        torch.testing.assert_close(theirs(u[:, :20], cache=c_theirs), ours(u[:, :20], cache=c_ours), **tol)
        torch.testing.assert_close(c_theirs.conv_state, c_ours.conv_state, **tol)
        torch.testing.assert_close(c_theirs.ssm_state, c_ours.ssm_state, **tol)
        for t in range(20, 26):
            torch.testing.assert_close(theirs.step(u[:, t:t + 1], c_theirs),
                                       ours.step(u[:, t:t + 1], c_ours), **tol)


def test_cpu_causal_conv_equals_conv1d():
    """The CPU shifted-multiply conv is exactly nn.Conv1d with causal padding (values and grads)."""
    import torch

    from ssmttm.models.mamba2 import Mamba2

    torch.manual_seed(0)
    m = Mamba2(16, d_state=8, d_conv=4, expand=2, headdim=8, chunk_size=8)
    x = torch.randn(2, 11, m.conv_dim, requires_grad=True)
    ours = m.causal_conv(x)
    ref = m.conv1d(x.transpose(1, 2))[..., :11].transpose(1, 2)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    g1 = torch.autograd.grad(ours.sum(), [x, m.conv1d.weight])
    g2 = torch.autograd.grad(ref.sum(), [x, m.conv1d.weight])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_cpu_scan_pieces_have_exact_gradients():
    """The two hand-written backwards of the CPU path (the inter-chunk recurrence and the causal
    conv) against finite differences in float64, including a sequence shorter than the conv."""
    from ssmttm.models.mamba2 import _CausalConvCPU, _ChunkRecurrence

    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)

    decay = torch.rand(2, 5, 3, 1, 2, 1, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(_ChunkRecurrence.apply, (r(2, 5, 3, 4, 2, 2), decay, r(2, 3, 4, 2, 2)))
    w, bias = r(6, 4), r(6)
    for L in (9, 2):
        assert torch.autograd.gradcheck(_CausalConvCPU.apply, (r(2, L, 6), w, bias))
