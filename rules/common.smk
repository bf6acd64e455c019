# Shared wiring: the paths every stage's rules agree on, views of the validated config, and the input
# and params functions that connect config to rules. Everything a rule file uses from another stage is
# defined here, so no rule file depends on the order of the includes.
import os
import re

from ssmttm import rule_params
from ssmttm.config import listening_systems, shard_ids
from ssmttm.data.sources import get_source, metadata_files

SHARDS = shard_ids(config)
RESULTS = "results"
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
WEIGHTS_DIR = config["weights"]["dir"]

# data: the dataset source (source.kind) names its metadata files and which ones each stage reads
SOURCE = get_source(config["source"]["kind"])
METADATA_FILES = metadata_files(SOURCE.name)
META_DIR = f"{RESULTS}/data/source/metadata"
AUDIO_DIR = f"{RESULTS}/data/source/audio"
LICENSE_DIR = f"{RESULTS}/licenses"
CLIPS_DIR = f"{RESULTS}/data/clips"
NOVOCALS_DIR = f"{RESULTS}/data/novocals"
CAPTIONS_DIR = f"{RESULTS}/data/captions"

# tokens and text states: what a reader of the token store opens is every file of exactly these
# shard folders (never a glob)
TOK = config["tokens"]
TXT = config["text"]
TEXT_DIR = f"{RESULTS}/text/{TXT['encoder']}"
TOKENS_DIR = f"{RESULTS}/tokens/{TOK['weights']}"
TEXT_OUTPUTS = ["embeddings.npy", "index.parquet", "clips.parquet", "meta.json"]
TOKEN_OUTPUTS = ["codes.npy", "index.parquet", "meta.json", "rejected.tsv"]
TOKEN_SHARD_DIRS = [f"{TOKENS_DIR}/{shard}" for shard in SHARDS]
TOKEN_SHARD_FILES = expand(f"{TOKENS_DIR}/{{shard}}/{{name}}", shard=SHARDS, name=TOKEN_OUTPUTS)

# training, the refiner, generation
TRAIN = config["train"]
TRAIN_DIR = f"{RESULTS}/train"
EXPERIMENTS = {name: exp for name, exp in config["experiments"].items() if exp["enabled"]}
RUNS = [(name, seed) for name, exp in EXPERIMENTS.items() for seed in exp["seeds"]]
# experiments.<name>.import: a converted checkpoint instead of training (rule import_checkpoint); the
# run folder looks like a trained run's, without the training logs the loss plots read
IMPORTED = [name for name, exp in EXPERIMENTS.items() if exp["import"]]
TRAINED_RUNS = [(name, seed) for name, seed in RUNS if name not in IMPORTED]
REFINERS = {name: r for name, r in config["refiners"].items() if r["enabled"]}
REFINER_DIR = f"{RESULTS}/refiner"
TRAINED_REFINERS = [name for name, r in REFINERS.items() if r["backend"] == "ssmttm"]
GEN = config["generate"]
GEN_DIR = f"{RESULTS}/generate"

# evaluation
EVAL = config["evaluation"]
EVAL_DIR = f"{RESULTS}/eval"
SET = GEN["prompt_set"]
PROMPTS_JSON = f"{GEN_DIR}/prompts/{SET}.json"
SCORES_DIR = f"{EVAL_DIR}/scores/{SET}"
RESYNTH = [f"resynth_k{k}" for k in EVAL["resynth_kappas"]]
# baselines (config systems): MusicGen generated here, or a folder of another model's clips; both
# land in generate's folder layout and are scored by the same jobs as the experiments
BASELINES = {name: s for name, s in config["systems"].items() if s["enabled"]}
SYSTEMS_DIR = f"{GEN_DIR}/systems"
SYSTEMS = list(EXPERIMENTS) + ["ground_truth"] + RESYNTH + list(BASELINES)
# one embed_eval job per metric model with a checkpoint that a configured metric runs (ssmttm.eval.embed)
EMBED_DIR = f"{EVAL_DIR}/embeddings/{SET}"
EMBEDDERS = rule_params.metric_embedders(config)


wildcard_constraints:
    shard=r"\d{2}",
    system="|".join(re.escape(name) for name in BASELINES) or "(?!x)x",
    name=r"[A-Za-z0-9_.-]+",
    metafile="|".join(re.escape(f) for f in METADATA_FILES.values()),


def meta(key):
    """Local path of a fetched metadata file, by its config key (source.metadata.<key>)."""
    return f"{META_DIR}/{METADATA_FILES[key]}"


def source_files(*operations):
    """{key: path} of the metadata files the source reads for ``operations`` (rule inputs)."""
    return {key: meta(key) for key in SOURCE.keys_for(*operations)}


def source_args(*operations):
    """The same files as ``--metadata`` values, ``<key>=<path>`` (quote with :q)."""
    return [f"{key}={path}" for key, path in source_files(*operations).items()]


