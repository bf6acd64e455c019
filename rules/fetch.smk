# The dataset source (source.kind; MTG-Jamendo by default): metadata files once, then one job per audio
# archive (shard). Streamed, resumable, sha256-verified downloads; a verified file is never fetched twice.
SRC = config["source"]


rule fetch_metadata:
    input:
        SRC["requires"],
    output:
        f"{META_DIR}/{{metafile}}",
    log:
        f"{LOGS}/fetch_metadata/{{metafile}}.log",
    benchmark:
        f"{BENCH}/fetch_metadata/{{metafile}}.tsv"
    params:
        settings=rule_params.metadata_settings(config),
    threads: 1
    resources:
        downloads=1,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm fetch-file --settings {params.settings:q} --out {output:q} 2> {log:q}"


rule fetch_shard:
    input:
        **source_files("shard"),
        requires=SRC["requires"],
    output:
        receipt=f"{AUDIO_DIR}/{{shard}}.json",
        audio=directory(f"{AUDIO_DIR}/{{shard}}"),
    log:
        f"{LOGS}/fetch_shard/{{shard}}.log",
    benchmark:
        f"{BENCH}/fetch_shard/{{shard}}.tsv"
    params:
        settings=rule_params.section_settings(config, "ssmttm.data.options:FetchShardSettings", "source"),
        source=rule_params.section_settings(config, "ssmttm.data.options:SourceSettings", "source"),
        metadata=source_args("shard"),
        out_dir=subpath(output.receipt, parent=True),
    threads: 1
    resources:
        downloads=1,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm fetch-shard --shard {wildcards.shard} --settings {params.settings:q} --source-settings {params.source:q} --metadata {params.metadata:q} --out-dir {params.out_dir:q} --receipt {output.receipt:q} 2> {log:q}"
