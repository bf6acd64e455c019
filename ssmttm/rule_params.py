"""What the Snakemake rules hand their stages, built from the validated config (rules/common.smk).

Each ``*_settings(config)`` returns a params function of the job's wildcards whose value is the JSON
a stage reads with ``--settings`` (ssmttm.settings): the stage's config section, resolved (an
experiment's ``train:`` overrides merged into the shared recipe) and cut to the keys the stage's
dataclass holds. Snakemake reruns a job when its params change, so editing one experiment's recipe
reruns that experiment only. Imported at DAG-build time: nothing heavy here.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from ssmttm import settings


def use_this_interpreter(executable: str) -> None:
    """Put ``executable``'s folder first on PATH for every job Snakemake starts from this process, so a
    rule's bare ``python -m ssmttm`` imports the environment that runs Snakemake. With ``--sdm conda``,
    each job's own environment is activated on top of this and still comes first."""
    os.environ.update(PATH=os.pathsep.join([os.path.dirname(executable), os.environ.get("PATH", "")]))


def settings_json(cls, *sections: dict[str, Any]) -> str:
    """The sections merged (later wins), cut to ``cls``'s setting fields, as ``--settings`` JSON."""
    names = {f.name for f in settings.setting_fields(cls)}
    merged: dict[str, Any] = {}
    for section in sections:
        merged.update({k: v for k, v in section.items() if k in names})
    return settings.section_json(merged)


def experiment_settings(config: dict, exp: str) -> str:
    """``train`` settings of one experiment: the shared recipe <- its ``train:`` overrides <- its own keys."""
    from ssmttm.train.options import TrainConfig

    e = config["experiments"][exp]
    return settings_json(TrainConfig, config["train"], e["train"], e)


def refiner_settings(config: dict, name: str) -> str:
    """``train-refiner`` settings of one refiner: the shared recipe <- its ``train:`` overrides <- its keys."""
    from ssmttm.refiner.train import RefinerTrainConfig

    r = config["refiners"][name]
    return settings_json(RefinerTrainConfig, config["train"], r["train"], r)


def train_settings(config: dict) -> Callable:
    """params function of the ``train`` rule (wildcards: exp)."""
    return lambda wildcards: experiment_settings(config, wildcards.exp)


def train_refiner_settings(config: dict) -> Callable:
    """params function of the ``train_refiner`` rule (wildcards: refiner)."""
    return lambda wildcards: refiner_settings(config, wildcards.refiner)


def section_settings(config: dict, cls_path: str, *sections: str) -> str:
    """``--settings`` JSON of a stage whose settings are whole config sections, no wildcards:
    ``cls_path`` is ``"module:Class"`` (imported here, so keep that module light), ``sections`` dotted
    config keys merged in order (``"tokens.ceiling"``)."""
    import importlib

    module, name = cls_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    values = []
    for dotted in sections:
        node = config
        for part in dotted.split("."):
            node = node[part]
        values.append(node)
    return settings_json(cls, *values)


# --- data stages (fetch .. manifest, weights, demo mirror) ------------------------------------------------


def weight_settings(config: dict) -> Callable:
    """params function of the ``weights`` rule (wildcards: name): the cache's settings (``weights``) and
    the weight's entry (``weights.models.<name>``)."""
    from ssmttm.weights import WeightSettings

    def params(wildcards) -> str:
        models = config["weights"]["models"]
        if wildcards.name not in models:
            raise ValueError(f"config key weights.models.{wildcards.name}: no such weight (known: {sorted(models)})")
        return settings_json(WeightSettings, config["weights"], models[wildcards.name])

    return params


def metadata_settings(config: dict) -> Callable:
    """params function of the ``fetch_metadata`` rule (wildcards: metafile, a file name of
    ssmttm.data.sources.metadata_files, the dataset source's and the shared ones): the source's network
    settings and the file's ``source.metadata`` entry."""
    from ssmttm.data.options import FetchFileSettings
    from ssmttm.data.sources import metadata_files

    keys = {file: key for key, file in metadata_files(config["source"]["kind"]).items()}

    def params(wildcards) -> str:
        entry = config["source"]["metadata"][keys[wildcards.metafile]]
        return settings_json(FetchFileSettings, config["source"], entry)

    return params


# --- tokens, text, generation -----------------------------------------------------------------------------

def generate_settings(config: dict) -> Callable:
    """params function of the ``generate`` rule (wildcards: exp): the codec name, the experiment's kappa
    and the text max_length (checked against the checkpoint), the generate section."""
    from ssmttm.generate.options import GenerateSettings

    return lambda wildcards: settings_json(GenerateSettings, config["tokens"], config["text"],
                                           config["experiments"][wildcards.exp], config["generate"])


def musicgen_settings(config: dict) -> Callable:
    """params function of the ``generate_musicgen`` rule (wildcards: system): the generate section (our
    systems' length, CFG scale and sampling) with the system's own keys over it."""
    from ssmttm.generate.options import MusicgenSettings

    return lambda wildcards: settings_json(MusicgenSettings, config["generate"], config["systems"][wildcards.system])


def generate_refiner_settings(config: dict) -> Callable:
    """params function of the ``generate`` rule: its experiment's refiner backend and sampler ("{}" when
    single-stage: the flags are then unused)."""
    from ssmttm.generate.options import RefinerSampling

    def value(wildcards) -> str:
        name = config["experiments"][wildcards.exp]["refiner"]
        if name is None:
            return settings.section_json({})
        r = config["refiners"][name]
        return settings_json(RefinerSampling, r, r["sampler"])

    return value



