"""Data stages (weights, fetch .. manifest, demo mirror): one home per setting.

Each stage's settings dataclass holds exactly the keys of its config section(s), minus the keys named
in NOT_SETTINGS with who reads them instead, so a key cannot be added in one place only; each stage's
flags are those keys; and what every data rule passes as ``--settings`` resolves for the real configs.
"""

from __future__ import annotations

import importlib
import json
import re
from types import SimpleNamespace

import pytest
from conftest import assert_settings_cover_their_sections

from ssmttm import config, rule_params, settings
from ssmttm.constants import METADATA_FILES
from ssmttm.data.options import (
    CaptionsSettings, FetchFileSettings, FetchShardSettings, LicensesSettings, ManifestSettings, SegmentSettings,
    SelectSettings, SourceSettings, VocalsSettings,
)
from ssmttm.demo.mirror import MirrorSettings
from ssmttm.weights import WeightSettings

DATA_RULES = ("weights", "fetch", "licenses", "select", "segment", "vocals", "captions", "manifest", "demo")

# settings class -> the keys of its schema nodes that are not its settings, and who reads them instead
NOT_SETTINGS = {
    # the source section minus kind: the network keys are FetchShardSettings', metadata and requires below
    SourceSettings: {"base_url", "mirrors", "dataset", "audio_type", "keep_tars", "retries", "timeout_s",
                     "backoff_s", "requires", "metadata"},
    # base_url .. keep_tars: fetch-shard's; requires: a rule input; metadata: one fetch_metadata job per entry;
    # kind: SourceSettings' (--source-kind); fetch-file checks a file against every source's formats
    FetchFileSettings: {"kind", "base_url", "mirrors", "dataset", "audio_type", "keep_tars", "requires", "metadata"},
    # kind: SourceSettings' (--source-settings next to --settings); metadata: the source's files, --metadata
    FetchShardSettings: {"kind", "requires", "metadata"},
    LicensesSettings: set(),
    # segment's keys (select reads clip_seconds and position to plan clips)
    SelectSettings: {"silence_dbfs", "seed", "sample_rate", "channels", "checks"},
    # select's keys; checks: the sub-section, whose keys are fields here (node segment.checks)
    SegmentSettings: {"min_seconds", "exclude_song_describer", "checks"},
    VocalsSettings: {"model"},  # the weights entry: handed over as the --model-path receipt (an input)
    # tags, qwen2_audio: sub-sections (their keys are fields); model, rephrase_model: receipts (inputs)
    CaptionsSettings: {"tags", "qwen2_audio", "model", "rephrase_model"},
    ManifestSettings: set(),
    # requires: a rule input; models: one job per entry; used_by, notes: for people; random_init: read by the
    # evaluation rule (marks metric rows "pipeline check")
    WeightSettings: {"requires", "models", "used_by", "notes", "random_init"},
    MirrorSettings: set(),
}

# stage -> (module, entry point, settings class)
STAGES = {
    "weights": ("ssmttm.weights", "main", WeightSettings),
    "fetch-file": ("ssmttm.data.fetch", "main_file", FetchFileSettings),
    "fetch-shard": ("ssmttm.data.fetch", "main_shard", FetchShardSettings),
    "licenses": ("ssmttm.data.licenses", "main", LicensesSettings),
    "select": ("ssmttm.data.select", "main", SelectSettings),
    "segment": ("ssmttm.data.segment", "main", SegmentSettings),
    "vocals": ("ssmttm.data.vocals", "main", VocalsSettings),
    "captions": ("ssmttm.data.captions", "main", CaptionsSettings),
    "manifest": ("ssmttm.data.manifest", "main", ManifestSettings),
    "demo-mirror": ("ssmttm.demo.mirror", "main", MirrorSettings),
}


@pytest.mark.parametrize("cls", list(NOT_SETTINGS), ids=lambda c: c.__name__)
def test_every_key_of_a_data_section_is_a_setting_or_named_as_not_one(cls):
    assert_settings_cover_their_sections(cls, NOT_SETTINGS[cls])


