"""Settings of the evaluation, plots and report stages: one home per setting (the config schema), the
stages' dataclasses cover their config sections, and the rules hand them the resolved sections."""

import argparse
import json
import re
from types import SimpleNamespace

import pytest
from conftest import assert_settings_cover_their_sections

from ssmttm import config, rule_params, settings
from ssmttm.eval.options import EvaluateSettings, ReferenceSettings, ResynthSettings
from ssmttm.report.options import ClaimsSettings, LossCurvesSettings, ReportPagesSettings, TablesSettings

EVALUATION_KEYS = {"metrics", "models", "reference", "truth", "resynth_kappas", "bootstrap", "seed", "kl_epsilon", "device",
                   "report_clips", "claims_experiment"}
# settings class -> the keys of its schema nodes that are not its settings, and why
NOT_SETTINGS = {
    ReferenceSettings: set(),
    # tokens: weights = the --codec-weights receipt (an input), batch_size = tokenize's, ceiling = the ceiling
    # stage's; evaluation: resynth_kappas = one job per kappa (the --kappa wildcard), the rest other stages'
    ResynthSettings: {"weights", "batch_size", "ceiling"} | (EVALUATION_KEYS - {"device"}),
    # metrics: one job per metric (--metric); models: the receipts a job gets as --model ROLE=PATH;
    # reference: reference-audio's; resynth_kappas: the resynth jobs; report_clips: report-pages';
    # claims_experiment: which run the claims rule reads
    EvaluateSettings: {"metrics", "models", "reference", "resynth_kappas", "report_clips", "claims_experiment"},
    ReportPagesSettings: EVALUATION_KEYS - {"report_clips"},
    LossCurvesSettings: set(),
}


@pytest.mark.parametrize("cls", list(NOT_SETTINGS), ids=lambda c: c.__name__)
def test_every_key_of_a_stage_section_is_a_setting_or_named_as_not_one(cls):
    assert_settings_cover_their_sections(cls, NOT_SETTINGS[cls])


def test_tables_take_the_studies_section_and_claims_the_recipe_keys_of_d_and_n():
    """tables: the whole ``studies`` section (a top-level key); claims: the recipe keys that give the
    configured positions D (steps, batch, accumulation, frames + kappa) and the model of N and the counted
    forward (preset, variant, kappa, model overrides)."""
    assert {f.name for f in settings.setting_fields(TablesSettings)} == {"studies"}
    assert settings.key_schemas(TablesSettings.SCHEMA_NODES)["studies"][0] == "studies"
    claims = {f.name for f in settings.setting_fields(ClaimsSettings)}
    assert claims == {"variant", "preset", "kappa", "model", "steps", "batch_size", "grad_accum", "max_frames"}
    assert claims <= set(settings.key_schemas(ClaimsSettings.SCHEMA_NODES))


def test_the_rules_define_no_functions(repo):
    for name in ("eval", "plots", "report"):
        text = (repo / "rules" / f"{name}.smk").read_text()
        assert not re.search(r"^\s*def |\blambda\b", text, re.M), f"rules/{name}.smk: helpers belong in the package"


@pytest.fixture(scope="module")
def demo(repo):
    return config.load(repo / "config.yaml", repo / "config" / "demo.yaml")


def test_rule_settings_are_the_resolved_sections(demo):
    w = SimpleNamespace(metric="fd_logmel")
    ref = json.loads(rule_params.stage_settings(demo, "ssmttm.eval.options:ReferenceSettings",
                                                "evaluation.reference")(w))
    assert ref == demo["evaluation"]["reference"] and "{ytid}" in ref["url_template"]
    assert settings.resolve(ReferenceSettings, ref).source == "jamendo"
    resynth = json.loads(rule_params.stage_settings(demo, "ssmttm.eval.options:ResynthSettings", "tokens",
                                                   "evaluation")(w))
    assert resynth == {"codec": demo["tokens"]["codec"], "device": demo["evaluation"]["device"]}
    tables = json.loads(rule_params.tables_settings(demo)(w))
    assert tables == {"studies": demo["studies"]}
    assert settings.resolve(TablesSettings, tables).studies == demo["studies"]
    pages = json.loads(rule_params.stage_settings(demo, "ssmttm.report.options:ReportPagesSettings", "evaluation")(w))
    assert pages == {"report_clips": demo["evaluation"]["report_clips"]}
    assert json.loads(rule_params.stage_settings(demo, "ssmttm.report.options:LossCurvesSettings", "plots")(w)) == {
        "smooth": settings.defaults(("plots",))["smooth"]}