def weight_receipt(name):
    return f"{WEIGHTS_DIR}/{name}.json"


def device_gpus(device):
    """Scheduling resource: a job that may use CUDA takes one `gpu` (map it with --resources gpu=N)."""
    return 0 if device == "cpu" else 1


def run_dir(exp, seed):
    """Folder of one training run (experiment x seed)."""
    return f"{TRAIN_DIR}/{exp}/seed{seed}"


def experiment_gpus(wildcards):
    """`gpu` resource of a train job: its experiment's device (train section or its override)."""
    exp = config["experiments"][wildcards.exp]
    return device_gpus(exp["train"].get("device", config["train"]["device"]))


def refiner_gpus(wildcards):
    """`gpu` resource of a train_refiner job."""
    refiner = config["refiners"][wildcards.refiner]
    return device_gpus(refiner["train"].get("device", config["train"]["device"]))


# training, refiner, generation
def refiner_done(name):
    """done.json of a trained refiner run."""
    return f"{REFINER_DIR}/{name}/done.json"


def refiner_input(wildcards):
    """What a generate job needs from its experiment's refiner: the trained run's done.json, a user's
    DiscoDiff checkpoint, or nothing (single-stage)."""
    name = config["experiments"][wildcards.exp]["refiner"]
    if name is None:
        return []
    r = config["refiners"][name]
    return [refiner_done(name)] if r["backend"] == "ssmttm" else [r["checkpoint"]]


def refiner_args(wildcards, input):
    """`generate` arguments of the experiment's second stage: ["--refiner", path] or nothing."""
    return ["--refiner", input.refiner[0]] if input.refiner else []


def gen_text_input(wildcards):
    """The prompts' text of a generate job: the prompt_embed states, or for an imported checkpoint (whose
    LM may keep padded T5 states, ssmttm.generate.compat) the T5 encoder itself."""
    if wildcards.exp in IMPORTED:
        return weight_receipt(TXT["encoder"])
    return f"{GEN_DIR}/prompts/{SET}.states"


def gen_text_args(wildcards, input):
    """`generate` arguments naming gen_text_input's path."""
    return ["--text-encoder" if wildcards.exp in IMPORTED else "--text-states", input.text]


def gen_dir(exp, seed, step):
    return f"{GEN_DIR}/{exp}/seed{seed}/step_{int(step):07d}/{SET}"


def gen_points(wildcards):
    """`generate` arguments: one --checkpoint/--out-dir pair per sampled step of the run."""
    args = []
    for step in rule_params.generate_steps(config["experiments"][wildcards.exp]):
        args += [
            "--checkpoint",
            f"{run_dir(wildcards.exp, wildcards.seed)}/ckpt/step_{int(step):07d}",
            "--out-dir",
            gen_dir(wildcards.exp, wildcards.seed, step),
        ]
    return args


def imported_weight(field):
    """Input function: the weights receipt of an imported experiment's checkpoint or config file."""

    def receipt(wildcards):
        return weight_receipt(config["experiments"][wildcards.exp]["import"][field])

    return receipt


def imported_format(wildcards):
    return config["experiments"][wildcards.exp]["import"]["format"]


def imported_ckpt_dir(wildcards):
    """The checkpoint folder generate samples: ckpt/step_<steps> of the run."""
    steps = config["experiments"][wildcards.exp]["steps"]
    return f"{run_dir(wildcards.exp, wildcards.seed)}/ckpt/step_{int(steps):07d}"


def system_set(name):
    """index.json of a baseline system's set folder (generate's layout)."""
    return f"{SYSTEMS_DIR}/{BASELINES[name]['kind']}/{name}/{SET}/index.json"


def system_set_input(wildcards):
    return system_set(wildcards.system)


def system_kind(wildcards):
    """`evaluate --system` of a baseline: musicgen | external."""
    return BASELINES[wildcards.system]["kind"]


def musicgen_weights(wildcards):
    """The weights receipt of a musicgen system's model folder."""
    return weight_receipt(BASELINES[wildcards.system]["weights"])


def external_inputs(wildcards):
    """An external system's prompt_id -> file table (if given) and the files its folder waits for. The
    folder itself is a param: a change inside it needs `--forcerun external_system`."""
    s = BASELINES[wildcards.system]
    return {"files": [s["files"]] if s["files"] else [], "requires": s["requires"]}


def external_dir(wildcards):
    return BASELINES[wildcards.system]["dir"]


def prompt_source(wildcards):
    """The metadata file the prompt set reads (generate.prompts_source), if any."""
    src = config["generate"]["prompts_source"]
    return [meta(src)] if src else []


def prompt_source_args(wildcards, input):
    return ["--prompts-file", input[0]] if input else []


