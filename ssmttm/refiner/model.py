"""The refiner network: predicts the diffusion velocity of DAC latents from codebook-1 codes and text.

Shapes (``C = (K - cond) x codebook_dim`` latent channels, ``T`` codec frames, ``L`` text positions):

- ``forward(z [B, C, T], t [B], cond_codes [B, cond, T] int64, text [B, L, text_dim],
  text_mask [B, L] bool, frame_mask [B, T] bool | None) -> v [B, C, T]`` in normalised latent units;
- ``latents(codes [B, k, T], first) -> [B, k x codebook_dim, T]``: the codec's codebook vectors of
  codebooks ``first .. first + k - 1`` (DAC ``quantizers[i].decode_code``; padding ids give zeros);
- ``quantize(latents [B, C, T]) -> codes [B, K - cond, T]``: nearest codebook vector by cosine, per
  codebook, the rule of DAC's ``VectorQuantize.decode_latents`` (both sides L2-normalised);
- ``normalise`` / ``denormalise``: per channel, with the mean and std of the codebook tables.

The codebook tables ride along as a buffer (K x 1024 x 8 floats = 295 kB for DAC-44k), so a refiner
checkpoint is self-contained and is checked against the codec it is used with (sha256 in meta.json).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmttm.constants import SPECIAL_TOKEN
from ssmttm.models.attention import CrossAttention, sinusoidal
from ssmttm.models.blocks import MLP
from ssmttm.models.norms import RMSNorm
from ssmttm.refiner.config import RefinerConfig

TIME_SCALE = 1000.0  # t in [0, 1] is embedded as t x 1000 (the usual 1000-step range of the sinusoid)


class AdaNorm(nn.Module):
    """RMSNorm whose scale and shift come from the time embedding: ``norm(x) * (1 + s) + b``."""

    def __init__(self, d: int, eps: float, device=None, dtype=None):
        super().__init__()
        self.norm = RMSNorm(d, eps, device=device, dtype=dtype)
        self.mod = nn.Linear(d, 2 * d, device=device, dtype=dtype)
        nn.init.zeros_(self.mod.weight)  # starts as a plain RMSNorm
        nn.init.zeros_(self.mod.bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.mod(temb)[:, None, :].chunk(2, dim=-1)
        return self.norm(x) * (1 + scale) + shift


class RefinerBlock(nn.Module):
    """Conv (dilated, depthwise, centred) -> cross-attention to text -> MLP, each pre-norm + residual."""

    def __init__(self, cfg: RefinerConfig, dilation: int, device=None, dtype=None):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        d = cfg.d_model
        self.norm_conv = AdaNorm(d, cfg.norm_eps, **fk)
        self.conv = nn.Conv1d(d, d, cfg.kernel_size, padding=dilation * (cfg.kernel_size // 2), dilation=dilation,
                              groups=d, **fk)
        self.conv_out = nn.Linear(d, d, **fk)
        self.norm_cross = AdaNorm(d, cfg.norm_eps, **fk)
        self.cross = CrossAttention(d, cfg.n_heads, **fk)
        self.norm_mlp = AdaNorm(d, cfg.norm_eps, **fk)
        self.mlp = MLP(d, cfg.mlp_ratio, **fk)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, h, temb, text, text_mask, keep) -> torch.Tensor:
        """h: [B, T, d]; temb: [B, d]; text: [B, L, d]; text_mask: [B, L]; keep: [B, T, 1] float (0 at padding)."""
        a = self.norm_conv(h, temb) * keep  # padded frames never leak into real ones through the conv
        a = self.conv_out(F.gelu(self.conv(a.transpose(1, 2)).transpose(1, 2)))
        h = h + self.drop(a)
        h = h + self.drop(self.cross(self.norm_cross(h, temb), text, text_mask))
        return h + self.drop(self.mlp(self.norm_mlp(h, temb)))


class RefinerNet(nn.Module):
    """See the module docstring."""

    def __init__(self, cfg: RefinerConfig, device=None, dtype=None):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.cfg = cfg
        d, C = cfg.d_model, cfg.latent_channels
        # codec codebook tables [K, cardinality, codebook_dim] and the target channels' statistics
        self.register_buffer("codebooks", torch.zeros(cfg.n_codebooks, cfg.cardinality, cfg.codebook_dim, **fk))
        self.register_buffer("lat_mean", torch.zeros(C, **fk))
        self.register_buffer("lat_std", torch.ones(C, **fk))
        self.in_proj = nn.Linear(C, d, **fk)
        # one table per given codebook; row SPECIAL_TOKEN (padding) stays zero
        self.cond_emb = nn.ModuleList(nn.Embedding(cfg.cardinality + 1, d, padding_idx=SPECIAL_TOKEN, **fk)
                                      for _ in range(cfg.cond_codebooks))
        self.time_mlp = nn.Sequential(nn.Linear(d, d, **fk), nn.SiLU(), nn.Linear(d, d, **fk))
        self.text_proj = nn.Linear(cfg.text_dim, d, **fk)
        self.text_norm = nn.LayerNorm(d, **fk)
        self.blocks = nn.ModuleList(RefinerBlock(cfg, cfg.dilations[i % len(cfg.dilations)], **fk)
                                    for i in range(cfg.n_layers))
        self.out_norm = RMSNorm(d, cfg.norm_eps, **fk)
        self.out = nn.Linear(d, C, **fk)
        nn.init.zeros_(self.out.weight)  # the first prediction is v = 0
        nn.init.zeros_(self.out.bias)

    # --- codec latents ------------------------------------------------------------------------------
    def set_codebooks(self, tables: torch.Tensor) -> None:
        """Install the codec's codebook tables [K, cardinality, codebook_dim] and the target statistics."""
        cfg = self.cfg
        want = (cfg.n_codebooks, cfg.cardinality, cfg.codebook_dim)
        if tuple(tables.shape) != want:
            raise ValueError(f"codebook tables of shape {tuple(tables.shape)}, the refiner expects {want}")
        tables = tables.to(self.codebooks.device, self.codebooks.dtype)
        self.codebooks.copy_(tables)
        tgt = tables[cfg.cond_codebooks:]  # [K - cond, N, D]
        self.lat_mean.copy_(tgt.mean(1).reshape(-1))
        self.lat_std.copy_(tgt.std(1).reshape(-1).clamp_min(1e-4))

    def latents(self, codes: torch.Tensor, first: int) -> torch.Tensor:
        """codes [B, k, T] (SPECIAL_TOKEN = padding) -> codebook vectors [B, k x codebook_dim, T]."""
        B, k, T = codes.shape
        out = []
        for j in range(k):
            table = F.pad(self.codebooks[first + j], (0, 0, 0, 1))  # row SPECIAL_TOKEN = 0
            out.append(table[codes[:, j].clamp(0, self.cfg.cardinality)].transpose(1, 2))  # [B, D, T]
        return torch.cat(out, dim=1)

    def normalise(self, lat: torch.Tensor) -> torch.Tensor:
        return (lat - self.lat_mean[:, None]) / self.lat_std[:, None]

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.lat_std[:, None] + self.lat_mean[:, None]

    def quantize(self, lat: torch.Tensor) -> torch.Tensor:
        """latents [B, C, T] (codec units) -> codes [B, K - cond, T] int64: cosine nearest neighbour."""
        cfg = self.cfg
        B, C, T = lat.shape
        codes = []
        for j in range(cfg.target_codebooks):
            x = F.normalize(lat[:, j * cfg.codebook_dim:(j + 1) * cfg.codebook_dim].transpose(1, 2), dim=-1)
            table = F.normalize(self.codebooks[cfg.cond_codebooks + j], dim=-1)
            codes.append((x @ table.T).argmax(-1))  # [B, T]
        return torch.stack(codes, dim=1)

    # --- the network ------------------------------------------------------------------------------
    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        """[B, L, text_dim] -> [B, L, d] (computed once per sampling run, reused at every step)."""
        return self.text_norm(self.text_proj(text))

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond_codes: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor, frame_mask: torch.Tensor | None = None, text_encoded: bool = False):
        cfg = self.cfg
        if cond_codes.shape[1] != cfg.cond_codebooks:
            raise ValueError(f"refiner conditions on {cfg.cond_codebooks} codebook(s), got {cond_codes.shape[1]}")
        h = self.in_proj(z.transpose(1, 2))  # [B, T, d]
        for j, emb in enumerate(self.cond_emb):
            h = h + emb(cond_codes[:, j].clamp(0, SPECIAL_TOKEN))
        temb = self.time_mlp(sinusoidal(t * TIME_SCALE, cfg.d_model, dtype=h.dtype))
        txt = text if text_encoded else self.encode_text(text)
        keep = (torch.ones_like(h[..., :1]) if frame_mask is None else frame_mask[..., None].to(h.dtype))
        for block in self.blocks:
            h = block(h, temb, txt, text_mask, keep)
        return self.out(self.out_norm(h)).transpose(1, 2)  # [B, C, T]


def build_refiner(cfg: RefinerConfig, device=None) -> RefinerNet:
    return RefinerNet(cfg, device=device)
