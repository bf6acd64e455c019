"""Settings of the data stages, fetch to manifest: one dataclass per stage whose fields are the keys
of its config section(s) (``SCHEMA_NODES``). The defaults live in the config schema only
(rules/schemas/config.schema.yaml); a rule passes the resolved section as ``--settings`` JSON
(ssmttm.rule_params) and a person running a stage by hand types the same keys as flags
(``clip_seconds`` -> ``--clip-seconds``), see ssmttm.settings. Input and output paths and the shard
stay ordinary arguments of each stage.

Keys of these sections that are not fields, and who reads them instead, are listed in
tests/test_data_settings.py (e.g. ``vocals.model``: the rule hands the weights receipt over as an
input). Imported by Snakemake at DAG-build time: nothing heavy here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class SourceSettings:
    """Which dataset source (``source.kind``, a key of ``ssmttm.data.sources.SOURCES``) the stages that
    read its formats ask: ``fetch-shard``, ``licenses``, ``select``. Their flag is ``--source-kind``
    (prefix ``source-``, next to the stage's own settings)."""

    SCHEMA_NODES = ("source",)

    kind: str


@dataclass(frozen=True, kw_only=True)
class FetchFileSettings:
    """``fetch-file``: one metadata file (``source.metadata.<key>``) with the source's network settings."""

    SCHEMA_NODES = ("source", "source.metadata.*")

    url: str
    sha256: str | None
    retries: int
    timeout_s: float
    backoff_s: float


@dataclass(frozen=True, kw_only=True)
class FetchShardSettings:
    """``fetch-shard``: where the audio tars are and how to fetch them (``source``)."""

    SCHEMA_NODES = ("source",)

    base_url: str
    mirrors: list[str]
    dataset: str
    audio_type: str
    keep_tars: bool
    retries: int
    timeout_s: float
    backoff_s: float


@dataclass(frozen=True, kw_only=True)
class LicensesSettings:
    """``licenses``: the allow-list, a named preset or ``custom`` with ``allow``."""

    SCHEMA_NODES = ("licenses",)

    preset: str
    allow: list[str]


@dataclass(frozen=True, kw_only=True)
class SelectSettings:
    """``select``: the metadata filter (``filter``) and the clip plan it counts (``segment``)."""

    SCHEMA_NODES = ("filter", "segment")

    min_seconds: float
    exclude_song_describer: bool
    clip_seconds: float
    position: str


@dataclass(frozen=True, kw_only=True)
class SegmentSettings:
    """``segment``: clip window, output format, silence threshold and the source checks
    (``segment``, ``filter.silence_dbfs``, ``segment.checks``). Each source check always flags; it
    rejects only when its ``reject_*`` key is true."""

    SCHEMA_NODES = ("filter", "segment", "segment.checks")

    clip_seconds: float
    position: str
    seed: int
    sample_rate: int
    channels: int
    silence_dbfs: float
    # segment.checks
    reject_extension_mismatch: bool
    reject_downmixed: bool  # a source with more than 2 channels
    min_source_sample_rate: int  # a source below this rate is flagged "upsampled"
    reject_upsampled: bool
    full_scale_level: float  # |x| at or above this (full scale = 1.0) counts as clipped
    max_clipped_fraction: float  # a clip with a larger share of clipped samples is flagged
    reject_clipped: bool


@dataclass(frozen=True, kw_only=True)
class VocalsSettings:
    """``vocals``: Demucs separation (or keep) of one shard's clips."""

    SCHEMA_NODES = ("vocals",)

    mode: str
    device: str
    shifts: int
    overlap: float
    batch_size: int


@dataclass(frozen=True, kw_only=True)
class CaptionsSettings:
    """``captions``: which captioner, and every knob a captioner factory may read (each uses the ones
    it needs): ``captions``, ``captions.tags``, ``captions.qwen2_audio``. ``model_path`` /
    ``rephrase_path`` are not config keys: local folders from the weights cache (the rule's inputs)."""

    SCHEMA_NODES = ("captions", "captions.tags", "captions.qwen2_audio")

    captioner: str
    seed: int  # picks tag-template phrasings; seeds the captioner's sampling
    n_variants: int
    device: str
    batch_size: int
    max_new_tokens: int
    max_audio_seconds: float
    model_path: str | None = None
    rephrase_path: str | None = None


@dataclass(frozen=True, kw_only=True)
class ManifestSettings:
    """``manifest``: the train/valid split by track (``split``) and whether to re-hash the clips."""

    SCHEMA_NODES = ("split",)

    valid_fraction: float
    seed: int
    verify_sha256: bool


ALL = (SourceSettings, FetchFileSettings, FetchShardSettings, LicensesSettings, SelectSettings, SegmentSettings,
       VocalsSettings, CaptionsSettings, ManifestSettings)
