# Licence audit: every track's Creative Commons licence, the allow-list gate, attribution.
# `snakemake licenses` runs only this (and the metadata downloads it needs).
LICENSE_DIR = f"{RESULTS}/licenses"
LICENSE_OUTPUTS = ["tracks.tsv", "summary.tsv", "ATTRIBUTION.md", "licenses.json", "unparsed.tsv"]


rule license_audit:
    input:
        licenses=meta("licenses"),
        tracks=meta("cleantags"),
        meta=meta("meta"),
    output:
        [f"{LICENSE_DIR}/{name}" for name in LICENSE_OUTPUTS],
    log:
        f"{LOGS}/license_audit.log",
    benchmark:
        f"{BENCH}/license_audit.tsv"
    params:
        allow=",".join(allowed_licences(config)),
        preset=config["licenses"]["preset"],
        out_dir=LICENSE_DIR,
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm licenses --licenses {input.licenses:q} --tracks {input.tracks:q} --meta {input.meta:q} --allow {params.allow} --preset {params.preset} --out-dir {params.out_dir:q} 2> {log:q}"


rule licenses:
    input:
        rules.license_audit.output,
