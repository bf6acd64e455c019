# Evaluation (docs/reference.md §3): reference clips of the prompt set, codec re-synthesis rows,
# then one job per (system, metric) so adding an experiment or a metric runs only its own jobs;
# embeddings are cached per file and model (results/eval/cache), shared by metrics of one model, and
# filled by one embed_eval job per metric model, so each model is loaded once rather than once per score.
# Each stage gets its settings as one JSON object (--settings) from the config's evaluation section.
REF_DIR = f"{EVAL_DIR}/reference/{SET}"
JAMENDO_REFERENCE = EVAL["reference"]["source"] == "jamendo"


wildcard_constraints:
    metric="|".join(EVAL["metrics"]),
    kappa=r"\d+",


rule reference_audio:
    input:
        prompts=PROMPTS_JSON,
        # only the jamendo source reads these: it cuts the fetched tracks (--cleantags, --receipts)
        cleantags=[meta("cleantags")] if JAMENDO_REFERENCE else [],
        shards=[f"{AUDIO_DIR}/{s}.json" for s in SHARDS] if JAMENDO_REFERENCE else [],
    output:
        index=f"{REF_DIR}/index.json",
        availability=f"{REF_DIR}/availability.tsv",
    log:
        f"{LOGS}/reference_audio.log",
    benchmark:
        f"{BENCH}/reference_audio.tsv"
    params:
        settings=rule_params.stage_settings(config, "ssmttm.eval.options:ReferenceSettings", "evaluation.reference"),
        cleantags=optional_input("--cleantags", "cleantags"),
        cache_dir=f"{EVAL_DIR}/cache/youtube",
        out_dir=subpath(output.index, parent=True),
    threads: 1
    resources:
        downloads=1,
        mem_mb=2000,
    conda:
        "../envs/eval.yaml"
    shell:
        "python -m ssmttm reference-audio --prompts {input.prompts:q} --settings {params.settings:q} {params.cleantags:q} --receipts {input.shards:q} --cache-dir {params.cache_dir:q} --out-dir {params.out_dir:q} 2> {log:q}"


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
        settings=rule_params.stage_settings(config, "ssmttm.eval.options:ResynthSettings", "tokens", "evaluation"),
        ref_dir=subpath(input.reference, parent=True),
        out_dir=subpath(output[0], parent=True),
    threads: 1
    resources:
        mem_mb=4000,
        gpu=device_gpus(EVAL["device"]),
    conda:
        "../envs/eval.yaml"
    shell:
        "python -m ssmttm resynth --reference {params.ref_dir:q} --settings {params.settings:q} --codec-weights {input.codec:q} --kappa {wildcards.kappa} --out-dir {params.out_dir:q} 2> {log:q}"


# what the embed_eval jobs read: every generated set folder (experiments' seeds x steps, then the
# baselines) and every re-synthesis set
EMBED_SETS = [
    gen_dir(name, seed, step) for name, seed in RUNS for step in rule_params.generate_steps(EXPERIMENTS[name])
] + [os.path.dirname(system_set(name)) for name in BASELINES]
RESYNTH_INDEXES = expand(rules.resynth.output[0], kappa=EVAL["resynth_kappas"])


rule embed_eval:
    # one job per metric model: loads it once and embeds every clip (and prompt text) that the score jobs
    # below read into the per-file cache, so they import no model (ssmttm/eval/embed.py)
    input:
        unpack(embed_inputs),
        reference=rules.reference_audio.output.index,
        prompts=PROMPTS_JSON,
        runs=[f"{GEN_DIR}/{name}/seed{seed}" for name, seed in RUNS],
        resynth=RESYNTH_INDEXES,
        systems=[system_set(name) for name in BASELINES],
    output:
        f"{EMBED_DIR}/{{embedder}}.json",
    log:
        f"{LOGS}/evaluate/embed_{{embedder}}.log",
    benchmark:
        f"{BENCH}/evaluate/embed_{{embedder}}.tsv"
    wildcard_constraints:
        embedder="|".join(EMBEDDERS) or "(?!x)x",
    params:
        models=rule_params.embed_model_args(config),
        settings=rule_params.stage_settings(config, "ssmttm.eval.options:EmbedSettings", "evaluation"),
        sets=EMBED_SETS,
        resynth=[subpath(f, parent=True) for f in RESYNTH_INDEXES],
        ref_dir=subpath(input.reference, parent=True),
        cache=f"{EVAL_DIR}/cache",
    threads: 1
    resources:
        mem_mb=4000,
        gpu=device_gpus(EVAL["device"]),
    conda:
        "../envs/eval.yaml"
    shell:
        "python -m ssmttm evaluate-embed --embedder {wildcards.embedder} --model {params.models:q} --reference {params.ref_dir:q} --prompts {input.prompts:q} --set {params.sets:q} --resynth {params.resynth:q} --settings {params.settings:q} --cache-dir {params.cache:q} --out {output:q} 2> {log:q}"


