# Licence audit: every track's Creative Commons licence, the allow-list gate, attribution.
# `snakemake licenses` runs only this (and the metadata downloads it needs).
LICENSE_OUTPUTS = ["tracks.tsv", "summary.tsv", "ATTRIBUTION.md", "licenses.json", "unparsed.tsv"]


rule license_audit:
    input:
        **source_files("tracks", "licences"),
    output:
        [f"{LICENSE_DIR}/{name}" for name in LICENSE_OUTPUTS],
    log:
        f"{LOGS}/license_audit.log",
    benchmark:
        f"{BENCH}/license_audit.tsv"
    params:
        settings=rule_params.section_settings(config, "ssmttm.data.options:LicensesSettings", "licenses"),
        source=rule_params.section_settings(config, "ssmttm.data.options:SourceSettings", "source"),
        metadata=source_args("tracks", "licences"),
        out_dir=subpath(output[0], parent=True),
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm licenses --metadata {params.metadata:q} --settings {params.settings:q} --source-settings {params.source:q} --out-dir {params.out_dir:q} 2> {log:q}"


rule licenses:
    input:
        rules.license_audit.output,
