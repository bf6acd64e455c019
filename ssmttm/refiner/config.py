"""Refiner configuration: one dataclass plus named presets as data. No torch import here.

The two-stage system (docs/reference.md §1): the LM generates DAC codebook 1 only (kappa = 1) and
a diffusion model produces the rest. The paper used a pre-trained DiscoDiff (continuous diffusion over
DAC-44k latents, 9 codebooks x 8 dims = 72-d, v-prediction, 100 steps, CFG 3.0) whose weights were
never released, so this project trains its own refiner on the same data:

- target: the quantizer's projected latents (the 8-d codebook vectors, ``quantizers[k].codebook``)
  of codebooks ``cond_codebooks + 1 .. n_codebooks``, i.e. ``(9 - 1) x 8 = 64`` channels for
  DAC-44k, normalised per channel with the codebook tables' statistics;
- conditioning: the given codebooks' codes (time-aligned, one learned embedding table per codebook,
  the same frames as the target) and the cached FLAN-T5 caption states (cross-attention; the
  empty prompt is the unconditional input of classifier-free guidance);
- network: a non-causal stack of residual blocks at the codec frame rate, each a dilated depthwise
  convolution, a cross-attention to the text and an MLP, modulated by the diffusion time through
  adaptive RMSNorm (scale/shift from the time embedding).

Presets: ``paper`` (d_model 512, 12 blocks: 48,838,720 trainable parameters with kappa 1 for DAC-44k
and FLAN-T5-base, 50,388,520 with kappa 4, counted on ``RefinerNet``; DiscoDiff's own size is a
U-Net of up to 1024 channels, our default is (unknown) relative to the paper) and ``tiny`` (the demo
and the tests: 96,000 with kappa 1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ssmttm import io
from ssmttm.constants import CODEBOOK_SIZE


@dataclass
class RefinerConfig:
    """Everything needed to build a :class:`ssmttm.refiner.model.RefinerNet` (stored in checkpoints)."""

    n_codebooks: int = 9  # K of the codec (DAC-44k: 9)
    cond_codebooks: int = 1  # codebooks given (the LM's kappa); the rest are generated
    codebook_dim: int = 8  # DAC's projected latent size per codebook
    cardinality: int = CODEBOOK_SIZE
    text_dim: int = 768  # FLAN-T5-base encoder states
    d_model: int = 512
    n_layers: int = 12
    kernel_size: int = 5
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8])  # cycled over the blocks
    n_heads: int = 8
    mlp_ratio: int = 2
    dropout: float = 0.1
    norm_eps: float = 1e-5
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dilations = [int(d) for d in self.dilations]
        self.validate()

    @property
    def target_codebooks(self) -> int:
        return self.n_codebooks - self.cond_codebooks

    @property
    def latent_channels(self) -> int:
        """Channels the diffusion runs over: (K - cond) x codebook_dim (DAC-44k, kappa 1: 64)."""
        return self.target_codebooks * self.codebook_dim

    def validate(self) -> None:
        errs = []
        for name in ("n_codebooks", "cond_codebooks", "codebook_dim", "cardinality", "text_dim", "d_model",
                     "n_layers", "kernel_size", "n_heads", "mlp_ratio"):
            if int(getattr(self, name)) < 1:
                errs.append(f"{name}={getattr(self, name)} (must be >= 1)")
        if self.cond_codebooks >= self.n_codebooks:
            errs.append(f"cond_codebooks={self.cond_codebooks} (must be < n_codebooks={self.n_codebooks}: "
                        "nothing is left to generate)")
        if self.kernel_size % 2 == 0:
            errs.append(f"kernel_size={self.kernel_size} (must be odd: the convolution is centred)")
        if not self.dilations or min(self.dilations) < 1:
            errs.append(f"dilations={self.dilations} (need >= 1 value, each >= 1)")
        if self.d_model % max(self.n_heads, 1):
            errs.append(f"n_heads={self.n_heads} (must divide d_model={self.d_model})")
        if not 0.0 <= self.dropout < 1.0:
            errs.append(f"dropout={self.dropout} (must be in [0, 1))")
        if errs:
            raise ValueError("RefinerConfig: " + "; ".join(errs))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RefinerConfig":
        return io.dataclass_from_dict(cls, d)


REFINER_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(d_model=512, n_layers=12, kernel_size=5, dilations=[1, 2, 4, 8], n_heads=8, dropout=0.1),
    "tiny": dict(d_model=32, n_layers=2, kernel_size=5, dilations=[1, 2], n_heads=4, dropout=0.0),
}


def refiner_from_preset(preset: str, **overrides: Any) -> RefinerConfig:
    """The :class:`RefinerConfig` of ``preset``; ``overrides`` replace any field (codec-derived
    fields such as ``n_codebooks`` and ``text_dim`` are set by the trainer from its stores)."""
    if preset not in REFINER_PRESETS:
        raise ValueError(f"unknown refiner preset {preset!r}; known: {', '.join(REFINER_PRESETS)}")
    return RefinerConfig(**{**REFINER_PRESETS[preset], **overrides})
