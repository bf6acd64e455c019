# Metadata filter: duration, Song Describer exclusion, licence gate, shard selection. Audio validity
# is checked per shard by the segment stage.
SELECT_DIR = f"{RESULTS}/data/selection"


rule select_tracks:
    input:
        **source_files("tracks", "held_out"),
        licenses=f"{LICENSE_DIR}/tracks.tsv",
    output:
        candidates=f"{SELECT_DIR}/candidates.tsv",
        rejected=f"{SELECT_DIR}/rejected.tsv",
        report=f"{SELECT_DIR}/report.json",
    log:
        f"{LOGS}/select_tracks.log",
    benchmark:
        f"{BENCH}/select_tracks.tsv"
    params:
        shards=config["shards"],
        settings=rule_params.section_settings(config, "ssmttm.data.options:SelectSettings", "filter", "segment"),
        source=rule_params.section_settings(config, "ssmttm.data.options:SourceSettings", "source"),
        metadata=source_args("tracks", "held_out"),
        out_dir=subpath(output.candidates, parent=True),
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm select --metadata {params.metadata:q} --licenses-table {input.licenses:q} --shards {params.shards:q} --settings {params.settings:q} --source-settings {params.source:q} --out-dir {params.out_dir:q} 2> {log:q}"
