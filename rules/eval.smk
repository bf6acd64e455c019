# Evaluation (docs/reference.md §3): reference clips of the prompt set, codec re-synthesis rows,
# then one job per (system, metric) so adding an experiment or a metric runs only its own jobs;
# embeddings are cached per file and model (results/eval/cache), shared by metrics of one model.
EVAL = config["evaluation"]
EVAL_DIR = f"{RESULTS}/eval"
SET = GEN["prompt_set"]
PROMPTS_JSON = f"{GEN_DIR}/prompts/{SET}.json"
REF_DIR = f"{EVAL_DIR}/reference/{SET}"
SCORES_DIR = f"{EVAL_DIR}/scores/{SET}"
RESYNTH = [f"resynth_k{k}" for k in EVAL["resynth_kappas"]]
SYSTEMS = list(EXPERIMENTS) + ["ground_truth"] + RESYNTH


wildcard_constraints:
    metric="|".join(EVAL["metrics"]),
    kappa=r"\d+",


def _weights_entry(role):
    return config["weights"]["models"][EVAL["models"][role]]


def _metric_roles(metric):
    from ssmttm.eval.metrics import METRICS

    return METRICS[metric].weights


def _metric_inputs(w):
    """Receipts of the metric's models (+ the truth table for attribute adherence)."""
    files = {role: weight_receipt(EVAL["models"][role]) for role in _metric_roles(w.metric)}
    if w.metric == "attributes":
        # the truth table ships with its source (the demo mirror's MIRROR.json is written last)
        files["truth_source"] = SRC["requires"]
    return files


def _metric_flags(w, input):
    roles = _metric_roles(w.metric)
    flags = [f"--model {role}={shlex.quote(str(input[role]))}" for role in roles]
    if w.metric == "attributes":
        flags.append(f"--truth {shlex.quote(str(EVAL['truth']))}")
    if any(_weights_entry(role).get("random_init") for role in roles):
        flags.append("--pipeline-check")  # random-init stand-ins: rows say "pipeline check, not a score"
    return " ".join(flags)


def _ref_flags():
    r = EVAL["reference"]
    if r["source"] == "musiccaps":
        return (f"--source musiccaps --url-template {shlex.quote(r['url_template'])} --retries {r['retries']} "
                f"--cache-dir {EVAL_DIR}/cache/youtube")
    return (f"--source jamendo --cleantags {meta('cleantags')} --audio-root {AUDIO_DIR} "
            f"--seconds {r['seconds']} --offset {r['offset']}")


rule reference_audio:
    input:
        prompts=PROMPTS_JSON,
        corpus=([meta("cleantags")] + [f"{AUDIO_DIR}/{s}.json" for s in SHARDS])
        if EVAL["reference"]["source"] == "jamendo" else [],
    output:
        index=f"{REF_DIR}/index.json",
        availability=f"{REF_DIR}/availability.tsv",
    log:
        f"{LOGS}/reference_audio.log",
    benchmark:
        f"{BENCH}/reference_audio.tsv"
    params:
        flags=lambda w: _ref_flags(),  # a function: the URL template holds {ytid}, not a wildcard
        min_available=EVAL["reference"]["min_available"],
        out_dir=REF_DIR,
    threads: 1
    resources:
        downloads=1,
        mem_mb=2000,
    conda:
        "../envs/eval.yaml"
    shell:
        "python -m ssmttm reference-audio --prompts {input.prompts:q} {params.flags} --min-available {params.min_available} --out-dir {params.out_dir:q} 2> {log:q}"


rule resynth:
    input:
        reference=rules.reference_audio.output.index,
        codec=weight_receipt(TOK["weights"]),
    output:
        f"{EVAL_DIR}/resynth/{SET}/k{{kappa}}/index.json",
    log:
        f"{LOGS}/resynth/k{{kappa}}.log",
    benchmark:
        f"{BENCH}/resynth/k{{kappa}}.tsv"
    params:
        ref_dir=REF_DIR,
        out_dir=lambda w: f"{EVAL_DIR}/resynth/{SET}/k{w.kappa}",
        codec=TOK["codec"],
        device=EVAL["device"],
    threads: 1
    resources:
        mem_mb=4000,
        gpu=device_gpus(EVAL["device"]),
    conda:
        "../envs/eval.yaml"
    shell:
        "python -m ssmttm resynth --reference {params.ref_dir:q} --codec {params.codec} --codec-weights {input.codec:q} --kappa {wildcards.kappa} --device {params.device} --out-dir {params.out_dir:q} 2> {log:q}"


