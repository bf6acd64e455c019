# Vocal removal: Demucs htdemucs, no-vocals stem (vocals: separate) or the clip as is (vocals: keep).
NOVOCALS_DIR = f"{RESULTS}/data/novocals"
VOC = config["vocals"]
VOC_MODEL = [weight_receipt(VOC["model"])] if VOC["mode"] == "separate" else []


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
        mode=VOC["mode"],
        model=" ".join(f"--model-path {shlex.quote(p)}" for p in VOC_MODEL),
        device=VOC["device"],
        shifts=VOC["shifts"],
        overlap=VOC["overlap"],
    threads: 1
    resources:
        mem_mb=4000,
        gpu=device_gpus(VOC["device"]) if VOC["mode"] == "separate" else 0,
    conda:
        "../envs/vocals.yaml"
    shell:
        "python -m ssmttm vocals --shard {wildcards.shard} --clips {input.clips:q} --mode {params.mode} {params.model} --device {params.device} --shifts {params.shifts} --overlap {params.overlap} --threads {threads} --out-dir {output.audio:q} --table {output.table:q} 2> {log:q}"