def test_every_data_section_belongs_to_a_stage():
    nodes = {node for cls in NOT_SETTINGS for node in cls.SCHEMA_NODES}
    assert nodes == {"source", "source.metadata.*", "licenses", "filter", "segment", "segment.checks", "vocals",
                     "captions", "captions.tags", "captions.qwen2_audio", "split", "weights", "weights.models.*",
                     "demo_mirror"}


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_flags_are_the_config_keys(stage, capsys):
    module, func, cls = STAGES[stage]
    with pytest.raises(SystemExit):
        getattr(importlib.import_module(module), func)(["--help"])
    text = capsys.readouterr().out
    for f in settings.setting_fields(cls):
        assert re.search(rf"{settings.flag(f.name)}\b", text), f"{stage}: no flag {settings.flag(f.name)}"
    assert "--settings" in text


def _section_calls(repo):
    """(rule file, class path, sections) of every section_settings call in the data rules."""
    pattern = re.compile(r'rule_params\.section_settings\(\s*config,\s*"([^"]+)",\s*((?:"[^"]+",?\s*)+)\)')
    for name in DATA_RULES:
        text = (repo / "rules" / f"{name}.smk").read_text(encoding="utf-8")
        assert "lambda" not in text and not re.search(r"^\s*def ", text, re.M), f"rules/{name}.smk: a def or lambda"
        for cls_path, sections in pattern.findall(text):
            yield name, cls_path, re.findall(r'"([^"]+)"', sections)


@pytest.mark.parametrize("configs", [("config.yaml",), ("config.yaml", "config/demo.yaml")], ids=["paper", "demo"])
def test_what_the_data_rules_pass_resolves(repo, configs):
    cfg = config.load(*(repo / c for c in configs))
    calls = list(_section_calls(repo))
    assert {c[1].split(":")[1] for c in calls} == {
        "SourceSettings", "FetchShardSettings", "LicensesSettings", "SelectSettings", "SegmentSettings", "VocalsSettings",
        "CaptionsSettings", "ManifestSettings", "MirrorSettings"}
    for rule, cls_path, sections in calls:
        module, name = cls_path.split(":")
        cls = getattr(importlib.import_module(module), name)
        got = json.loads(rule_params.section_settings(cfg, cls_path, *sections))
        assert set(got) == {f.name for f in settings.setting_fields(cls)}, rule
        settings.resolve(cls, got)  # validates every value against its key's schema
    for weight in cfg["weights"]["models"]:
        got = json.loads(rule_params.weight_settings(cfg)(SimpleNamespace(name=weight)))
        built = settings.resolve(WeightSettings, got)
        assert built.source == cfg["weights"]["models"][weight]["source"] and built.dir == cfg["weights"]["dir"]
    for key, file in METADATA_FILES.items():
        if key in cfg["source"]["metadata"]:
            got = json.loads(rule_params.metadata_settings(cfg)(SimpleNamespace(metafile=file)))
            assert settings.resolve(FetchFileSettings, got).url == cfg["source"]["metadata"][key]["url"]
    with pytest.raises(ValueError, match="weights.models.nope: no such weight"):
        rule_params.weight_settings(cfg)(SimpleNamespace(name="nope"))


def test_star_steps_into_properties_that_share_one_ref():
    keys = settings.key_schemas(("source", "source.metadata.*"))
    assert keys["url"][0] == "source.metadata.*.url" and keys["retries"][0] == "source.retries"
    assert settings.schema_node("weights.models.*")["required"] == ["source", "licence"]
    with pytest.raises(KeyError, match="share one"):
        settings.schema_node("segment.*")


def test_a_bad_flag_names_the_flag_and_the_config_key(tmp_path, capsys):
    from ssmttm.data import fetch

    with pytest.raises(SystemExit):
        fetch.main_shard(["--shard", "00", "--metadata", "tar_sha256=t", "track_sha256=t", "--out-dir", "o",
                          "--receipt", "r", "--base-url", "b", "--dataset", "raw_30s", "--audio-type", "flac"])
    assert "--audio-type / config key source.audio_type" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fetch.main_file(["--out", str(tmp_path / "x"), "--url", "u", "--sha256", "xyz"])
    assert "--sha256 / config key source.metadata.*.sha256" in capsys.readouterr().err
