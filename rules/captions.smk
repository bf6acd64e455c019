# Captions per clip, cached per shard: `tags` (templates over Jamendo tags, offline) or `qwen2-audio`
# (Qwen2-Audio-7B-Instruct with the paper lab's prompt, optional LLM rephrase).
CAP = config["captions"]
QWEN = CAP["qwen2_audio"]
# captions.qwen2_audio.model / rephrase_model name weights: the rule hands their receipts over as inputs
CAP_QWEN = CAP["captioner"] == "qwen2-audio"
CAP_MODEL = [weight_receipt(QWEN["model"])] if CAP_QWEN else []
CAP_REPHRASE = [weight_receipt(QWEN["rephrase_model"])] if CAP_QWEN and QWEN["rephrase_model"] else []


rule captions:
    input:
        clips=f"{NOVOCALS_DIR}/{{shard}}.tsv",
        audio=f"{NOVOCALS_DIR}/{{shard}}",
        candidates=rules.select_tracks.output.candidates,
        model=CAP_MODEL,
        rephrase=CAP_REPHRASE,
    output:
        f"{CAPTIONS_DIR}/{{shard}}.tsv",
    log:
        f"{LOGS}/captions/{{shard}}.log",
    benchmark:
        f"{BENCH}/captions/{{shard}}.tsv"
    params:
        settings=rule_params.section_settings(
            config, "ssmttm.data.options:CaptionsSettings", "captions", "captions.tags", "captions.qwen2_audio"
        ),
    threads: 1
    resources:
        mem_mb=4000,
        gpu=device_gpus(QWEN["device"]) if CAP_QWEN else 0,
    conda:
        "../envs/captions.yaml"
    shell:
        "python -m ssmttm captions --shard {wildcards.shard} --clips {input.clips:q} --candidates {input.candidates:q} --model-path {input.model:q} --rephrase-path {input.rephrase:q} --settings {params.settings:q} --out {output:q} 2> {log:q}"
