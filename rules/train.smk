# Train every experiment named in config (variant x preset x kappa x steps) once per seed: one job
# per run, resumable (a rerun after any interruption continues from the run's last checkpoint).


wildcard_constraints:
    exp="|".join(re.escape(name) for name in EXPERIMENTS),
    seed=r"\d+",
    step=r"\d+",


rule train:
    input:
        tokens=TOKEN_SHARD_FILES,
        text_store=rules.text_embed.output,
        text_meta=f"{TEXT_DIR}/meta.json",
        licenses_json=f"{LICENSE_DIR}/licenses.json",
        licenses_table=f"{LICENSE_DIR}/tracks.tsv",
        manifest=rules.manifest.output.manifest,
        codec=weight_receipt(TOK["weights"]),
        text=weight_receipt(TXT["encoder"]),
    output:
        f"{TRAIN_DIR}/{{exp}}/seed{{seed}}/done.json",
    log:
        f"{LOGS}/train/{{exp}}_seed{{seed}}.log",
    benchmark:
        f"{BENCH}/train/{{exp}}_seed{{seed}}.tsv"
    wildcard_constraints:
        exp="|".join(re.escape(name) for name in EXPERIMENTS if name not in IMPORTED) or "(?!x)x",
    params:
        run_dir=subpath(output[0], parent=True),
        tokens=TOKEN_SHARD_DIRS,
        text=subpath(input.text_meta, parent=True),
        settings=rule_params.train_settings(config),
    threads: TRAIN["threads"]
    resources:
        mem_mb=16000,
        gpu=experiment_gpus,
    conda:
        "../envs/train.yaml"
    shell:
        "python -m ssmttm train --run-dir {params.run_dir:q} --experiment {wildcards.exp} --seed {wildcards.seed} --tokens {params.tokens:q} --text {params.text:q} --settings {params.settings:q} --licenses-json {input.licenses_json:q} --licenses-table {input.licenses_table:q} --manifest {input.manifest:q} --codec-weights {input.codec:q} --text-encoder {input.text:q} --out {output:q} 2> {log:q}"


rule import_checkpoint:
    # experiments.<name>.import: another codebase's checkpoint converted into this run folder's layout
    input:
        checkpoint=imported_weight("checkpoint"),
        config=imported_weight("config"),
        codec=weight_receipt(TOK["weights"]),
        text=weight_receipt(TXT["encoder"]),
    output:
        f"{TRAIN_DIR}/{{exp}}/seed{{seed}}/done.json",
    log:
        f"{LOGS}/import/{{exp}}_seed{{seed}}.log",
    benchmark:
        f"{BENCH}/import/{{exp}}_seed{{seed}}.tsv"
    wildcard_constraints:
        exp="|".join(re.escape(name) for name in IMPORTED) or "(?!x)x",
    params:
        format=imported_format,
        ckpt_dir=imported_ckpt_dir,
        settings=rule_params.section_settings(config, "ssmttm.importer:ImportSettings", "tokens", "text"),
    threads: 1
    resources:
        mem_mb=8000,
    conda:
        "../envs/train.yaml"
    shell:
        "python -m ssmttm import-checkpoint --format {params.format:q} {input.checkpoint:q} {input.config:q} --text-encoder {input.text:q} --codec-weights {input.codec:q} --settings {params.settings:q} --out {params.ckpt_dir:q} --done {output:q} --experiment {wildcards.exp:q} --seed {wildcards.seed} 2> {log:q}"


rule train_all:
    input:
        [f"{TRAIN_DIR}/{exp}/seed{seed}/done.json" for exp, seed in RUNS],