# evaluation, plots, report
def metric_inputs(wildcards):
    """Input function of the evaluate_* rules: the receipts of the metric's models, named by role, and for
    attribute adherence the truth table's source (the demo mirror's MIRROR.json is written last)."""
    from ssmttm.eval.metrics import METRICS

    metric = METRICS[wildcards.metric]
    files = {role: weight_receipt(config["evaluation"]["models"][role]) for role in metric.weights}
    if metric.weights:
        # ancient: the score waits for its model's embed_eval job (so it finds its clips cached and
        # loads no model) but is not rerun when that job reruns for another system's new clips
        files["embeddings"] = ancient(f"{EMBED_DIR}/{metric.embedder}.json")
    if metric.kind == "attributes":
        files["truth_source"] = config["source"]["requires"]
    return files


def embed_inputs(wildcards):
    """Input function of the embed_eval rule: the receipts of the metric model's roles, by role."""
    from ssmttm.eval.metrics import metric_for

    roles = config["evaluation"]["models"]
    return {role: weight_receipt(roles[role]) for role in metric_for(wildcards.embedder).weights}


def generated_runs(wildcards):
    """Input function of evaluate_generated: the experiment's generate outputs, one folder per seed."""
    return [f"{GEN_DIR}/{wildcards.exp}/seed{seed}" for seed in config["experiments"][wildcards.exp]["seeds"]]


def optional_input(flag, name):
    """params function: [flag, path] when the rule's input `name` is declared for this config, else nothing."""

    def args(wildcards, input):
        files = list(getattr(input, name))
        return [flag, *files] if files else []

    return args


# listening tests (rules/listening.smk)
LISTEN_DIR = f"{RESULTS}/listening"
LISTEN_TESTS = {name: t for name, t in config["listening"]["tests"].items() if t["enabled"]}


def listening_set(system):
    """(what the kit job waits for, the set's index.json) of a system a listening test rates, e.g. an experiment's
    first seed at its last generated step, a config system, the reference clips or a re-synthesis set."""
    kind = listening_systems(config)[system]
    if kind == "experiment":
        e = EXPERIMENTS[system]
        seed, step = e["seeds"][0], max(rule_params.generate_steps(e))
        return f"{GEN_DIR}/{system}/seed{seed}", f"{gen_dir(system, seed, step)}/index.json"
    if kind == "system":
        return system_set(system), system_set(system)
    if kind == "ground_truth":
        return f"{EVAL_DIR}/reference/{SET}/index.json", f"{EVAL_DIR}/reference/{SET}/index.json"
    index = f"{EVAL_DIR}/resynth/{SET}/k{system[len('resynth_k'):]}/index.json"
    return index, index


def listening_kit_inputs(wildcards):
    """Input function of listening_kit: each rated system's generate run folder or set index, by system."""
    return {system: listening_set(system)[0] for system in LISTEN_TESTS[wildcards.test]["systems"]}


def listening_system_args(wildcards):
    """`listening-kit --system` values: <system>=<its set's index.json>."""
    return [f"{system}={listening_set(system)[1]}" for system in LISTEN_TESTS[wildcards.test]["systems"]]


def listening_scripted_raters(wildcards):
    return LISTEN_TESTS[wildcards.test]["ratings"]["scripted_raters"]


def listening_seed(wildcards):
    return LISTEN_TESTS[wildcards.test]["seed"]


def listening_ratings(test):
    """What listening_results reads for ``test``: the scripted raters' database, the rating app's database,
    or every ratings JSON file in ratings.dir (listed when the DAG is built: add files, rerun)."""
    r = LISTEN_TESTS[test]["ratings"]
    if r["source"] == "scripted":
        return {"db": f"{LISTEN_DIR}/{test}/scripted.sqlite"}
    if r["source"] == "server":
        return {"db": f"{LISTEN_DIR}/{test}/ratings.sqlite"}
    folder = r["dir"]
    return {
        "json": (
            sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".json"))
            if os.path.isdir(folder)
            else []
        )
    }


def listening_ready(test):
    """True when ``test`` has ratings to analyse: scripted (made by a rule), or a database / ratings files
    that people's ratings have filled (until then the `listening` target builds the kit only)."""
    ratings = listening_ratings(test)
    if LISTEN_TESTS[test]["ratings"]["source"] == "scripted":
        return True
    return bool(ratings.get("json")) or ("db" in ratings and os.path.isfile(ratings["db"]))


def listening_ratings_input(wildcards):
    ratings = listening_ratings(wildcards.test)
    return ratings.get("json") or [ratings["db"]]


def listening_ratings_args(wildcards, input):
    """`listening-results` arguments naming the ratings: --db <file> or --ratings-json <files>."""
    if LISTEN_TESTS[wildcards.test]["ratings"]["source"] == "files":
        return ["--ratings-json", *input.ratings]
    return ["--db", *input.ratings]
