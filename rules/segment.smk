# Decode, validate (corrupt / truncated / silent / short), resample to 44.1 kHz and cut clips:
# one job per shard.
CLIPS_DIR = f"{RESULTS}/data/clips"
SEG = config["segment"]


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
        audio_dir=AUDIO_DIR,
        clip_seconds=SEG["clip_seconds"],
        position=SEG["position"],
        seed=SEG["seed"],
        sample_rate=SEG["sample_rate"],
        channels=SEG["channels"],
        silence=config["filter"]["silence_dbfs"],
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm segment --shard {wildcards.shard} --candidates {input.candidates:q} --receipt {input.receipt:q} --audio-dir {params.audio_dir:q} --clip-seconds {params.clip_seconds} --position {params.position} --seed {params.seed} --sample-rate {params.sample_rate} --channels {params.channels} --silence-dbfs {params.silence} --out-dir {output.clips:q} --table {output.table:q} 2> {log:q}"
