"""RMS normalisations in plain PyTorch (no Triton), so every backbone runs on any device.

`RMSNorm` is the pre-norm of every residual sub-layer (docs/reference.md §1: "pre-norm (RMSNorm) residual
sub-layers"). `RMSNormGated` is the gated norm at the end of a Mamba2 mixer; its parameter layout
(`weight` only, no bias entry in the state_dict) matches mamba_ssm's Triton
`layernorm_gated.RMSNorm`, so checkpoints load both ways. Both compute in float32 and cast the
result back to the input dtype, like the fused kernels do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _rms_normalise(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) over the last dim (x is float32 here)."""
    return x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + eps)


class RMSNorm(nn.Module):
    """y = x / rms(x) * weight over the last dim. x: [..., d] -> [..., d] (same dtype)."""

    def __init__(self, d: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _rms_normalise(x.float(), self.eps) * self.weight.float()
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class RMSNormGated(nn.Module):
    """Gated RMSNorm of Mamba2, RMS taken over groups of `group_size` channels.

    norm_before_gate=False (Mamba2's default, the one the paper's models use):
        y = rmsnorm(x * silu(z)) * weight
    norm_before_gate=True:
        y = rmsnorm(x) * weight * silu(z)
    With z=None it is a plain (grouped) RMSNorm. x, z: [..., d] -> [..., d] (dtype of x).
    """

    def __init__(self, d: int, eps: float = 1e-5, norm_before_gate: bool = False,
                 group_size: int | None = None, device=None, dtype=None):
        super().__init__()
        group_size = d if group_size is None else group_size
        if d % group_size:
            raise ValueError(f"RMSNormGated: d={d} is not divisible by group_size={group_size}")
        self.eps = eps
        self.norm_before_gate = norm_before_gate
        self.group_size = group_size
        self.weight = nn.Parameter(torch.ones(d, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        if z is not None and not self.norm_before_gate:
            x = x * F.silu(z.float())
        shape = x.shape
        x = _rms_normalise(x.reshape(*shape[:-1], -1, self.group_size), self.eps).reshape(shape)
        y = x * self.weight.float()
        if z is not None and self.norm_before_gate:
            y = y * F.silu(z.float())
        return y.to(dtype)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[0]}, eps={self.eps}, group_size={self.group_size}, "
                f"norm_before_gate={self.norm_before_gate}")
