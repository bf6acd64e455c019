"""Language-model backbones over DAC codes (docs/reference.md §1).

The variant registry lives here as data: a variant name -> how the LM is conditioned on the text
(``"prefix"``: projected text states prepended to the audio embeddings; ``"cross"``: cross-attention
to them) and the sub-layers of each block (one per layer, in mamba_ssm ``create_block`` style). A
block of kinds ``["mamba2", "mlp"]`` is two residual sub-layers, ``RMSNorm -> Mamba2 -> Dropout ->
+x`` then ``RMSNorm -> MLP -> Dropout -> +x``. Hybrids are config: pass ``layout=`` (one kind list
per layer) to :class:`ssmttm.models.config.LMConfig`.

Importing this package imports no torch and no mamba_ssm; :func:`build_lm` imports them lazily.
"""

from __future__ import annotations

from typing import Callable

# Sub-layer kinds a block may hold (ssmttm.models.blocks builds them).
SUBLAYER_KINDS = ("mamba2", "mlp", "self_attn", "cross_attn")


def uniform(*kinds: str) -> Callable[[int], list[list[str]]]:
    """A layout factory repeating one block (a list of sub-layer kinds) ``n_layers`` times."""

    def factory(n_layers: int) -> list[list[str]]:
        return [list(kinds) for _ in range(n_layers)]

    return factory


# variant -> (conditioning, layout factory); docs/reference.md §1 table.
VARIANTS: dict[str, tuple[str, Callable[[int], list[list[str]]]]] = {
    "prefix-mamba": ("prefix", uniform("mamba2", "mamba2")),
    "prefix-simba": ("prefix", uniform("mamba2", "mlp")),  # the proposed model
    "cross-simba": ("cross", uniform("mamba2", "cross_attn", "mlp")),
    "cross-transformer": ("cross", uniform("self_attn", "cross_attn", "mlp")),  # MusicGen-like baseline
    "prefix-transformer": ("prefix", uniform("self_attn", "mlp")),  # extra, in the authors' checkpoints
}


def variant_layout(variant: str, n_layers: int) -> list[list[str]]:
    """The per-layer block kinds of a registered variant."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[variant][1](int(n_layers))


def variant_conditioning(variant: str) -> str:
    """``"prefix"`` or ``"cross"`` for a registered variant."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[variant][0]


def build_lm(cfg, device=None, dtype=None):
    """Build the :class:`ssmttm.models.lm.LM` described by an :class:`LMConfig` (imports torch)."""
    from ssmttm.models.lm import LM

    return LM(cfg, device=device, dtype=dtype)
