"""Settings of the evaluation stages (``reference-audio``, ``resynth``, ``evaluate-embed``, ``evaluate``): keys
of the config's ``evaluation`` section and its ``reference`` sub-section (docs/reference.md §3).

Their defaults live in the config schema only (rules/schemas/config.schema.yaml): the Snakemake rules pass
the resolved section as ``--settings`` JSON and a person may type the same keys as flags
(``--bootstrap 200``), see ssmttm.settings. The stages' other arguments are files, folders and wildcards.
Keys of these sections that are no stage's setting belong to the rules: ``metrics`` and ``resynth_kappas``
(one job per metric and per kappa), ``models`` (which weights receipts a metric job gets as ``--model``),
``claims_experiment`` (which run the claims rule reads); ``report_clips`` is the report pages' setting.
No heavy import: Snakemake imports this module when it builds the DAG.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class ReferenceSettings:
    """``reference-audio``: how the reference clips of the prompt set are fetched and cut."""

    SCHEMA_NODES = ("evaluation.reference",)

    source: str
    min_available: int
    subtype: str
    # --- jamendo ---
    seconds: float
    offset: float | str  # center | start | seconds from the track start
    # --- musiccaps (yt-dlp) ---
    url_template: str
    retries: int
    timeout_s: float
    socket_timeout_s: float
    backoff_s: float
    format: str
    cookies: str | None
    ffmpeg: str
    tolerance: float
    jobs: int


@dataclass(kw_only=True)
class ResynthSettings:
    """``resynth``: the codec (``tokens.codec``; its weights come as the ``--codec-weights`` receipt) and the
    evaluation's device."""

    SCHEMA_NODES = ("tokens", "evaluation")

    codec: str
    device: str


@dataclass(kw_only=True)
class EvaluateSettings:
    """``evaluate``: the bootstrap, its seed, the KL's epsilon, the metric models' device and the attribute
    truth table."""

    SCHEMA_NODES = ("evaluation",)

    bootstrap: int
    seed: int
    kl_epsilon: float
    device: str
    truth: str | None


@dataclass(kw_only=True)
class EmbedSettings:
    """``evaluate-embed``: the metric models' device (the one key of ``evaluation`` it reads, so changing the
    bootstrap or the KL epsilon leaves the embeddings alone)."""

    SCHEMA_NODES = ("evaluation",)

    device: str