def test_evaluate_settings_carry_the_truth_table_and_kl_epsilon_only_to_their_jobs(demo):
    params = rule_params.evaluate_settings(demo)
    attr = json.loads(params(SimpleNamespace(metric="attributes")))
    kl = json.loads(params(SimpleNamespace(metric="kl_passt")))
    other = json.loads(params(SimpleNamespace(metric="fd_logmel")))
    assert attr["truth"] == demo["evaluation"]["truth"] and "truth" not in other and "truth" not in kl
    assert kl["kl_epsilon"] == demo["evaluation"]["kl_epsilon"] == 1e-6 and "kl_epsilon" not in other
    assert {k: v for k, v in attr.items() if k != "truth"} == other == {
        k: demo["evaluation"][k] for k in ("bootstrap", "seed", "device")}
    assert {k: v for k, v in kl.items() if k != "kl_epsilon"} == other
    assert settings.resolve(EvaluateSettings, other).truth is None


def test_metric_models_and_pipeline_check(demo):
    w = SimpleNamespace(metric="clap_score")
    inputs = {"clap": "results/weights/clap_tiny.json", "clap_text": "results/weights/roberta_tiny.json"}
    assert rule_params.metric_models(demo)(w, inputs) == [f"{k}={v}" for k, v in inputs.items()]
    assert rule_params.pipeline_check(demo)(w) == "true"  # the demo's metric models are random-init
    assert rule_params.pipeline_check(demo)(SimpleNamespace(metric="attributes")) == "false"
    assert rule_params.metric_models(demo)(SimpleNamespace(metric="attributes"), {}) == []


def test_claims_run_and_recipe(demo):
    exp = rule_params.claims_experiment(demo)
    curve = next(s for s in demo["studies"].values() if s["kind"] == "curve")
    assert demo["evaluation"]["claims_experiment"] is None and exp == curve["experiments"][0]
    cfg = {**demo, "evaluation": {**demo["evaluation"], "claims_experiment": "transformer_k1"}}
    cfg["experiments"] = {**demo["experiments"], "transformer_k1": {**demo["experiments"]["transformer_k1"],
                                                                     "train": {"batch_size": 3}}}
    recipe = json.loads(rule_params.claims_settings(cfg)(None))
    assert recipe["batch_size"] == 3 and recipe["steps"] == cfg["experiments"]["transformer_k1"]["steps"]
    assert settings.resolve(ClaimsSettings, recipe).variant == cfg["experiments"]["transformer_k1"]["variant"]


def test_generated_sets_and_report_audio(demo):
    def gen_dir(exp, seed, step):
        return f"g/{exp}/{seed}/{step}"

    e = demo["experiments"]["simba_k1"]
    sets = rule_params.generated_sets(demo, gen_dir)(SimpleNamespace(exp="simba_k1"))
    steps = e["generate_at"] or [e["steps"]]
    assert sets == [gen_dir("simba_k1", s, t) for s in e["seeds"] for t in steps]
    audio = rule_params.report_audio({"simba_k1": e}, gen_dir)
    assert audio == [f"simba_k1={gen_dir('simba_k1', e['seeds'][0], steps[-1])}"]


def test_a_key_of_several_types_parses_as_the_first_that_fits(capsys):
    """evaluation.reference.offset is center | start | seconds: ``float | str`` reads "2.5" as a number."""
    p = argparse.ArgumentParser()
    settings.add_arguments(p, ReferenceSettings)
    for text, value in (("2.5", 2.5), ("center", "center"), ("0", 0.0)):
        assert settings.from_args(p, ReferenceSettings, p.parse_args(["--offset", text])).offset == value
    with pytest.raises(SystemExit):
        settings.from_args(p, ReferenceSettings, p.parse_args(["--offset", "middle"]))
    assert "--offset / config key evaluation.reference.offset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        settings.from_args(p, ReferenceSettings, p.parse_args(["--url-template", "http://x/"]))
    assert "--url-template / config key evaluation.reference.url_template" in capsys.readouterr().err


@pytest.mark.parametrize("stage", ["reference-audio", "resynth", "evaluate", "tables", "claims", "report-pages",
                                   "loss-curves"])
def test_stage_help_lists_the_config_keys(stage, capsys):
    from ssmttm.cli import main

    with pytest.raises(SystemExit) as exc:
        main([stage, "--help"], own_numba_cache=False)
    assert exc.value.code == 0
    assert "--settings" in capsys.readouterr().out
