# Decode, validate (corrupt / truncated / silent / short), check the source (extension, channels,
# rate, clipping: flagged, rejected per segment.checks), resample to 44.1 kHz and cut clips:
# one job per shard.


rule segment:
    input:
        candidates=rules.select_tracks.output.candidates,
        receipt=f"{AUDIO_DIR}/{{shard}}.json",
        audio=f"{AUDIO_DIR}/{{shard}}",
    output:
        table=f"{CLIPS_DIR}/{{shard}}.tsv",
        clips=directory(f"{CLIPS_DIR}/{{shard}}"),
    log:
        f"{LOGS}/segment/{{shard}}.log",
    benchmark:
        f"{BENCH}/segment/{{shard}}.tsv"
    params:
        audio_dir=subpath(input.audio, parent=True),
        settings=rule_params.section_settings(
            config, "ssmttm.data.options:SegmentSettings", "filter", "segment", "segment.checks"
        ),
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm segment --shard {wildcards.shard} --candidates {input.candidates:q} --receipt {input.receipt:q} --audio-dir {params.audio_dir:q} --settings {params.settings:q} --out-dir {output.clips:q} --table {output.table:q} 2> {log:q}"
