# Third-party checkpoints, one job per manifest entry (weights.models.<name>), into one cache
# folder. Loaders read only these local copies with hub access switched off.


def _weight(wildcards):
    try:
        return config["weights"]["models"][wildcards.name]
    except KeyError:
        raise ValueError(
            f"config key weights.models.{wildcards.name}: no such weight (known: {sorted(config['weights']['models'])})"
        )


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
        source=lambda w: _weight(w)["source"],
        revision=lambda w: opt("--revision", _weight(w).get("revision")),
        sha256=lambda w: opt("--sha256", _weight(w).get("sha256")),
        licence=lambda w: _weight(w)["licence"],
        dir=WEIGHTS_DIR,
    threads: 1
    resources:
        downloads=1,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm weights --name {wildcards.name} --source {params.source:q} {params.revision} {params.sha256} --licence {params.licence:q} --dir {params.dir:q} --receipt {output.receipt:q} 2> {log:q}"


rule weights_all:
    input:
        [weight_receipt(name) for name in config["weights"]["models"]],
