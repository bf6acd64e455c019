# One manifest per run: a row per surviving clip (audio path + sha256, licence, captions, split),
# plus every rejection from every stage with its reason. `snakemake data` stops here.
DATA_DIR = f"{RESULTS}/data"


rule manifest:
    input:
        candidates=rules.select_tracks.output.candidates,
        select_rejected=rules.select_tracks.output.rejected,
        licenses=f"{LICENSE_DIR}/tracks.tsv",
        receipts=expand(f"{AUDIO_DIR}/{{shard}}.json", shard=SHARDS),
        clips=expand(f"{CLIPS_DIR}/{{shard}}.tsv", shard=SHARDS),
        vocals=expand(f"{NOVOCALS_DIR}/{{shard}}.tsv", shard=SHARDS),
        captions=expand(f"{CAPTIONS_DIR}/{{shard}}.tsv", shard=SHARDS),
    output:
        manifest=f"{DATA_DIR}/manifest.parquet",
        rejected=f"{DATA_DIR}/rejected.tsv",
        report=f"{DATA_DIR}/report.json",
    log:
        f"{LOGS}/manifest.log",
    benchmark:
        f"{BENCH}/manifest.tsv"
    params:
        settings=rule_params.section_settings(config, "ssmttm.data.options:ManifestSettings", "split"),
        out_dir=subpath(output.manifest, parent=True),
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm manifest --candidates {input.candidates:q} --select-rejected {input.select_rejected:q} --licenses-table {input.licenses:q} --receipts {input.receipts:q} --clip-tables {input.clips:q} --vocals-tables {input.vocals:q} --captions-tables {input.captions:q} --settings {params.settings:q} --out-dir {params.out_dir:q} 2> {log:q}"


rule data:
    input:
        rules.manifest.output,
