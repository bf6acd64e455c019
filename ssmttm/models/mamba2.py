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
# per-head [Q, Q] intra-chunk work is memory-bound: at L=2588, d_model 256, fwd+bwd of one layer
# took ~0.9 s with Q=256 and ~0.4 s with Q=64 on one CPU thread, so CPU scans tile by at most 64.
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


def _segsum_exp_small(a: torch.Tensor) -> torch.Tensor:
    """out[..., z, i] = exp(sum_{i<k<=z} a_k) for i <= z, else 0, from the log-decays a [..., T].

    Sums the segment directly (masked cumsum over a [T, T] grid) rather than differencing a long
    cumsum, so it stays exact when the total decay over many chunks is large; meant for small T.
    """
    T = a.shape[-1]
    grid = a[..., None, :].expand(*a.shape[:-1], T, T)  # [..., z, k] = a_k
    strictly_lower = torch.ones(T, T, dtype=torch.bool, device=a.device).tril(-1)
    seg = torch.where(strictly_lower, grid.transpose(-1, -2), 0.0).cumsum(dim=-2)  # sum_{i<k<=z}
    return seg.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=a.device).tril(), float("-inf")).exp()


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

        # 2. state each chunk adds, seen at its own end
        to_end = torch.exp(a_cs[..., -1:] - a_cs).view(b, c, G, K, Q)
        xdt_end = xdt * to_end.permute(0, 1, 4, 2, 3)[..., None]
        chunk_states = torch.einsum("bcsgn,bcsgkp->bcgkpn", B, xdt_end).reshape(b, c, H, P, N)

        # 3. inter-chunk recurrence, as one matmul over the (c+1) x (c+1) chunk-decay matrix: the
        #    state entering chunk z is sum_{i<=z} exp(a over chunks i+1..z) * states[i], with
        #    states[0] the initial state. (A Python loop over chunks indexes big tensors c times,
        #    and its backward zero-fills a full-size gradient per index: ~15 % of a CPU step.)
        h0 = x.new_zeros(b, 1, H, P, N) if initial_state is None else initial_state.float()[:, None]
        states = torch.cat([h0, chunk_states], dim=1)  # [b, c+1, H, P, N]
        chunk_a = F.pad(a_cs[..., -1].transpose(1, 2), (1, 0))  # [b, H, c+1]; 0 for the initial state
        across = _segsum_exp_small(chunk_a)  # [b, H, c+1 (to), c+1 (from)]
        new_states = torch.einsum("bhzi,bihpn->bzhpn", across, states)
        h_start = new_states[:, :c].reshape(b, c, G, K, P, N)
        h = new_states[:, c]

        # 4. contribution of the state entering each chunk: y_l += exp(a_{1..l}) C_l . h_start
        from_start = torch.exp(a_cs).view(b, c, G, K, Q)
        y_off = torch.einsum("bclgn,bcgkpn->bcgklp", C, h_start) * from_start[..., None]
        y = (y + y_off).permute(0, 1, 4, 2, 3, 5).reshape(b, c * Q, H, P)[:, :L]
        if D is not None:
            xr = x[:, :L]
            y = y + xr * (D.float()[:, None] if D.dim() == 1 else D.float())
    y = y.to(out_dtype)
    return (y, h) if return_final_state else y


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

        On CUDA this is nn.Conv1d (cuDNN). On CPU a sum of d_conv shifted multiplies computes the
        same thing: PyTorch's CPU backward of a depthwise Conv1d is ~10x slower than the forward
        (measured 0.31 s vs 0.027 s at [1, 768, 2620]), which dominated a SiMBA training step.
        """
        L = xBC.shape[1]
        if xBC.is_cuda:
            return self.conv1d(xBC.transpose(1, 2))[..., :L].transpose(1, 2)
        k = self.d_conv
        w = self.conv1d.weight[:, 0, :]  # [conv_dim, d_conv]; tap k-1 multiplies the current step
        padded = F.pad(xBC, (0, 0, k - 1, 0))  # zeros before the sequence: causal
        out = self.conv1d.bias + padded[:, k - 1:k - 1 + L] * w[:, k - 1]
        for j in range(k - 1):
            out = out + padded[:, j:j + L] * w[:, j]
        return out

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
