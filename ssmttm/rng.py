"""Seeded random number generators, one per generated sample (shared by the LM sampler, the refiner
and the MusicGen baseline).

Each (prompt, sample) draws from its own ``torch.Generator`` whose seed is derived from
(run seed, stream, prompt id, sample index) by :func:`sample_seed`, and its random numbers are drawn
for that row alone. So:

- different prompts get different noise (with one seed shared by every row, a weakly conditioned
  model returned the SAME tokens for different prompts, and a Fréchet distance over n clips
  measured far fewer than n distinct samples);
- a prompt's output depends on (model, prompt, seed, sample index, settings) and not on which
  other prompts share its batch, nor on the prompt order;
- the LM and the refiner draw from different streams (``stream="lm"`` / ``"refiner"``), so the
  refiner's noise is not a function of the LM's.

The derivation is sha256 of ``"ssmttm-rng/1|<seed>|<stream>|<prompt id>|<sample>"``, first 8 bytes
big-endian, top bit cleared (a non-negative int64, the range ``torch.Generator.manual_seed`` takes
on every device). Generation sidecars record the derived seed. This module sits below the samplers
and imports torch only when called.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

RNG_SCHEME = "sha256(ssmttm-rng/1|seed|stream|prompt_id|sample)"
STREAMS = ("lm", "refiner", "musicgen")


def sample_seed(seed: int, prompt_id: str, sample: int = 0, stream: str = "lm") -> int:
    """The seed of one (prompt, sample) in one stream: a non-negative int64 (see module doc)."""
    if stream not in STREAMS:
        raise ValueError(f"sample_seed: unknown stream {stream!r}; known: {', '.join(STREAMS)}")
    key = f"ssmttm-rng/1|{int(seed)}|{stream}|{prompt_id}|{int(sample)}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") & ((1 << 63) - 1)


def prompt_seeds(seed: int, prompt_ids: Sequence[str], stream: str = "lm", sample: int = 0) -> list[int]:
    """:func:`sample_seed` of every prompt id (one row each, in order)."""
    return [sample_seed(seed, str(pid), sample, stream) for pid in prompt_ids]


def make_generators(seeds: Sequence[int], device="cpu") -> list:
    """One torch generator per row on ``device``, seeded with ``seeds[i]`` (see :func:`prompt_seeds`)."""
    import torch

    if isinstance(seeds, int):
        raise TypeError("make_generators takes one seed per row (ssmttm.rng.prompt_seeds), not one run seed")
    gens = []
    for s in seeds:
        g = torch.Generator(device=torch.device(device))
        g.manual_seed(int(s))
        gens.append(g)
    return gens