def _generated_sets(exp):
    e = EXPERIMENTS[exp]
    return [gen_dir(exp, seed, step) for seed in e["seeds"] for step in (e["generate_at"] or [e["steps"]])]


EVAL_SHELL = (
    "python -m ssmttm evaluate --metric {wildcards.metric} {params.system} --reference {params.ref_dir:q} "
    "--prompts {input.prompts:q} {params.models} --bootstrap {params.bootstrap} --seed {params.seed} "
    "--device {params.device} --cache-dir {params.cache:q} --out {output:q} 2> {log:q}"
)
EVAL_PARAMS = dict(
    ref_dir=REF_DIR,
    models=_metric_flags,
    bootstrap=EVAL["bootstrap"],
    seed=EVAL["seed"],
    device=EVAL["device"],
    cache=f"{EVAL_DIR}/cache",
)


rule evaluate_generated:
    input:
        unpack(_metric_inputs),
        runs=lambda w: [f"{GEN_DIR}/{w.exp}/seed{seed}" for seed in EXPERIMENTS[w.exp]["seeds"]],
        reference=rules.reference_audio.output.index,
        prompts=PROMPTS_JSON,
    output:
        f"{SCORES_DIR}/{{exp}}/{{metric}}.json",
    log:
        f"{LOGS}/evaluate/{{exp}}_{{metric}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{exp}}_{{metric}}.tsv"
    params:
        system=lambda w: f"--system generated --experiment {w.exp} "
        + " ".join(f"--set {shlex.quote(d)}" for d in _generated_sets(w.exp)),
        **EVAL_PARAMS,
    threads: 1
    resources:
        mem_mb=4000,
        gpu=device_gpus(EVAL["device"]),
    conda:
        "../envs/eval.yaml"
    shell:
        EVAL_SHELL


rule evaluate_ground_truth:
    input:
        unpack(_metric_inputs),
        reference=rules.reference_audio.output.index,
        prompts=PROMPTS_JSON,
    output:
        f"{SCORES_DIR}/ground_truth/{{metric}}.json",
    log:
        f"{LOGS}/evaluate/ground_truth_{{metric}}.log",
    benchmark:
        f"{BENCH}/evaluate/ground_truth_{{metric}}.tsv"
    params:
        system="--system ground_truth",
        **EVAL_PARAMS,
    threads: 1
    resources:
        mem_mb=4000,
        gpu=device_gpus(EVAL["device"]),
    conda:
        "../envs/eval.yaml"
    shell:
        EVAL_SHELL


rule evaluate_resynth:
    input:
        unpack(_metric_inputs),
        resynth=f"{EVAL_DIR}/resynth/{SET}/k{{kappa}}/index.json",
        reference=rules.reference_audio.output.index,
        prompts=PROMPTS_JSON,
    output:
        f"{SCORES_DIR}/resynth_k{{kappa}}/{{metric}}.json",
    log:
        f"{LOGS}/evaluate/resynth_k{{kappa}}_{{metric}}.log",
    benchmark:
        f"{BENCH}/evaluate/resynth_k{{kappa}}_{{metric}}.tsv"
    params:
        system=lambda w: f"--system resynth --kappa {w.kappa} --set {EVAL_DIR}/resynth/{SET}/k{w.kappa}",
        **EVAL_PARAMS,
    threads: 1
    resources:
        mem_mb=4000,
        gpu=device_gpus(EVAL["device"]),
    conda:
        "../envs/eval.yaml"
    shell:
        EVAL_SHELL


SCORE_FILES = [f"{SCORES_DIR}/{system}/{metric}.json" for system in SYSTEMS for metric in EVAL["metrics"]]


rule evaluate_all:
    input:
        SCORE_FILES,
