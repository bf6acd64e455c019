# Captions per clip, cached per shard: `tags` (templates over Jamendo tags, offline) or `qwen2-audio`
# (Qwen2-Audio-7B-Instruct with the paper lab's prompt, optional LLM rephrase).
CAPTIONS_DIR = f"{RESULTS}/data/captions"
CAP = config["captions"]
QWEN = CAP["qwen2_audio"]
CAP_MODELS = (
    [weight_receipt(QWEN["model"])] + ([weight_receipt(QWEN["rephrase_model"])] if QWEN.get("rephrase_model") else [])
    if CAP["captioner"] == "qwen2-audio"
    else []
)


def _caption_model_flags():
    if CAP["captioner"] != "qwen2-audio":
        return ""
    flags = f"--model-path {shlex.quote(weight_receipt(QWEN['model']))}"
    if QWEN.get("rephrase_model"):
        flags += f" --rephrase-path {shlex.quote(weight_receipt(QWEN['rephrase_model']))}"
    return flags


rule captions:
    input:
        clips=f"{NOVOCALS_DIR}/{{shard}}.tsv",
        audio=f"{NOVOCALS_DIR}/{{shard}}",
        candidates=rules.select_tracks.output.candidates,
        models=CAP_MODELS,
    output:
        f"{CAPTIONS_DIR}/{{shard}}.tsv",
    log:
        f"{LOGS}/captions/{{shard}}.log",
    benchmark:
        f"{BENCH}/captions/{{shard}}.tsv"
    params:
        captioner=CAP["captioner"],
        seed=CAP["seed"],
        models=_caption_model_flags(),
        device=QWEN["device"],
        batch_size=QWEN["batch_size"],
        max_new_tokens=QWEN["max_new_tokens"],
        max_audio_seconds=QWEN["max_audio_seconds"],
    threads: 1
    resources:
        mem_mb=4000,
        gpu=device_gpus(QWEN["device"]) if CAP["captioner"] == "qwen2-audio" else 0,
    conda:
        "../envs/captions.yaml"
    shell:
        "python -m ssmttm captions --shard {wildcards.shard} --clips {input.clips:q} --candidates {input.candidates:q} --captioner {params.captioner} --seed {params.seed} {params.models} --device {params.device} --batch-size {params.batch_size} --max-new-tokens {params.max_new_tokens} --max-audio-seconds {params.max_audio_seconds} --out {output:q} 2> {log:q}"