# The params every evaluate_* job shares (its rule adds the system's and the reference folder).
EVAL_PARAMS = dict(
    settings=rule_params.evaluate_settings(config),
    models=rule_params.metric_models(config),
    pipeline_check=rule_params.pipeline_check(config),
    cache=f"{EVAL_DIR}/cache",
)


rule evaluate_generated:
    input:
        unpack(metric_inputs),
        runs=generated_runs,
        reference=rules.reference_audio.output.index,
        prompts=PROMPTS_JSON,
    output:
        f"{SCORES_DIR}/{{exp}}/{{metric}}.json",
    log:
        f"{LOGS}/evaluate/{{exp}}_{{metric}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{exp}}_{{metric}}.tsv"
    params:
        **EVAL_PARAMS,
        sets=rule_params.generated_sets(config, gen_dir),
        ref_dir=subpath(input.reference, parent=True),
    threads: 1
    resources:
        mem_mb=4000,
        gpu=device_gpus(EVAL["device"]),
    conda:
        "../envs/eval.yaml"
    shell:
        "python -m ssmttm evaluate --system generated --experiment {wildcards.exp} --set {params.sets:q} --metric {wildcards.metric} --reference {params.ref_dir:q} --prompts {input.prompts:q} --model {params.models:q} --pipeline-check {params.pipeline_check:q} --settings {params.settings:q} --cache-dir {params.cache:q} --out {output:q} 2> {log:q}"


rule evaluate_ground_truth:
    input:
        unpack(metric_inputs),
        reference=rules.reference_audio.output.index,
        prompts=PROMPTS_JSON,
    output:
        f"{SCORES_DIR}/ground_truth/{{metric}}.json",
    log:
        f"{LOGS}/evaluate/ground_truth_{{metric}}.log",
    benchmark:
        f"{BENCH}/evaluate/ground_truth_{{metric}}.tsv"
    params:
        **EVAL_PARAMS,
        ref_dir=subpath(input.reference, parent=True),
    threads: 1
    resources:
        mem_mb=4000,
        gpu=device_gpus(EVAL["device"]),
    conda:
        "../envs/eval.yaml"
    shell:
        "python -m ssmttm evaluate --system ground_truth --metric {wildcards.metric} --reference {params.ref_dir:q} --prompts {input.prompts:q} --model {params.models:q} --pipeline-check {params.pipeline_check:q} --settings {params.settings:q} --cache-dir {params.cache:q} --out {output:q} 2> {log:q}"


rule evaluate_resynth:
    input:
        unpack(metric_inputs),
        resynth=rules.resynth.output[0],
        reference=rules.reference_audio.output.index,
        prompts=PROMPTS_JSON,
    output:
        f"{SCORES_DIR}/resynth_k{{kappa}}/{{metric}}.json",
    log:
        f"{LOGS}/evaluate/resynth_k{{kappa}}_{{metric}}.log",
    benchmark:
        f"{BENCH}/evaluate/resynth_k{{kappa}}_{{metric}}.tsv"
    params:
        **EVAL_PARAMS,
        set=subpath(input.resynth, parent=True),
        ref_dir=subpath(input.reference, parent=True),
    threads: 1
    resources:
        mem_mb=4000,
        gpu=device_gpus(EVAL["device"]),
    conda:
        "../envs/eval.yaml"
    shell:
        "python -m ssmttm evaluate --system resynth --kappa {wildcards.kappa} --set {params.set:q} --metric {wildcards.metric} --reference {params.ref_dir:q} --prompts {input.prompts:q} --model {params.models:q} --pipeline-check {params.pipeline_check:q} --settings {params.settings:q} --cache-dir {params.cache:q} --out {output:q} 2> {log:q}"


rule evaluate_system:
    # a baseline (config systems) in generate's layout: scored exactly like an experiment's clips
    input:
        unpack(metric_inputs),
        set=system_set_input,
        reference=rules.reference_audio.output.index,
        prompts=PROMPTS_JSON,
    output:
        f"{SCORES_DIR}/{{system}}/{{metric}}.json",
    log:
        f"{LOGS}/evaluate/{{system}}_{{metric}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{system}}_{{metric}}.tsv"
    params:
        **EVAL_PARAMS,
        kind=system_kind,
        set=subpath(input.set, parent=True),
        ref_dir=subpath(input.reference, parent=True),
    threads: 1
    resources:
        mem_mb=4000,
        gpu=device_gpus(EVAL["device"]),
    conda:
        "../envs/eval.yaml"
    shell:
        "python -m ssmttm evaluate --system {params.kind:q} --experiment {wildcards.system:q} --set {params.set:q} --metric {wildcards.metric} --reference {params.ref_dir:q} --prompts {input.prompts:q} --model {params.models:q} --pipeline-check {params.pipeline_check:q} --settings {params.settings:q} --cache-dir {params.cache:q} --out {output:q} 2> {log:q}"


SCORE_FILES = [f"{SCORES_DIR}/{system}/{metric}.json" for system in SYSTEMS for metric in EVAL["metrics"]]


rule evaluate_all:
    input:
        SCORE_FILES,
