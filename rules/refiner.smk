# The second stage of the two-stage system: a diffusion refiner that generates DAC codebooks
# kappa+1..K from codebooks 1..kappa and the caption, trained on the token store (one job per refiner,
# resumable like the LM). Experiments with `refiner: <name>` decode through it (rules/generate.smk).


wildcard_constraints:
    refiner="|".join(re.escape(name) for name in TRAINED_REFINERS) or "(?!x)x",


rule train_refiner:
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
        f"{REFINER_DIR}/{{refiner}}/done.json",
    log:
        f"{LOGS}/train_refiner/{{refiner}}.log",
    benchmark:
        f"{BENCH}/train_refiner/{{refiner}}.tsv"
    params:
        run_dir=subpath(output[0], parent=True),
        tokens=TOKEN_SHARD_DIRS,
        text=subpath(input.text_meta, parent=True),
        settings=rule_params.train_refiner_settings(config),
    threads: TRAIN["threads"]
    resources:
        mem_mb=16000,
        gpu=refiner_gpus,
    conda:
        "../envs/train.yaml"
    shell:
        "python -m ssmttm train-refiner --run-dir {params.run_dir:q} --experiment {wildcards.refiner} --tokens {params.tokens:q} --text {params.text:q} --settings {params.settings:q} --licenses-json {input.licenses_json:q} --licenses-table {input.licenses_table:q} --manifest {input.manifest:q} --codec-weights {input.codec:q} --text-encoder {input.text:q} --out {output:q} 2> {log:q}"


rule refiners_all:
    input:
        [refiner_done(name) for name in TRAINED_REFINERS],
