"""Second stage of the two-stage system: codebook-1 codes (+ text) -> the remaining DAC codebooks.

Interface (:class:`Refiner`, an ABC like :class:`ssmttm.codec.Codec`):

- ``refine(codes [B, cond, T] int64, states, uncond, prompts, sampler, seed) -> codes [B, K, T]``:
  the given codebooks followed by the generated ones, ready for ``codec.decode`` (all K);
- ``cond_codebooks`` (the LM's kappa), ``n_codebooks`` (K), ``describe()`` (what every generated
  clip's sidecar records: backend, checkpoint + sha256, step, sampler settings).

Backends, a lazy registry (config ``refiners.<name>.backend`` / ``generate --refiner-backend``):

- ``ssmttm``: a refiner trained here by the ``train_refiner`` rule (:mod:`ssmttm.refiner.checkpoint`);
- ``discodiff``: a DiscoDiff checkpoint, for users who have one (:mod:`ssmttm.refiner.discodiff`;
  DiscoDiff's weights were never released, nothing is downloaded).
"""

from __future__ import annotations

import abc
import importlib
import os

import numpy as np

from ssmttm.errors import SsmttmError

REFINERS: dict[str, str] = {
    "ssmttm": "ssmttm.refiner.checkpoint:load",
    "discodiff": "ssmttm.refiner.discodiff:load",
}


class RefinerError(SsmttmError, RuntimeError):
    """A refiner that cannot be used; the message names the checkpoint, codec or argument."""


class Refiner(abc.ABC):
    """Generates the codebooks ``cond_codebooks + 1 .. n_codebooks`` of a codec given the first ones."""

    name: str = ""
    n_codebooks: int
    cond_codebooks: int

    @abc.abstractmethod
    def refine(self, codes, states: list[np.ndarray], uncond: np.ndarray, prompts: list[str], sampler,
               seeds: list[int]):
        """codes [B, cond, T] int64; states: B text-encoder arrays [L_i, D] (the LM's encoder);
        uncond: the empty prompt's [L_0, D]; prompts: the B texts (for backends with their own text
        encoder); sampler: :class:`ssmttm.refiner.diffusion.SamplerConfig`; seeds: one per row
        (:func:`ssmttm.rng.prompt_seeds`, stream ``refiner``) -> codes [B, K, T] int64 (CPU)."""

    @abc.abstractmethod
    def describe(self) -> dict:
        """Fields recorded in every generated clip's sidecar."""

    def check_codec(self, codec) -> None:
        """Fail when ``codec`` is not the codec this refiner's latents belong to."""
        if codec.n_codebooks != self.n_codebooks:
            raise RefinerError(f"refiner {self.describe().get('refiner')} completes {self.n_codebooks} codebooks, "
                               f"codec {codec.name} has {codec.n_codebooks}")


def load_refiner(backend: str, path: str | os.PathLike, device: str = "cpu") -> Refiner:
    """Build refiner ``backend`` from the registry with the checkpoint at ``path`` on ``device``."""
    if backend not in REFINERS:
        raise RefinerError(f"unknown refiner backend {backend!r}; known: {', '.join(sorted(REFINERS))}")
    module, func = REFINERS[backend].split(":")
    return getattr(importlib.import_module(module), func)(path, device)
