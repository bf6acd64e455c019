# Metadata filter: duration, Song Describer exclusion, licence gate, shard selection. Audio validity
# is checked per shard by the segment stage.
SELECT_DIR = f"{RESULTS}/data/selection"


rule select_tracks:
    input:
        tracks=meta("cleantags"),
        licenses=f"{LICENSE_DIR}/tracks.tsv",
        song_describer=meta("song_describer"),
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
        min_seconds=config["filter"]["min_seconds"],
        clip_seconds=config["segment"]["clip_seconds"],
        position=config["segment"]["position"],
        keep_sdd="" if config["filter"]["exclude_song_describer"] else "--keep-song-describer",
        out_dir=SELECT_DIR,
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm select --tracks {input.tracks:q} --licenses-table {input.licenses:q} --song-describer {input.song_describer:q} --shards {params.shards} --min-seconds {params.min_seconds} --clip-seconds {params.clip_seconds} --position {params.position} {params.keep_sdd} --out-dir {params.out_dir:q} 2> {log:q}"
