"""Seeded random number generators, one per batch row (shared by the LM sampler and the refiner).

Every prompt owns a ``torch.Generator`` seeded with the run's seed, and its random numbers are drawn
for that row alone, so a prompt's output depends on (checkpoint, prompt, seed, settings) and not on
which other prompts share its batch. The LM's token sampler (:mod:`ssmttm.generate.sampling`) and the
refiner's diffusion sampler (:mod:`ssmttm.refiner.diffusion`) both draw from these generators; this
module sits below both, and imports torch only when called.
"""

from __future__ import annotations


def make_generators(seed: int, n: int, device="cpu") -> list:
    """``n`` torch generators on ``device``, each seeded with ``seed`` (one per prompt row)."""
    import torch

    gens = []
    for _ in range(n):
        g = torch.Generator(device=torch.device(device))
        g.manual_seed(int(seed))
        gens.append(g)
    return gens