# --- evaluation, plots, report -----------------------------------------------------------------------------

def fixed(text: str) -> Callable:
    """``text`` as a params function. Snakemake reads braces in a params *string* as wildcards, and config
    values may hold braces (``evaluation.reference.url_template``'s ``{ytid}``, a study's title)."""
    return lambda wildcards: text


def stage_settings(config: dict, cls_path: str, *sections: str) -> Callable:
    """:func:`section_settings` as a params function (see :func:`fixed`)."""
    return fixed(section_settings(config, cls_path, *sections))


def tables_settings(config: dict) -> Callable:
    """params function of the ``tables`` rule: ``{"studies": ...}``, the config's studies."""
    from ssmttm.report.options import TablesSettings

    return fixed(settings_json(TablesSettings, config))


def claims_experiment(config: dict) -> str:
    """The experiment whose first seed the claims recompute: ``evaluation.claims_experiment``, else the first
    experiment of the first curve study, else the first enabled experiment."""
    chosen = config["evaluation"]["claims_experiment"]
    if chosen:
        return chosen
    curves = [s["experiments"][0] for s in config["studies"].values() if s["kind"] == "curve"]
    return curves[0] if curves else next(n for n, e in config["experiments"].items() if e["enabled"])


def claims_settings(config: dict) -> Callable:
    """params function of the ``claims`` rule: the claims experiment's recipe as configured (the shared
    ``train`` section <- its ``train:`` overrides <- its own keys)."""
    from ssmttm.report.options import ClaimsSettings

    e = config["experiments"][claims_experiment(config)]
    return fixed(settings_json(ClaimsSettings, config["train"], e["train"], e))


def generate_steps(experiment: dict) -> list[int]:
    """The steps an experiment generates at (``generate_at``, default its final step), in config order."""
    return list(experiment["generate_at"] or [experiment["steps"]])


def generated_sets(config: dict, gen_dir: Callable) -> Callable:
    """params function of the ``evaluate_generated`` rule (wildcards: exp): the experiment's generated set
    folders, one per seed x generate step; ``gen_dir(exp, seed, step)`` is the generate rules' folder."""

    def params(wildcards) -> list[str]:
        e = config["experiments"][wildcards.exp]
        return [gen_dir(wildcards.exp, seed, step) for seed in e["seeds"] for step in generate_steps(e)]

    return params


def report_audio(experiments: dict, gen_dir: Callable) -> list[str]:
    """``EXPERIMENT=folder`` of the clips the report pages show: each experiment's first seed at its last
    generate step."""
    return [f"{name}={gen_dir(name, e['seeds'][0], generate_steps(e)[-1])}" for name, e in experiments.items()]


def metric_models(config: dict) -> Callable:
    """params function of the ``evaluate_*`` rules (wildcards: metric): ``ROLE=receipt`` of each model of
    the metric, from the job's inputs (named by role, see rules/common.smk ``metric_inputs``)."""
    from ssmttm.eval.metrics import METRICS

    return lambda wildcards, input: [f"{role}={input[role]}" for role in METRICS[wildcards.metric].weights]


def pipeline_check(config: dict) -> Callable:
    """params function of the ``evaluate_*`` rules (wildcards: metric): ``"true"`` when a model of the metric
    is a random-init stand-in (``weights.models.<name>.random_init``: its rows are pipeline checks)."""
    from ssmttm.eval.metrics import METRICS

    roles, weights = config["evaluation"]["models"], config["weights"]["models"]

    def params(wildcards) -> str:
        return str(any(weights[roles[r]]["random_init"] for r in METRICS[wildcards.metric].weights)).lower()

    return params


def metric_embedders(config: dict) -> list[str]:
    """The metric models with a checkpoint that ``evaluation.metrics`` run, one ``embed_eval`` job each
    (wildcard ``embedder``)."""
    from ssmttm.eval.metrics import METRICS

    return sorted({METRICS[m].embedder for m in config["evaluation"]["metrics"] if METRICS[m].weights})


def embed_model_args(config: dict) -> Callable:
    """params function of the ``embed_eval`` rule: ``ROLE=receipt`` of each of its inputs' roles."""
    from ssmttm.eval.metrics import metric_for

    return lambda wildcards, input: [f"{role}={input[role]}" for role in metric_for(wildcards.embedder).weights]


def evaluate_settings(config: dict) -> Callable:
    """params function of the ``evaluate_*`` rules (wildcards: metric): the ``evaluation`` settings; the truth
    table and the KL epsilon only for the metrics that read them, so changing either reruns only those jobs."""
    from ssmttm.eval.metrics import METRICS
    from ssmttm.eval.options import EvaluateSettings

    ev = config["evaluation"]
    only = {"truth": "attributes", "kl_epsilon": "kl"}  # key -> the metric kind that reads it

    def params(wildcards) -> str:
        kind = METRICS[wildcards.metric].kind
        return settings_json(EvaluateSettings, {k: v for k, v in ev.items() if only.get(k, kind) == kind})

    return params


# --- listening tests ------------------------------------------------------------------------------------


def listening_settings(config: dict, cls_name: str = "ListeningSettings") -> Callable:
    """params function of the listening rules (wildcards: test): the test's section as ``--settings``, cut to
    ``cls_name``'s fields (``KitSettings`` for the kit, so an analysis setting does not rebuild it)."""
    from ssmttm.listen import options

    cls = getattr(options, cls_name)

    def params(wildcards) -> str:
        return settings_json(cls, config["listening"]["tests"][wildcards.test])

    return params
