"""Settings of the ``tokenize`` and ``ceiling`` stages: the config's ``tokens`` section and its
``ceiling`` sub-section (defaults in the schema only; see ssmttm.settings). The ``weights`` key names
the codec's weights entry, handed over as the ``--codec-weights`` receipt. No heavy import."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class TokenizeSettings:
    SCHEMA_NODES = ("tokens",)

    codec: str
    device: str
    batch_size: int


@dataclass(kw_only=True)
class CeilingSettings:
    SCHEMA_NODES = ("tokens", "tokens.ceiling")

    codec: str
    device: str
    clips_per_shard: int
    seed: int
    kappas: list[int]
