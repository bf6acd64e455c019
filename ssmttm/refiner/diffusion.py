"""Continuous-time v-prediction diffusion over normalised latents (the DiscoDiff recipe, docs/reference.md §1).

Schedule (variance preserving, cosine): ``alpha(t) = cos(pi t / 2)``, ``sigma(t) = sin(pi t / 2)``,
``t`` in [0, 1]; ``z_t = alpha x0 + sigma eps``. The network predicts the velocity
``v = alpha eps - sigma x0`` (Salimans & Ho 2022), from which ``x0 = alpha z - sigma v`` and
``eps = sigma z + alpha v``. Training draws ``t ~ U(0, 1)`` and minimises the masked MSE of v.

Sampling walks a uniform grid ``t_0 = 1 > t_1 > ... > t_N = 0`` (``steps = N``, default 100) with
the DDIM update ``z' = alpha' x0 + sqrt(sigma'^2 - s^2) eps + s xi``, where
``s = eta sqrt(sigma'^2 / sigma^2) sqrt(1 - alpha^2 / alpha'^2)`` (Song et al. 2021, eq. 16):
``eta = 1`` is ancestral (DDPM) sampling, ``eta = 0`` the deterministic DDIM sampler that tolerates fewer steps.
Classifier-free guidance combines the conditional and unconditional (empty prompt) velocities in
ONE batch of 2B rows: ``v = v_u + scale (v_c - v_u)`` (scale 3.0, docs/reference.md §1). Every row
draws its noise from its own generator (:func:`ssmttm.rng.make_generators`, seeded per prompt and
sample by :func:`ssmttm.rng.prompt_seeds`), so a prompt's output does not depend on the batch it is in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SAMPLERS = {"ddpm": 1.0, "ddim": 0.0}  # name -> eta


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cos(t * (math.pi / 2)), torch.sin(t * (math.pi / 2))


@dataclass(frozen=True)
class SamplerConfig:
    """How a refiner samples: steps, guidance and the sampler (``ddpm`` ancestral, ``ddim`` deterministic)."""

    steps: int = 100
    cfg_scale: float = 3.0
    sampler: str = "ddpm"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"refiner steps: must be >= 1, got {self.steps}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"refiner sampler {self.sampler!r}: expected one of {sorted(SAMPLERS)}")

    def to_dict(self) -> dict:
        return {"refiner_steps": self.steps, "refiner_cfg_scale": self.cfg_scale, "refiner_sampler": self.sampler}


def v_loss(net, x0, cond_codes, text, text_mask, frame_mask, t=None, noise=None) -> torch.Tensor:
    """Mean squared velocity error over real frames. x0: [B, C, T] normalised latents; frame_mask
    [B, T] bool; ``t`` [B] and ``noise`` like x0 default to fresh draws from the torch RNG."""
    B = x0.shape[0]
    if t is None:
        t = torch.rand(B, device=x0.device)
    if noise is None:
        noise = torch.randn_like(x0)
    a, s = (u[:, None, None] for u in alpha_sigma(t))
    z = a * x0 + s * noise
    target = a * noise - s * x0
    v = net(z, t, cond_codes, text, text_mask, frame_mask)
    m = frame_mask[:, None, :].to(v.dtype)
    return ((v.float() - target.float()) ** 2 * m).sum() / (m.sum() * x0.shape[1]).clamp_min(1.0)


@torch.no_grad()
def sample(net, cond_codes, text, text_mask, uncond_text, uncond_mask, cfg: SamplerConfig, generators,
           frame_mask=None) -> torch.Tensor:
    """-> x0 [B, C, T] normalised latents. cond_codes [B, cond, T]; text/uncond_text [B, L, text_dim]
    (padded to the same L) with masks [B, L]; ``generators``: one torch.Generator per row."""
    B, _, T = cond_codes.shape
    C = net.cfg.latent_channels
    dev = cond_codes.device
    eta = SAMPLERS[cfg.sampler]
    z = torch.stack([torch.randn(C, T, generator=g, device=dev) for g in generators])
    txt = net.encode_text(torch.cat([text, uncond_text]))  # once: reused at every step
    mask2 = torch.cat([text_mask, uncond_mask])
    codes2 = torch.cat([cond_codes, cond_codes])
    fm2 = None if frame_mask is None else torch.cat([frame_mask, frame_mask])
    grid = torch.linspace(1.0, 0.0, cfg.steps + 1, device=dev)
    x0 = z
    for i in range(cfg.steps):
        t, t_next = grid[i], grid[i + 1]
        v2 = net(torch.cat([z, z]), t.expand(2 * B), codes2, txt, mask2, fm2, text_encoded=True).float()
        v = v2[B:] + cfg.cfg_scale * (v2[:B] - v2[B:])
        a, s = alpha_sigma(t)
        x0 = a * z - s * v
        eps = s * z + a * v
        if i == cfg.steps - 1:
            break
        a_n, s_n = alpha_sigma(t_next)
        noise_sd = eta * torch.sqrt((s_n ** 2 / s ** 2) * (1 - a ** 2 / a_n ** 2)).clamp_min(0)
        z = a_n * x0 + torch.sqrt((s_n ** 2 - noise_sd ** 2).clamp_min(0)) * eps
        if eta > 0:
            z = z + noise_sd * torch.stack([torch.randn(C, T, generator=g, device=dev) for g in generators])
    return x0
