"""Settings of the report stages (``tables``, ``claims``, ``report-pages``, ``loss-curves``): config keys,
with their defaults in the config schema only (rules/schemas/config.schema.yaml).

The Snakemake rules pass the resolved keys as ``--settings`` JSON and a person may type the same keys as
flags (``--report-clips 2``), see ssmttm.settings; the stages' other arguments are files and folders.
No heavy import: Snakemake imports this module when it builds the DAG.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(kw_only=True)
class TablesSettings:
    """``tables`` and ``val-loss``: the config's ``studies`` (study name -> kind, experiments, title,
    published, step)."""

    SCHEMA_NODES = ("",)  # the whole config: ``studies`` is a top-level key

    studies: dict[str, Any]


@dataclass(kw_only=True)
class ClaimsSettings:
    """``claims``: the recipe of the run the claims are computed for, as configured (the shared ``train``
    section with the experiment's ``train:`` overrides merged in, then the experiment's own keys): the
    model it builds (variant, preset, kappa, ``model`` overrides) and the positions it trains on."""

    SCHEMA_NODES = ("train", "experiments.*")

    variant: str
    preset: str
    kappa: int
    model: dict[str, Any]
    steps: int
    batch_size: int
    grad_accum: int
    max_frames: int | None


@dataclass(kw_only=True)
class ReportPagesSettings:
    """``report-pages``: how many generated clips per experiment the report embeds."""

    SCHEMA_NODES = ("evaluation",)

    report_clips: int


@dataclass(kw_only=True)
class LossCurvesSettings:
    """``loss-curves``: the smoothing of the training-loss figures."""

    SCHEMA_NODES = ("plots",)

    smooth: int
