"""Mamba2 mixer that runs on any device, plus a switch to mamba_ssm's CUDA kernels when present.

docs/reference.md §1: every SSM backbone uses Mamba2 (d_state 512, d_conv 4, expand 2, headdim 64,
ngroups 1, chunk 256). The authors trained with mamba_ssm's Triton/CUDA Mamba2, which cannot even
be imported without a GPU. `Mamba2` below is a pure-PyTorch re-implementation of the same layer:

    zxbcdt = in_proj(u)                  split [z: d_inner | xBC: d_inner + 2*G*N | dt: H]
    xBC    = silu(causal depthwise conv1d(xBC))   split [x: d_inner | B: G*N | C: G*N]
    y      = SSD(x, softplus(dt + dt_bias), A = -exp(A_log), B, C) + D * x
    out    = out_proj(rmsnorm(y * silu(z)) * norm.weight)

with parameter names and shapes identical to `mamba_ssm.modules.mamba2.Mamba2` (2.x, default
options: rmsnorm, norm_before_gate=False, D_has_hdim=False, conv_bias, no in/out_proj bias), so a
state_dict saved by either loads strictly into the other. `make_mamba2` picks mamba_ssm when it
imports and CUDA is present (through an adapter exposing this module's forward/step/cache API),
else this module. mamba_ssm and Triton are only imported inside `make_mamba2`.

The SSD scan (`ssd_chunked`) is the chunked "state space duality" algorithm of Mamba2: exact
quadratic attention-like form inside each chunk, a linear recurrence over chunk states between
chunks; `ssd_naive` is the token-by-token recurrence it is tested against.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .norms import RMSNormGated

BACKENDS = ("auto", "torch", "mamba_ssm")
# chunk_size only tiles the scan (float rounding changes, the function does not). Off CUDA the
# per-head [Q, Q] intra-chunk work is memory-bound, so CPU scans tile by at most 64: bench/ssm_levers.py
# times one layer at tiles 32, 64, 128 and 256 against this default (docs/performance.md).
CPU_SCAN_CHUNK = 64


# ----------------------------------------------------------------------------------------- scans
def ssd_naive(x, dt, A, B, C, D=None, initial_state=None):
    """Sequential SSD recurrence (reference for tests), float32 throughout.

    h_t = exp(dt_t * A) h_{t-1} + dt_t * x_t (outer) B_t ;  y_t = h_t . C_t + D * x_t
    x: [b, L, H, P]; dt: [b, L, H] (after softplus); A: [H] (negative); B, C: [b, L, G, N] with
    H % G == 0 (head h reads group h // (H // G)); D: [H] or [H, P] or None;
    initial_state: [b, H, P, N] or None.  Returns (y [b, L, H, P] float32, h_L [b, H, P, N]).
    """
    b, L, H, P = x.shape
    G, N = B.shape[-2:]
    x, dt, A = x.float(), dt.float(), A.float()
    Bh = B.float().repeat_interleave(H // G, dim=2)
    Ch = C.float().repeat_interleave(H // G, dim=2)
    h = x.new_zeros(b, H, P, N) if initial_state is None else initial_state.float()
    ys = []
    for t in range(L):
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]
        h = h * decay + (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", h, Ch[:, t]))
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, H, P)
    if D is not None:
        y = y + x * (D.float()[:, None] if D.dim() == 1 else D.float())
    return y, h


def _segsum_exp(a_cs: torch.Tensor) -> torch.Tensor:
    """Intra-chunk decay from the within-chunk cumsum a_cs [..., Q] of the log-decays.

    out[..., l, s] = exp(a_cs[l] - a_cs[s]) = exp(sum_{s<k<=l} a_k) for s <= l, else 0: the same
    cumsum-difference form as mamba_ssm's chunk-scan kernel (cheaper on CPU than a masked cumsum
    over the [Q, Q] grid, and identical within float32 rounding for chunk-sized sums).
    """
    Q = a_cs.shape[-1]
    upper = torch.ones(Q, Q, dtype=torch.bool, device=a_cs.device).triu(1)
    diff = a_cs[..., :, None] - a_cs[..., None, :]
    return diff.masked_fill_(upper, float("-inf")).exp_()


class _ChunkRecurrence(torch.autograd.Function):
    """States entering each chunk of the SSD scan, and the state after the last one.

    forward(states [b, c, *S], decay [b, c, *D], h0 [b, *S]), D broadcasting to S -> (starts
    [b, c, *S], h): starts[:, 0] = h0, starts[:, z + 1] = decay[:, z] * starts[:, z] + states[:, z],
    h the same one chunk past the end. A sequential pass over the c chunks is O(c) state updates,
    each written straight into its slot of one output buffer; the backward is the reverse pass, also
    into preallocated buffers. (The dense form, a (c+1) x (c+1) decay matrix times all chunk states,
    costs O(c^2) and is a skinny matmul that ran at a quarter of the projections' speed on CPU;
    indexing the states inside an autograd loop zero-fills a full-size gradient per index.)
    """

    @staticmethod
    def forward(ctx, states, decay, h0):
        c = states.shape[1]
        starts = torch.empty_like(states)
        starts[:, 0] = h0
        for z in range(c - 1):
            torch.addcmul(states[:, z], starts[:, z], decay[:, z], out=starts[:, z + 1])
        h = torch.addcmul(states[:, c - 1], starts[:, c - 1], decay[:, c - 1])
        ctx.save_for_backward(starts, decay)
        return starts, h

    @staticmethod
    def backward(ctx, g_starts, g_h):
        starts, decay = ctx.saved_tensors
        c = starts.shape[1]
        # g_states[:, z] is the gradient reaching starts[:, z + 1] (h for the last chunk), in full.
        g_states = torch.empty_like(starts)
        g_states[:, c - 1] = g_h
        for z in range(c - 1, 0, -1):
            torch.addcmul(g_starts[:, z], g_states[:, z], decay[:, z], out=g_states[:, z - 1])
        g_h0 = torch.addcmul(g_starts[:, 0], g_states[:, 0], decay[:, 0])
        summed = [i for i, (n, m) in enumerate(zip(decay.shape, starts.shape)) if n == 1 and m != 1]
        g_decay = (g_states * starts).sum(summed, keepdim=True)
        return g_states, g_decay, g_h0


class _CausalConvCPU(torch.autograd.Function):
    """Causal depthwise conv over time, channel-last: x [B, L, C], w [C, k], bias [C] -> [B, L, C].

    out[:, l] = bias + sum_j w[:, j] * x[:, l - (k - 1 - j)] (zero before the sequence). Forward and
    backward are k fused multiply-adds on shifted views each, with no padded copy: on CPU, PyTorch's
    depthwise Conv1d backward is ~10x slower than its forward (0.31 s vs 0.027 s at [1, 768, 2620]),
    and the same sum written as autograd ops zero-fills a padded gradient per tap.
    """

    @staticmethod
    def forward(ctx, x, w, bias):
        k, L = w.shape[1], x.shape[1]
        out = torch.addcmul(bias, x, w[:, k - 1])
        for j in range(k - 1):
            s = k - 1 - j  # this tap reads s steps back
            if s < L:
                out[:, s:].addcmul_(x[:, :L - s], w[:, j])
        ctx.save_for_backward(x, w)
        return out

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        k, L = w.shape[1], x.shape[1]
        g_x = g * w[:, k - 1]
        g_w = torch.zeros_like(w)
        g_w[:, k - 1] = (g * x).sum((0, 1))
        for j in range(k - 1):
            s = k - 1 - j
            if s < L:
                g_x[:, :L - s].addcmul_(g[:, s:], w[:, j])
                g_w[:, j] = (g[:, s:] * x[:, :L - s]).sum((0, 1))
        return g_x, g_w, g.sum((0, 1))


def ssd_chunked(x, dt, A, B, C, chunk_size, D=None, initial_state=None, return_final_state=False):
    """Chunked SSD scan, equal to `ssd_naive` up to float32 rounding.

    x: [b, L, H, P]; dt: [b, L, H] (after softplus, >= 0); A: [H] (negative); B, C: [b, L, G, N]
    (H % G == 0); D: [H] / [H, P] / None; initial_state: [b, H, P, N] / None.
    Returns y [b, L, H, P] in x's dtype, and also the final state [b, H, P, N] (float32) when
    return_final_state. Accumulates in float32 with autocast off. L need not be a multiple of
    chunk_size: the tail is padded with dt = 0, x = 0 (decay 1, no input: the state passes
    through unchanged), then trimmed.
    """
    b, L, H, P = x.shape
    G, N = B.shape[-2:]
    K = H // G  # heads per group
    Q = int(chunk_size)
    out_dtype = x.dtype
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, dt, A, B, C = x.float(), dt.float(), A.float(), B.float(), C.float()
        pad = (-L) % Q
        if pad:
            x = F.pad(x, (0, 0, 0, 0, 0, pad))
            dt = F.pad(dt, (0, 0, 0, pad))
            B = F.pad(B, (0, 0, 0, 0, 0, pad))
            C = F.pad(C, (0, 0, 0, 0, 0, pad))
        c = (L + pad) // Q
        xdt = (x * dt[..., None]).view(b, c, Q, G, K, P)
        B = B.view(b, c, Q, G, N)
        C = C.view(b, c, Q, G, N)
        a = (dt * A).view(b, c, Q, H).transpose(2, 3)  # [b, c, H, Q] log-decay per step
        a_cs = a.cumsum(dim=-1)

        # 1. intra-chunk (diagonal blocks): y_l = sum_{s<=l} (C_l.B_s) exp(a_{s+1..l}) dt_s x_s
        decay = _segsum_exp(a_cs).view(b, c, G, K, Q, Q)
        scores = torch.einsum("bclgn,bcsgn->bcgls", C, B)[:, :, :, None] * decay
        y = scores @ xdt.permute(0, 1, 3, 4, 2, 5)  # [b, c, G, K, Q, P]

        # 2. state each chunk adds, seen at its own end. States are laid out [b, c, G, N, K, P]
        #    (n before the heads' p): B^T @ x produces that layout and C @ state consumes it, so the
        #    state-sized tensors are never transposed (a copy of c * H * P * N floats each way).
        to_end = torch.exp(a_cs[..., -1:] - a_cs).view(b, c, G, K, Q)
        xdt_end = (xdt * to_end.permute(0, 1, 4, 2, 3)[..., None]).transpose(2, 3).reshape(b, c, G, Q, K * P)
        chunk_states = (B.permute(0, 1, 3, 4, 2) @ xdt_end).view(b, c, G, N, K, P)

        # 3. inter-chunk recurrence: the state entering chunk z is decay(chunk z-1) * (state entering
        #    z-1) + (state chunk z-1 added), from the initial state (zero unless given)
        chunk_decay = torch.exp(a_cs[..., -1]).view(b, c, G, 1, K, 1)  # decay across each whole chunk
        h0 = x.new_zeros(b, G, N, K, P) if initial_state is None else \
            initial_state.float().view(b, G, K, P, N).permute(0, 1, 4, 2, 3)
        h_start, h = _ChunkRecurrence.apply(chunk_states, chunk_decay, h0)

        # 4. contribution of the state entering each chunk: y_l += exp(a_{1..l}) C_l . h_start
        from_start = torch.exp(a_cs).view(b, c, G, K, Q).transpose(3, 4)[..., None]  # [b, c, G, Q, K, 1]
        y_off = (C.transpose(2, 3) @ h_start.view(b, c, G, N, K * P)).view(b, c, G, Q, K, P) * from_start
        y = (y.transpose(3, 4) + y_off).transpose(2, 3).reshape(b, c * Q, H, P)[:, :L]
        if D is not None:
            xr = x[:, :L]
            y = y + xr * (D.float()[:, None] if D.dim() == 1 else D.float())
    y = y.to(out_dtype)
    if not return_final_state:
        return y
    return y, h.permute(0, 1, 3, 4, 2).reshape(b, H, P, N)


# ---------------------------------------------------------------------------------------- module
@dataclass
class Mamba2Cache:
    """Decoding state of one Mamba2 layer.

    conv_state: [B, conv_dim, d_conv], the last d_conv conv inputs (xBC before the conv and SiLU),
        oldest first; ssm_state: [B, nheads, headdim, d_state]. Same convention as mamba_ssm.
    """

    conv_state: torch.Tensor
    ssm_state: torch.Tensor


class Mamba2(nn.Module):
    """Pure-PyTorch Mamba2 mixer; parameters named and shaped as mamba_ssm's `Mamba2`.

    u: [B, L, d_model] -> [B, L, d_model]. d_inner = expand * d_model, nheads = d_inner // headdim,
    conv_dim = d_inner + 2 * ngroups * d_state.
    """

    def __init__(self, d_model, d_state=512, d_conv=4, expand=2, headdim=64, ngroups=1,
                 chunk_size=256, layer_idx=None, device=None, dtype=None,
                 dt_min=0.001, dt_max=0.1, dt_init_floor=1e-4, A_init_range=(1.0, 16.0)):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise ValueError(f"Mamba2: d_inner={self.d_inner} is not divisible by headdim={headdim}")
        self.headdim, self.ngroups = headdim, ngroups
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"Mamba2: nheads={self.nheads} is not divisible by ngroups={ngroups}")
        self.chunk_size, self.layer_idx = chunk_size, layer_idx
        self.conv_dim = self.d_inner + 2 * ngroups * d_state
        # in_proj output order [z, xBC, dt], as in mamba_ssm
        self.in_proj = nn.Linear(d_model, self.d_inner + self.conv_dim + self.nheads, bias=False, **fk)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim,
                                padding=d_conv - 1, bias=True, **fk)
        self.act = nn.SiLU()
        # dt ~ log-uniform in [dt_min, dt_max], floored; dt_bias = softplus^-1(dt) (mamba_ssm init)
        dt = torch.exp(torch.rand(self.nheads, **fk) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        A = torch.empty(self.nheads, dtype=torch.float32, device=device).uniform_(*A_init_range)
        self.A_log = nn.Parameter(torch.log(A).to(dtype=dtype))
        self.D = nn.Parameter(torch.ones(self.nheads, device=device))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True  # optimiser param groups read this, as with mamba_ssm
        self.norm = RMSNormGated(self.d_inner, eps=1e-5, norm_before_gate=False,
                                 group_size=self.d_inner // ngroups, **fk)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False, **fk)

    # -- training / prefill
    def forward(self, u, mask=None, cache=None):
        """u: [B, L, d_model]; mask: [B, L] bool (True = real token) or None -> [B, L, d_model].

        Masked positions contribute nothing: the conv input, the SSM input x and dt are zeroed
        there, so the state stays exactly at zero through left padding and the first real tokens
        see the same zero conv history as an unpadded sequence; outputs at masked positions are
        exactly 0. Only left padding keeps the real tokens' conv windows clean. If `cache` (from
        allocate_inference_cache) is given it is overwritten with the conv window and SSM state at
        the end of u, so `step` continues the sequence (its previous content is ignored).
        """
        b, L, _ = u.shape
        z, xBC, dt = torch.split(self.in_proj(u), [self.d_inner, self.conv_dim, self.nheads], dim=-1)
        keep = None if mask is None else mask.to(torch.bool)[..., None]
        if keep is not None:
            xBC = torch.where(keep, xBC, 0.0)
        if cache is not None:
            window = F.pad(xBC.transpose(1, 2), (self.d_conv - L, 0)) if L < self.d_conv \
                else xBC[:, L - self.d_conv:].transpose(1, 2)
            cache.conv_state.copy_(window)
        xBC = self.act(self.causal_conv(xBC))
        x, B, C = torch.split(xBC, [self.d_inner, self.ngroups * self.d_state,
                                    self.ngroups * self.d_state], dim=-1)
        dt = F.softplus(dt.float() + self.dt_bias.float())
        if keep is not None:
            x = torch.where(keep, x, 0.0)
            dt = torch.where(keep, dt, 0.0)
        y = ssd_chunked(x.reshape(b, L, self.nheads, self.headdim), dt, -torch.exp(self.A_log.float()),
                        B.reshape(b, L, self.ngroups, self.d_state),
                        C.reshape(b, L, self.ngroups, self.d_state), self.scan_chunk_size(u.device),
                        D=self.D, return_final_state=cache is not None)
        if cache is not None:
            y, h = y
            cache.ssm_state.copy_(h)
        y = self.norm(y.reshape(b, L, self.d_inner), z)
        return self.out_proj(y)

    def causal_conv(self, xBC: torch.Tensor) -> torch.Tensor:
        """Causal depthwise conv of ``xBC [B, L, conv_dim]`` with ``self.conv1d``'s weights -> [B, L, conv_dim].

        On CUDA this is nn.Conv1d (cuDNN). Elsewhere `_CausalConvCPU` computes the same thing as
        d_conv fused multiply-adds of shifted views, forward and backward.
        """
        L = xBC.shape[1]
        if xBC.is_cuda:
            return self.conv1d(xBC.transpose(1, 2))[..., :L].transpose(1, 2)
        return _CausalConvCPU.apply(xBC, self.conv1d.weight[:, 0, :], self.conv1d.bias)

    def scan_chunk_size(self, device) -> int:
        """Tile of the SSD scan: chunk_size on CUDA, at most CPU_SCAN_CHUNK elsewhere."""
        if torch.device(device).type == "cuda":
            return self.chunk_size
        return min(self.chunk_size, CPU_SCAN_CHUNK)

    # -- decoding
    def allocate_inference_cache(self, batch_size, dtype=None, device=None, **kwargs):
        """Zeroed Mamba2Cache for batch_size sequences (dtype/device default to the weights')."""
        device = self.out_proj.weight.device if device is None else device
        conv_dtype = self.conv1d.weight.dtype if dtype is None else dtype
        ssm_dtype = self.in_proj.weight.dtype if dtype is None else dtype
        # [B, d_conv, conv_dim] transposed: channel-last memory, the layout mamba_ssm allocates
        conv = torch.zeros(batch_size, self.d_conv, self.conv_dim, device=device, dtype=conv_dtype)
        ssm = torch.zeros(batch_size, self.nheads, self.headdim, self.d_state, device=device,
                          dtype=ssm_dtype)
        return Mamba2Cache(conv.transpose(1, 2), ssm)

    def step(self, u, cache):
        """One token: u [B, 1, d_model] -> [B, 1, d_model]; updates `cache` in place. O(1) in L.

        The states are updated where they lie: the conv window shifts by d_conv - 1 column copies
        inside its own buffer, and a float32 SSM state is decayed (mul_) and gets its new term added
        (add_) in the cache, so per token only that term is a fresh state-sized buffer (rebuilding
        the state made three and copied it back). The arithmetic is the rebuilt state's, op for op,
        so outputs are bitwise those of the earlier step (tested). A fused addcmul_ would also drop
        that last buffer, but it rounds once and changes the last bits of every later token. A state
        kept in a lower precision is updated in a float32 copy and written back, as before, so the
        output reads the unrounded state either way. Decoding only: autograd cannot run through a
        state that the next step overwrites.
        """
        if u.shape[1] != 1:
            raise ValueError(f"Mamba2.step decodes one token at a time, got u of shape {tuple(u.shape)}")
        b = u.shape[0]
        z, xBC, dt = torch.split(self.in_proj(u[:, 0]), [self.d_inner, self.conv_dim, self.nheads], dim=-1)
        conv = cache.conv_state  # [B, conv_dim, d_conv], oldest first
        # Shift left one column at a time: source and destination never overlap (a single copy_
        # between overlapping slices has no defined order).
        for j in range(self.d_conv - 1):
            conv[:, :, j].copy_(conv[:, :, j + 1])
        conv[:, :, -1] = xBC
        xBC = (conv * self.conv1d.weight[:, 0]).sum(dim=-1) + self.conv1d.bias
        xBC = self.act(xBC).to(u.dtype)
        x, B, C = torch.split(xBC, [self.d_inner, self.ngroups * self.d_state,
                                    self.ngroups * self.d_state], dim=-1)
        rep = self.nheads // self.ngroups
        x = x.float().view(b, self.nheads, self.headdim)
        B = B.float().view(b, self.ngroups, self.d_state).repeat_interleave(rep, dim=1)
        C = C.float().view(b, self.ngroups, self.d_state).repeat_interleave(rep, dim=1)
        dt = F.softplus(dt.float() + self.dt_bias.float())  # [B, H]
        decay = torch.exp(dt * -torch.exp(self.A_log.float()))
        state = cache.ssm_state  # [B, H, P, N]
        h = state if state.dtype == torch.float32 else state.float()
        h.mul_(decay[..., None, None]).add_((dt[..., None] * x)[..., None] * B[:, :, None, :])
        if h is not state:
            state.copy_(h)
        y = torch.einsum("bhpn,bhn->bhp", h, C) + self.D.float()[:, None] * x
        y = self.norm(y.reshape(b, self.d_inner).to(u.dtype), z)
        return self.out_proj(y)[:, None]


# --------------------------------------------------------------------------------------- backends
def _mamba_ssm_usable() -> bool:
    """True when CUDA is present and mamba_ssm's Mamba2 (Triton + CUDA extensions) imports."""
    if not torch.cuda.is_available():
        return False
    try:
        import mamba_ssm.modules.mamba2  # noqa: F401  (heavy: Triton, CUDA extensions)
    except Exception:  # ImportError, or a broken Triton/CUDA build raising at import
        return False
    return True


@functools.lru_cache(maxsize=1)
def _mamba_ssm_adapter_class():
    """Subclass of mamba_ssm's Mamba2 with this module's forward(u, mask, cache)/step/cache API.

    The adapter IS the upstream module (no wrapper attribute), so its state_dict keys are exactly
    mamba_ssm's, which are exactly ours. Written from the mamba_ssm 2.3 source; it cannot be run
    without a GPU, so only the skipped parity test in tests/test_mamba2.py exercises it.
    Masking (left padding only): u is zeroed at pads, which zeroes xBC and the conv window there
    because in_proj has no bias, and seq_idx (pad = 0, real = 1) makes the chunk scan (and the
    conv) restart at the first real token, so real outputs equal the unpadded run.
    """
    from mamba_ssm.modules.mamba2 import Mamba2 as UpstreamMamba2
    from mamba_ssm.utils.generation import InferenceParams

    class MambaSSMMamba2(UpstreamMamba2):
        def __init__(self, d_model, d_state=512, d_conv=4, expand=2, headdim=64, ngroups=1,
                     chunk_size=256, layer_idx=None, device=None, dtype=None, **kwargs):
            # upstream asserts layer_idx is not None when an inference cache is used
            super().__init__(d_model, d_state=d_state, d_conv=d_conv, expand=expand, headdim=headdim,
                             ngroups=ngroups, chunk_size=chunk_size,
                             layer_idx=0 if layer_idx is None else layer_idx,
                             device=device, dtype=dtype, **kwargs)

        def forward(self, u, mask=None, cache=None, **kwargs):
            seq_idx = None
            if mask is not None:
                keep = mask.to(torch.bool)
                u = torch.where(keep[..., None], u, 0.0)
                seq_idx = keep.to(torch.int32).contiguous()
            if cache is None:
                return super().forward(u, seq_idx=seq_idx)
            params = InferenceParams(max_seqlen=u.shape[1], max_batch_size=u.shape[0])
            params.key_value_memory_dict[self.layer_idx] = (cache.conv_state, cache.ssm_state)
            return super().forward(u, seq_idx=seq_idx, inference_params=params)

        def allocate_inference_cache(self, batch_size, dtype=None, device=None, max_seqlen=1, **kwargs):
            conv, ssm = super().allocate_inference_cache(batch_size, max_seqlen, dtype=dtype)
            if device is not None:
                conv, ssm = conv.to(device), ssm.to(device)
            return Mamba2Cache(conv, ssm)

        def step(self, u, cache, ssm_state=None):
            if ssm_state is not None:  # upstream's own call signature step(u, conv_state, ssm_state)
                return super().step(u, cache, ssm_state)
            out, _, _ = super().step(u, cache.conv_state, cache.ssm_state)
            return out

    return MambaSSMMamba2


def make_mamba2(backend: str = "auto", **kwargs) -> nn.Module:
    """Build a Mamba2 mixer. kwargs: those of `Mamba2` (d_model, d_state, ..., device, dtype).

    backend "torch": the pure-PyTorch `Mamba2`; "mamba_ssm": mamba_ssm's CUDA/Triton Mamba2
    through the adapter (error if unusable); "auto": mamba_ssm when it imports, CUDA is present
    and no non-CUDA device was asked for, else torch. Both have identical state_dict layouts.
    On a CUDA machine with mamba_ssm, "auto" with device=None gives the kernel module, which cannot
    run on CPU tensors: code that must stay on CPU there (tests) passes backend="torch".
    """
    if backend not in BACKENDS:
        raise ValueError(f"mamba2 backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return Mamba2(**kwargs)
    device = kwargs.get("device")
    wants_cuda = device is None or torch.device(device).type == "cuda"
    usable = wants_cuda and _mamba_ssm_usable()
    if backend == "mamba_ssm" and not usable:
        raise RuntimeError(
            "mamba2 backend 'mamba_ssm' needs a CUDA device and the mamba_ssm package "
            "(pip install mamba-ssm causal-conv1d --no-build-isolation); use backend 'torch' or 'auto'")
    return _mamba_ssm_adapter_class()(**kwargs) if usable else Mamba2(**kwargs)
