"""Settings of the ``generate`` stage (defaults in the config schema only; see ssmttm.settings).

- from ``generate``: the prompt set and the sampling recipe;
- from ``tokens``: the codec's registry name;
- from ``text`` and the experiment: ``max_length`` and ``kappa``, which a checkpoint records when it
  is trained. Generation uses the recorded values; a value given here (the rule passes the current
  config's) must equal them, or the stage fails naming both;
- :class:`RefinerSampling`: the ``refiners.<name>`` keys that decode through a refiner (flags
  ``--refiner-backend``, ``--refiner-steps``, ...; ``steps`` there is the sampler's, not training's).

No heavy import.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class GenerateSettings:
    SCHEMA_NODES = ("tokens", "text", "experiments.*", "generate")
    FROM_CHECKPOINT = ("max_length", "kappa")

    codec: str
    max_length: int | None
    kappa: int | None
    prompt_set: str
    n_tokens: int
    cfg_scale: float
    temperature: float
    top_k: int
    seed: int
    batch_size: int
    device: str
    format: str


@dataclass(kw_only=True)
class RefinerSampling:
    SCHEMA_NODES = ("refiners.*", "refiners.*.sampler")

    backend: str
    steps: int
    cfg_scale: float
    sampler: str


@dataclass(kw_only=True)
class PromptSetSettings:
    """``prompt-set``: which set, the demo set's own prompts and each set's options (``generate``)."""

    SCHEMA_NODES = ("generate",)

    prompt_set: str
    prompts: dict[str, str]
    prompt_options: dict[str, dict]
