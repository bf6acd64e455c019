"""Sampling from LM logits: classifier-free guidance, temperature, top-k, seeded per row.

Defaults (docs/reference.md §1, the authors' sampling): CFG on logits
``uncond + 3.0 * (cond - uncond)`` with the empty string as the unconditional prompt, temperature
1.2, top-k 250.

Seeding: every row (one prompt) owns a ``torch.Generator`` seeded from (run seed, prompt id, sample
index) (:mod:`ssmttm.rng`, re-exported here), and its random numbers are drawn for that row alone
(Gumbel-max over the top-k candidates). So different prompts get different noise, and a prompt's
tokens depend on (checkpoint, prompt, seed, settings) and not on which other prompts share its
batch (up to floating-point differences between batch sizes).

Gumbel-max: ``argmax(log p + g)`` with ``g = -log(-log(u))``, ``u ~ U(0, 1)`` draws exactly from the
categorical ``p``; we use it instead of ``torch.multinomial`` so the noise of each row comes from
that row's generator.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ssmttm.errors import SsmttmError
from ssmttm.rng import make_generators, prompt_seeds  # noqa: F401  (per-row seeding; shared with the refiner)


class SamplingError(SsmttmError, ValueError):
    """Bad sampling settings; the message names the setting."""


@dataclass(frozen=True)
class SamplingConfig:
    """``cfg_scale``: guidance scale (1.0 = the conditional logits alone); ``temperature`` <= 0 means
    greedy (argmax); ``top_k`` <= 0 keeps every candidate, 1 is greedy."""

    cfg_scale: float
    temperature: float
    top_k: int

    def __post_init__(self) -> None:
        import math

        for name in ("cfg_scale", "temperature"):
            v = getattr(self, name)
            if not math.isfinite(float(v)):
                raise SamplingError(f"--{name.replace('_', '-')}: must be finite, got {v}")
        if self.temperature < 0:
            raise SamplingError(f"--temperature: must be >= 0 (0 = greedy), got {self.temperature}")
        if int(self.top_k) != self.top_k or self.top_k < 0:
            raise SamplingError(f"--top-k: must be an integer >= 0 (0 = no top-k), got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    def to_dict(self) -> dict:
        return asdict(self)


def from_recipe(recipe, parser) -> SamplingConfig:
    """The :class:`SamplingConfig` of a stage's resolved settings (:class:`ssmttm.generate.options.SamplingRecipe`);
    bad values end the stage through ``parser.error`` (exit 2, naming the flag)."""
    try:
        return SamplingConfig(recipe.cfg_scale, recipe.temperature, recipe.top_k)
    except SamplingError as exc:
        parser.error(str(exc))


def cfg_combine(cond, uncond, scale: float):
    """Classifier-free guidance on logits: ``uncond + scale * (cond - uncond)`` (same shapes)."""
    if cond.shape != uncond.shape:
        raise ValueError(f"cfg_combine: cond {tuple(cond.shape)} and uncond {tuple(uncond.shape)} differ")
    return uncond + scale * (cond - uncond)


def top_k_filter(logits, k: int):
    """Keep the ``k`` largest logits of the last axis, set the rest to ``-inf`` (``k`` <= 0 or >= V:
    unchanged). logits: [..., V] float tensor; returns a new tensor."""
    import torch

    V = logits.shape[-1]
    if k <= 0 or k >= V:
        return logits.clone()
    vals, idx = torch.topk(logits, k, dim=-1)
    out = torch.full_like(logits, float("-inf"))
    return out.scatter(-1, idx, vals)


def sample(logits, temperature: float, top_k: int, generators=None):
    """Draw one token per distribution.

    logits: [R, ..., V] float (R rows, e.g. [B, K, 1024]); ``generators``: a list of R
    ``torch.Generator`` (one per row, on the logits' device), one generator shared by all rows, or
    None (torch's global RNG). Returns int64 [R, ...] indices into V. ``temperature`` <= 0 or
    ``top_k`` == 1: argmax (no random numbers are drawn).
    """
    import torch

    if temperature <= 0 or top_k == 1:
        return logits.argmax(dim=-1)
    V = logits.shape[-1]
    k = V if top_k <= 0 or top_k >= V else int(top_k)
    vals, idx = torch.topk(logits.float(), k, dim=-1)  # [R, ..., k], sorted descending
    logp = torch.log_softmax(vals / float(temperature), dim=-1)
    R = logits.shape[0]
    if isinstance(generators, (list, tuple)):
        if len(generators) != R:
            raise ValueError(f"sample: {len(generators)} generators for {R} rows")
        u = torch.stack([torch.rand(vals.shape[1:], generator=g, device=vals.device) for g in generators])
    else:
        u = torch.rand(vals.shape, generator=generators, device=vals.device)
    tiny = torch.finfo(u.dtype).tiny
    gumbel = -torch.log(-torch.log(u.clamp(tiny, 1.0 - 1e-7)))
    choice = (logp + gumbel).argmax(dim=-1, keepdim=True)
    return idx.gather(-1, choice).squeeze(-1)
