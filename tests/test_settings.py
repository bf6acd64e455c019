"""ssmttm.settings: one home per setting (the schema's defaults), flags generated from the dataclasses."""

import argparse
import json
from dataclasses import dataclass

import pytest
from conftest import assert_settings_cover_their_sections

from ssmttm import config, rule_params, settings
from ssmttm.refiner.train import RefinerTrainConfig
from ssmttm.text.options import TextEmbedSettings
from ssmttm.tokens.options import CeilingSettings, TokenizeSettings
from ssmttm.train.options import TrainConfig

# settings class -> the keys of its schema nodes that are not its settings, and why
NOT_SETTINGS = {
    TextEmbedSettings: {"encoder"},  # the weights entry: handed over as the --text-encoder receipt (an input)
    TokenizeSettings: {"weights", "ceiling"},  # receipt input; the ceiling sub-section is CeilingSettings'
    CeilingSettings: {"weights", "batch_size", "ceiling"},
    # threads: Snakemake's; seeds: one job per seed (--seed); generate_at, refiner: generation's; enabled: DAG's;
    # train: the per-experiment overrides, merged into the recipe by the rule; import: the import_checkpoint
    # rule's (such an experiment is not trained)
    TrainConfig: {"threads", "seeds", "generate_at", "refiner", "enabled", "train", "import"},
    RefinerTrainConfig: {"threads", "enabled", "backend", "checkpoint", "sampler", "train"},
}


@pytest.mark.parametrize("cls", list(NOT_SETTINGS), ids=lambda c: c.__name__)
def test_every_key_of_a_stage_section_is_a_setting_or_named_as_not_one(cls):
    assert_settings_cover_their_sections(cls, NOT_SETTINGS[cls])


@dataclass(kw_only=True)
class Demo:
    SCHEMA_NODES = ("train", "experiments.*")
    lr: float
    betas: list[float]
    max_frames: int | None
    model: dict
    variant: str
    out: str = ""


def _parse(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="x")
    settings.add_arguments(p, Demo)
    return p, p.parse_args(argv)


def test_flags_are_the_config_keys_with_schema_defaults():
    p, args = _parse(["--variant", "prefix-simba"])
    cfg = settings.from_args(p, Demo, args, out=args.out)
    schema = settings.defaults(("train",))
    assert cfg.lr == schema["lr"] and cfg.betas == schema["betas"] and cfg.max_frames == schema["max_frames"]
    assert cfg.model == {} and cfg.variant == "prefix-simba" and cfg.out == "x"
    p, args = _parse(["--variant", "cross-simba", "--lr", "0.5", "--betas", "0.8", "0.9", "--model", '{"d_model": 8}'])
    cfg = settings.from_args(p, Demo, args, out=args.out)
    assert (cfg.lr, cfg.betas, cfg.model) == (0.5, [0.8, 0.9], {"d_model": 8})
    assert "--lr" in p.format_help() and "config train.lr" in p.format_help()


def test_settings_json_then_flags_and_errors_name_flag_and_key(capsys):
    p, args = _parse(["--settings", json.dumps({"variant": "cross-simba", "lr": 0.25}), "--lr", "0.5"])
    assert settings.from_args(p, Demo, args, out="").lr == 0.5  # typed flags win over the rule's JSON
    for argv, msg in ((["--settings", '{"variant": "cross-simba", "lrr": 1}'], "unknown key(s) ['lrr']"),
                      (["--lr", "-1"], "--lr / config key train.lr"),
                      ([], "--variant / config key experiments.*.variant: required"),
                      (["--variant", "lstm"], "--variant / config key experiments.*.variant: 'lstm' is not one of")):
        p, args = _parse(argv)
        with pytest.raises(SystemExit):
            settings.from_args(p, Demo, args, out="")
        assert msg in capsys.readouterr().err


def test_rule_params_resolve_an_experiment_with_its_overrides(repo):
    cfg = config.load(repo / "config.yaml", repo / "config" / "demo.yaml")
    name, exp = next(iter(cfg["experiments"].items()))
    exp["train"] = {"lr": 0.0123, "warmup_steps": 7}
    got = json.loads(rule_params.experiment_settings(cfg, name))
    for key, value in exp["train"].items():
        assert got[key] == value  # the experiment's override beats the shared recipe
    assert got["variant"] == exp["variant"] and "threads" not in got and "seeds" not in got
    built = settings.resolve(TrainConfig, got, run_dir="r", experiment=name, seed=0)
    assert built.lr == got["lr"]
    # byte-identical for an unchanged config, so Snakemake's params trigger reruns only on a real change
    assert rule_params.experiment_settings(cfg, name) == rule_params.experiment_settings(cfg, name)


def test_text_settings_reach_text_embed(repo):
    cfg = config.load(repo / "config.yaml", repo / "config" / "demo.yaml")
    got = json.loads(rule_params.section_settings(cfg, "ssmttm.text.options:TextEmbedSettings", "text"))
    assert got["max_length"] == cfg["text"]["max_length"] and set(got) == {"device", "dtype", "batch_size", "max_length"}
