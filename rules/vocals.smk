# Vocal removal: Demucs htdemucs, no-vocals stem (vocals: separate) or the clip as is (vocals: keep).
VOC = config["vocals"]
VOC_MODEL = [weight_receipt(VOC["model"])] if VOC["mode"] == "separate" else []  # vocals.model: an input


rule vocals:
    input:
        clips=f"{CLIPS_DIR}/{{shard}}.tsv",
        clip_dir=f"{CLIPS_DIR}/{{shard}}",
        model=VOC_MODEL,
    output:
        table=f"{NOVOCALS_DIR}/{{shard}}.tsv",
        audio=directory(f"{NOVOCALS_DIR}/{{shard}}"),
    log:
        f"{LOGS}/vocals/{{shard}}.log",
    benchmark:
        f"{BENCH}/vocals/{{shard}}.tsv"
    params:
        settings=rule_params.section_settings(config, "ssmttm.data.options:VocalsSettings", "vocals"),
    threads: 1
    resources:
        mem_mb=4000,
        gpu=device_gpus(VOC["device"]) if VOC["mode"] == "separate" else 0,
    conda:
        "../envs/vocals.yaml"
    shell:
        "python -m ssmttm vocals --shard {wildcards.shard} --clips {input.clips:q} --model-path {input.model:q} --settings {params.settings:q} --threads {threads} --out-dir {output.audio:q} --table {output.table:q} 2> {log:q}"
