# Sample each experiment's chosen checkpoints (experiments.<name>.generate_at, default the final
# step) on the configured prompt set, decode with the codec and write 44.1 kHz audio + sidecars. An
# experiment with `refiner: <name>` is the two-stage system: its codes are completed by the refiner first.
# Baselines (config systems) get the same prompt set: MusicGen generated with the generate section's
# length, CFG scale and sampling, or a folder of another model's clips gathered into the same layout.


rule prompt_set:
    input:
        prompt_source,
    output:
        f"{GEN_DIR}/prompts/{GEN['prompt_set']}.json",
    log:
        f"{LOGS}/prompt_set.log",
    benchmark:
        f"{BENCH}/prompt_set.tsv"
    params:
        settings=rule_params.section_settings(config, "ssmttm.generate.options:PromptSetSettings", "generate"),
        source=prompt_source_args,
    threads: 1
    resources:
        mem_mb=500,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm prompt-set --settings {params.settings:q} {params.source:q} --out {output:q} 2> {log:q}"


rule prompt_embed:
    # The prompt set's T5 states, encoded once: every generate job reads them instead of loading T5.
    input:
        prompts=rules.prompt_set.output,
        text=weight_receipt(TXT["encoder"]),
    output:
        directory(f"{GEN_DIR}/prompts/{SET}.states"),
    log:
        f"{LOGS}/prompt_embed.log",
    benchmark:
        f"{BENCH}/prompt_embed.tsv"
    params:
        prompt_set=SET,
        max_length=TXT["max_length"],
        device=GEN["device"],
    threads: 1
    resources:
        mem_mb=4000,
        gpu=device_gpus(GEN["device"]),
    conda:
        "../envs/train.yaml"
    shell:
        "python -m ssmttm prompt-embed --prompts-file {input.prompts:q} --prompt-set {params.prompt_set:q} --text-encoder {input.text:q} --max-length {params.max_length:q} --device {params.device:q} --out-dir {output:q} 2> {log:q}"


rule generate:
    # One job per run: its chosen checkpoints are sampled in turn with the codec loaded once. Prompts come
    # as the prompt_embed states; an imported checkpoint gets the T5 encoder (see gen_text_input).
    input:
        run=f"{TRAIN_DIR}/{{exp}}/seed{{seed}}/done.json",
        refiner=refiner_input,
        prompts=rules.prompt_set.output,
        codec=weight_receipt(TOK["weights"]),
        text=gen_text_input,
    output:
        directory(f"{GEN_DIR}/{{exp}}/seed{{seed}}"),  # step_N/<set>/ for each generate_at step
    log:
        f"{LOGS}/generate/{{exp}}_seed{{seed}}.log",
    benchmark:
        f"{BENCH}/generate/{{exp}}_seed{{seed}}.tsv"
    params:
        points=gen_points,
        text=gen_text_args,
        refiner=refiner_args,
        settings=rule_params.generate_settings(config),
        refiner_settings=rule_params.generate_refiner_settings(config),
    threads: 1
    resources:
        mem_mb=8000,
        gpu=device_gpus(GEN["device"]),
    conda:
        "../envs/train.yaml"
    shell:
        "python -m ssmttm generate {params.points:q} --codec-weights {input.codec:q} {params.text:q} --prompts-file {input.prompts:q} --settings {params.settings:q} {params.refiner:q} --refiner-settings {params.refiner_settings:q} 2> {log:q}"


rule generate_all:
    input:
        [f"{GEN_DIR}/{exp}/seed{seed}" for exp, seed in RUNS],
        [system_set(name) for name in BASELINES],


rule generate_musicgen:
    input:
        prompts=rules.prompt_set.output,
        weights=musicgen_weights,
    output:
        f"{SYSTEMS_DIR}/musicgen/{{system}}/{SET}/index.json",
    log:
        f"{LOGS}/generate/musicgen_{{system}}.log",
    benchmark:
        f"{BENCH}/generate/musicgen_{{system}}.tsv"
    params:
        settings=rule_params.musicgen_settings(config),
        out_dir=subpath(output[0], parent=True),
    threads: 1
    resources:
        mem_mb=8000,
        gpu=device_gpus(GEN["device"]),
    conda:
        "../envs/train.yaml"
    shell:
        "python -m ssmttm generate-musicgen --prompts {input.prompts:q} --weights {input.weights:q} --settings {params.settings:q} --out-dir {params.out_dir:q} 2> {log:q}"


rule external_system:
    input:
        unpack(external_inputs),
        prompts=rules.prompt_set.output,
    output:
        f"{SYSTEMS_DIR}/external/{{system}}/{SET}/index.json",
    log:
        f"{LOGS}/generate/external_{{system}}.log",
    benchmark:
        f"{BENCH}/generate/external_{{system}}.tsv"
    params:
        dir=external_dir,
        files=optional_input("--files", "files"),
        out_dir=subpath(output[0], parent=True),
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/eval.yaml"
    shell:
        "python -m ssmttm external-system --name {wildcards.system:q} --dir {params.dir:q} {params.files:q} --prompts {input.prompts:q} --out-dir {params.out_dir:q} 2> {log:q}"
