# The backbones: a table of trainable parameters per preset x variant (meta device, seconds).
# Training and generation are in rules/train.smk, rules/refiner.smk and rules/generate.smk.


rule model_params:
    output:
        f"{RESULTS}/models/params.tsv",
    log:
        f"{LOGS}/model_params.log",
    benchmark:
        f"{BENCH}/model_params.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/models.yaml"
    shell:
        "python -m ssmttm params --out {output:q} > {log:q} 2>&1"
