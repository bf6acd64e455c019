"""Settings of the ``text-embed`` stage: the config's ``text`` section (defaults in the schema only;
see ssmttm.settings). The ``encoder`` key names the weights entry, which the rule hands over as the
``--text-encoder`` receipt, so it is not a setting here. No heavy import."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class TextEmbedSettings:
    SCHEMA_NODES = ("text",)

    device: str
    dtype: str
    batch_size: int
    max_length: int
