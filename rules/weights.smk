# Third-party checkpoints, one job per manifest entry (weights.models.<name>), into one cache
# folder. Loaders read only these local copies with hub access switched off.


rule weights:
    input:
        config["weights"]["requires"],
    output:
        receipt=f"{WEIGHTS_DIR}/{{name}}.json",
    log:
        f"{LOGS}/weights/{{name}}.log",
    benchmark:
        f"{BENCH}/weights/{{name}}.tsv"
    params:
        settings=rule_params.weight_settings(config),
    threads: 1
    resources:
        downloads=1,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm weights --name {wildcards.name:q} --settings {params.settings:q} --receipt {output.receipt:q} 2> {log:q}"


rule weights_all:
    input:
        [weight_receipt(name) for name in config["weights"]["models"]],
