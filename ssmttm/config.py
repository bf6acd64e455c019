"""Configuration: schema validation with errors that name the key, defaults, and small helpers.

The Snakefile calls :func:`validate` when it loads, so a wrong value fails before any job runs.
This module imports no heavy library (Snakemake imports it at DAG-build time).
"""

from __future__ import annotations

import copy
import os
from typing import Any, Iterable

import yaml

from ssmttm.constants import LICENCE_PRESETS
from ssmttm.schema import NAME_PATTERN, SCHEMA_PATH, ConfigError, load_schema  # noqa: F401  (re-exported)

def _key(path: Iterable[Any]) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "<top level>"


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    if ref and ref.startswith("#/$defs/"):
        return root["$defs"][ref.split("/")[-1]]
    return schema


def _fill_defaults(instance: Any, schema: dict, root: dict) -> None:
    """Insert schema defaults for absent keys, recursively (jsonschema only validates)."""
    schema = _resolve(schema, root)
    if not isinstance(instance, dict):
        return
    props = schema.get("properties", {})
    for name, sub in props.items():
        sub_r = _resolve(sub, root)
        if name not in instance:
            if "default" in sub:
                instance[name] = copy.deepcopy(sub["default"])
            elif "default" in sub_r:
                instance[name] = copy.deepcopy(sub_r["default"])
            elif sub_r.get("type") == "object" and not sub_r.get("required"):
                instance[name] = {}
        if name in instance:
            _fill_defaults(instance[name], sub_r, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for name, value in instance.items():
            if name not in props:
                _fill_defaults(value, extra, root)


def _semantic_errors(cfg: dict) -> list[str]:
    errors = []
    models = cfg.get("weights", {}).get("models", {})
    if cfg["vocals"]["mode"] == "separate" and cfg["vocals"]["model"] not in models:
        errors.append(
            f"config key vocals.model: {cfg['vocals']['model']!r} is not a key of weights.models "
            f"(known: {sorted(models)})"
        )
    if cfg["captions"]["captioner"] == "qwen2-audio":
        q = cfg["captions"]["qwen2_audio"]
        for key in ("model", "rephrase_model"):
            if q.get(key) is not None and q[key] not in models:
                errors.append(
                    f"config key captions.qwen2_audio.{key}: {q[key]!r} is not a key of weights.models "
                    f"(known: {sorted(models)})"
                )
    for key in ("tokens.weights", "text.encoder"):
        section, field = key.split(".")
        if cfg[section][field] not in models:
            errors.append(
                f"config key {key}: {cfg[section][field]!r} is not a key of weights.models (known: {sorted(models)})"
            )
    train_keys = set(cfg["train"])
    for name, exp in cfg["experiments"].items():
        bad = sorted(set(exp["train"]) - train_keys)
        if bad:
            errors.append(f"config key experiments.{name}.train: unknown keys {bad} (allowed: train section keys)")
        fields = _lm_fields()
        bad = sorted(set(exp["model"]) - fields)
        if bad:
            errors.append(f"config key experiments.{name}.model: unknown LMConfig fields {bad}")
        reachable = set(exp["checkpoints"]) | {exp["steps"]}
        for step in exp["generate_at"]:
            if step not in reachable:
                errors.append(f"config key experiments.{name}.generate_at: step {step} is not a checkpoint "
                              f"(checkpoints: {sorted(reachable)})")
        for step in exp["checkpoints"]:
            if step > exp["steps"]:
                errors.append(f"config key experiments.{name}.checkpoints: step {step} > steps {exp['steps']}")
    errors += _source_errors(cfg)
    errors += _demo_mirror_errors(cfg)
    errors += _refiner_errors(cfg, models, train_keys)
    errors += _evaluation_errors(cfg, models)
    errors += _system_errors(cfg, models)
    errors += _import_errors(cfg, models)
    errors += _listening_errors(cfg)
    if cfg["licenses"]["preset"] == "custom" and not cfg["licenses"].get("allow"):
        errors.append("config key licenses.allow: must list at least one licence when licenses.preset is custom")
    return errors


def listening_systems(cfg: dict) -> dict[str, str]:
    """Every name a listening test may rate -> its kind: an enabled experiment (``experiment``), an enabled
    config system (``system``), ``ground_truth`` (the reference clips) or ``resynth_k<k>`` (``resynth``)."""
    names = {n: "experiment" for n, e in cfg["experiments"].items() if e["enabled"]}
    names.update({n: "system" for n, s in cfg["systems"].items() if s["enabled"]})
    names["ground_truth"] = "ground_truth"
    names.update({f"resynth_k{k}": "resynth" for k in cfg["evaluation"]["resynth_kappas"]})
    return names


def _listening_errors(cfg: dict) -> list[str]:
    """A listening test rates known systems, asks questions its attention check can refer to, and reads
    its ratings from a folder when the source is files."""
    errors = []
    known = listening_systems(cfg)
    for name, t in cfg["listening"]["tests"].items():
        if not t["enabled"]:
            continue
        key = f"listening.tests.{name}"
        for system in t["systems"]:
            if system not in known:
                errors.append(f"config key {key}.systems: {system!r} is not an enabled experiment, an enabled "
                              f"config system, ground_truth or a resynth_k<kappa> of evaluation.resynth_kappas "
                              f"(known: {sorted(known)})")
        qids = [q["id"] for q in t["questions"]]
        if len(set(qids)) != len(qids):
            errors.append(f"config key {key}.questions: duplicate ids {qids}")
        for q in t["questions"]:
            lo, hi = q.get("min", 1), q.get("max", 5)
            if hi <= lo:
                errors.append(f"config key {key}.questions ({q['id']}): max {hi} must exceed min {lo}")
            elif q.get("labels") and len(q["labels"]) != hi - lo + 1:
                errors.append(f"config key {key}.questions ({q['id']}): {len(q['labels'])} labels for the "
                              f"{hi - lo + 1} scores {lo}..{hi}")
        att = t["attention"]
        if att["count"] and att["question"] not in qids:
            errors.append(f"config key {key}.attention.question: {att['question']!r} is not one of the "
                          f"questions {qids}")
        if t["ratings"]["source"] == "files" and not t["ratings"]["dir"]:
            errors.append(f"config key {key}.ratings.dir: required when ratings.source is files")
    return errors


def _demo_mirror_errors(cfg: dict) -> list[str]:
    """The demo corpus's good tracks must be long enough for the clips the config cuts from them."""
    demo = cfg.get("demo_mirror", {})
    if "seconds" not in demo:
        return []
    lo, hi = demo["seconds"]
    if lo > hi:
        return [f"config key demo_mirror.seconds: shortest {lo:g} s > longest {hi:g} s"]
    need = max(cfg["segment"]["clip_seconds"], cfg["filter"]["min_seconds"])
    if cfg["source"].get("base_url") == demo.get("out_dir") and lo < need:
        return [f"config key demo_mirror.seconds: the shortest good track ({lo:g} s) is shorter than "
                f"segment.clip_seconds / filter.min_seconds ({need:g} s): good tracks would be rejected as too short"]
    return []


def _source_errors(cfg: dict) -> list[str]:
    """The dataset source (source.kind) must exist, find every metadata file it reads, and hold the shards."""
    from ssmttm.data.sources import OPERATIONS, get_source  # a registry of names: the source module is light

    try:
        source = get_source(cfg["source"]["kind"])
    except ConfigError as exc:  # the schema's enum and the registry disagree
        return [str(exc)]
    errors = [f"config key source.metadata.{key}: required by source.kind {source.name} (its file "
              f"{source.metadata[key]})" for key in source.keys_for(*OPERATIONS) if key not in cfg["source"]["metadata"]]
    if cfg["shards"] > source.n_shards:
        errors.append(f"config key shards: {cfg['shards']} is more than source.kind {source.name} has "
                      f"({source.n_shards})")
    return errors


def _evaluation_errors(cfg: dict, models: dict) -> list[str]:
    """Prompt source, metric models and studies must name things that exist (and will run)."""
    from ssmttm.eval.metrics import METRICS  # a dict of names: no heavy import

    errors = []
    src = cfg["generate"].get("prompts_source")
    if src is not None and src not in cfg["source"]["metadata"]:
        errors.append(f"config key generate.prompts_source: {src!r} is not a key of source.metadata "
                      f"(known: {sorted(cfg['source']['metadata'])})")
    from ssmttm.generate.prompts import PROMPT_SETS, set_options

    gen = cfg["generate"]
    if gen["prompt_set"] not in PROMPT_SETS:
        errors.append(f"config key generate.prompt_set: {gen['prompt_set']!r} is not a prompt set "
                      f"(known: {sorted(PROMPT_SETS)})")
    for name, opts in gen.get("prompt_options", {}).items():
        if name not in PROMPT_SETS:
            errors.append(f"config key generate.prompt_options.{name}: not a prompt set (known: {sorted(PROMPT_SETS)})")
            continue
        bad = sorted(set(opts) - set(set_options(name)))
        if bad:
            errors.append(f"config key generate.prompt_options.{name}: unknown options {bad} "
                          f"(known: {set_options(name)})")
    ev = cfg["evaluation"]
    for metric in ev["metrics"]:
        for role in METRICS[metric].weights:
            entry = ev["models"].get(role)
            if entry not in models:
                errors.append(f"config key evaluation.models.{role}: {entry!r} (needed by metric {metric}) is not "
                              f"a key of weights.models (known: {sorted(models)})")
    if "attributes" in ev["metrics"] and not ev.get("truth"):
        errors.append("config key evaluation.truth: metric 'attributes' needs a truth table (track_id, bpm, key, "
                      "mode, drums)")
    enabled = {n for n, e in cfg["experiments"].items() if e.get("enabled", True)}
    for name, study in cfg.get("studies", {}).items():
        for exp in study["experiments"]:
            if exp not in cfg["experiments"]:
                errors.append(f"config key studies.{name}.experiments: {exp!r} is not an experiment "
                              f"(known: {sorted(cfg['experiments'])})")
            elif exp not in enabled:
                errors.append(f"config key studies.{name}.experiments: experiment {exp!r} has enabled: false")
    return errors


def _import_errors(cfg: dict, models: dict) -> list[str]:
    """Imported experiments: weights entries that exist, the format's variant, one seed, nothing to train."""
    errors = []
    variants = {"ssm-ttm": "prefix-simba"}  # the authors released Prefix SiMBA only
    for name, exp in cfg["experiments"].items():
        imp = exp.get("import")
        if not imp:
            continue
        key = f"config key experiments.{name}.import"
        for field in ("checkpoint", "config"):
            if imp[field] not in models:
                errors.append(f"{key}.{field}: {imp[field]!r} is not a key of weights.models (known: {sorted(models)})")
        if exp["variant"] != variants[imp["format"]]:
            errors.append(f"config key experiments.{name}.variant: format {imp['format']} holds a "
                          f"{variants[imp['format']]} model, not {exp['variant']}")
        if len(exp["seeds"]) != 1:
            errors.append(f"config key experiments.{name}.seeds: an imported checkpoint is one run; give one seed")
        if set(exp["generate_at"]) - {exp["steps"]}:
            errors.append(f"config key experiments.{name}.generate_at: an imported checkpoint has one step "
                          f"(its folder is ckpt/step_<steps>, steps {exp['steps']})")
        if exp.get("refiner") is not None:
            errors.append(f"config key experiments.{name}.refiner: not supported with import (its kappa-1 codes "
                          "would need a refiner trained on the same codec; generate it single-stage)")
    claims = cfg["evaluation"].get("claims_experiment")
    if claims in cfg["experiments"] and cfg["experiments"][claims].get("import"):
        errors.append(f"config key evaluation.claims_experiment: {claims!r} is imported; the claims need a run's "
                      "training logs")
    return errors


def _system_errors(cfg: dict, models: dict) -> list[str]:
    """Baseline systems: the key their kind needs, and a name no experiment or reference row uses."""
    errors = []
    taken = set(cfg["experiments"]) | {"ground_truth"} | {f"resynth_k{k}" for k in cfg["evaluation"]["resynth_kappas"]}
    for name, sys_ in cfg.get("systems", {}).items():
        key = f"config key systems.{name}"
        if name in taken:
            errors.append(f"{key}: the name is taken by an experiment or a reference row; scores would collide")
        if sys_["kind"] == "musicgen" and sys_.get("weights") not in models:
            errors.append(f"{key}.weights: {sys_.get('weights')!r} is not a key of weights.models "
                          f"(known: {sorted(models)})")
        if sys_["kind"] == "external" and not sys_.get("dir"):
            errors.append(f"{key}.dir: an external system needs the folder of its clips")
    return errors


def _refiner_errors(cfg: dict, models: dict, train_keys: set) -> list[str]:
    """Refiners and the experiments that use them must fit together (two-stage system)."""
    import dataclasses

    from ssmttm.refiner.config import RefinerConfig  # dataclasses only: no torch import

    errors = []
    fields = {f.name for f in dataclasses.fields(RefinerConfig)}
    refiners = cfg.get("refiners", {})
    for name, r in refiners.items():
        if r["backend"] == "discodiff" and not r.get("checkpoint"):
            errors.append(f"config key refiners.{name}.checkpoint: the discodiff backend needs the path of your "
                          "DiscoDiff checkpoint (its weights were never released; nothing is downloaded)")
        bad = sorted(set(r["model"]) - fields)
        if bad:
            errors.append(f"config key refiners.{name}.model: unknown RefinerConfig fields {bad}")
        bad = sorted(set(r["train"]) - train_keys)
        if bad:
            errors.append(f"config key refiners.{name}.train: unknown keys {bad} (allowed: train section keys)")
    for name, exp in cfg["experiments"].items():
        ref = exp.get("refiner")
        if ref is None or not exp.get("enabled", True):
            continue
        if ref not in refiners:
            errors.append(f"config key experiments.{name}.refiner: {ref!r} is not a key of refiners "
                          f"(known: {sorted(refiners)})")
        elif not refiners[ref]["enabled"]:
            errors.append(f"config key experiments.{name}.refiner: refiner {ref!r} has enabled: false")
        elif refiners[ref]["kappa"] != exp["kappa"]:
            errors.append(f"config key experiments.{name}.refiner: refiner {ref!r} completes kappa="
                          f"{refiners[ref]['kappa']} codebooks, the experiment models kappa={exp['kappa']}")
    for name, study in cfg.get("studies", {}).items():
        step = study.get("step")
        for exp in study["experiments"] if step is not None else []:
            e = cfg["experiments"].get(exp)
            if e is not None and step not in (e["generate_at"] or [e["steps"]]):
                errors.append(f"config key studies.{name}.step: experiment {exp!r} does not generate at step {step} "
                              f"(generate_at: {e['generate_at'] or [e['steps']]})")
    return errors


def _lm_fields() -> set[str]:
    import dataclasses

    from ssmttm.models.config import LMConfig  # dataclasses only: no torch import

    return {f.name for f in dataclasses.fields(LMConfig)}


def validate(config: dict, schema_path: str | os.PathLike = SCHEMA_PATH) -> dict:
    """Validate ``config`` in place (defaults filled) and return it; raise ConfigError naming keys."""
    import jsonschema

    schema = load_schema(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors:
            if e.validator == "additionalProperties" and isinstance(e.instance, dict):
                allowed = sorted(e.schema.get("properties", {}))
                for extra in sorted(set(e.instance) - set(allowed)):
                    key = _key([*e.absolute_path, extra])
                    lines.append(f"config key {key}: unknown key (allowed here: {', '.join(allowed)})")
            elif "propertyNames" in e.relative_schema_path:
                lines.append(f"config key {_key([*e.absolute_path, e.instance])}: {e.instance!r} is not a safe name "
                             f"(it becomes a folder and a wildcard): use letters, digits, '_', '.', '-', starting "
                             f"with a letter or digit, pattern {NAME_PATTERN}")
            else:
                lines.append(f"config key {_key(e.absolute_path)}: {e.message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    _fill_defaults(config, schema, schema)
    sem = _semantic_errors(config)
    if sem:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(sem))
    return config


def deep_update(base: dict, override: dict) -> dict:
    """Recursive dict update, as Snakemake merges --configfile over the Snakefile's configfile."""
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_update(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def load(*paths: str | os.PathLike) -> dict:
    """Load and merge YAML config files (later override earlier), then validate."""
    cfg: dict = {}
    for p in paths:
        with open(p, encoding="utf-8") as f:
            deep_update(cfg, yaml.safe_load(f) or {})
    return validate(cfg)


def shard_ids(config: dict) -> list[str]:
    """Two-digit shard ids "00".."NN"; shard NN is MTG-Jamendo tar raw_30s_audio-NN.tar."""
    return [f"{i:02d}" for i in range(int(config["shards"]))]


def allowed_licences(config: dict) -> tuple[str, ...]:
    lic = config["licenses"]
    if lic["preset"] == "custom":
        return tuple(lic["allow"])
    return LICENCE_PRESETS[lic["preset"]]
