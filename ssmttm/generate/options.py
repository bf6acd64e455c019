"""Settings of the ``generate`` stage (defaults in the config schema only; see ssmttm.settings).

- from ``generate``: the prompt set and the sampling recipe;
- from ``tokens``: the codec's registry name;
- from ``text`` and the experiment: ``max_length`` and ``kappa``, which a checkpoint records when it
  is trained. Generation uses the recorded values; a value given here (the rule passes the current
  config's) must equal them, or the stage fails naming both;
- :class:`MusicgenSettings`: the MusicGen baseline's (``generate`` + ``systems.<name>``);
- :class:`RefinerSampling`: the ``refiners.<name>`` keys that decode through a refiner (flags
  ``--refiner-backend``, ``--refiner-steps``, ...; ``steps`` there is the sampler's, not training's).

No heavy import.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class SamplingRecipe:
    """The ``generate`` keys every generating stage shares: our LMs and the MusicGen baseline are sampled
    with the same length, guidance, temperature, top-k and seed."""

    n_tokens: int
    cfg_scale: float
    temperature: float
    top_k: int
    seed: int
    batch_size: int
    device: str
    format: str


@dataclass(kw_only=True)
class GenerateSettings(SamplingRecipe):
    SCHEMA_NODES = ("tokens", "text", "experiments.*", "generate")
    FROM_CHECKPOINT = ("max_length", "kappa")

    codec: str
    max_length: int | None
    kappa: int | None
    prompt_set: str


@dataclass(kw_only=True)
class MusicgenSettings(SamplingRecipe):
    """``generate-musicgen``: the shared recipe from ``generate``; from the baseline's ``systems.<name>``
    entry ``seconds`` (null: the length of our clips, ``n_tokens`` DAC frames) and ``batch_size``
    (outputs do not depend on it)."""

    SCHEMA_NODES = ("generate", "systems.*")

    seconds: float | None


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
