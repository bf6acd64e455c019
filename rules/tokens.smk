# Tokenize once: every manifest clip -> DAC codes (all codebooks, one uint16 store per shard), every
# unique caption (+ the empty CFG prompt) -> frozen text-encoder states. Training reads only these.
# What a reader of the token store opens: every file of exactly these shard folders (never a glob).


rule text_embed:
    input:
        manifest=rules.manifest.output.manifest,
        encoder=weight_receipt(TXT["encoder"]),
    output:
        [f"{TEXT_DIR}/{name}" for name in TEXT_OUTPUTS],
    log:
        f"{LOGS}/text_embed.log",
    benchmark:
        f"{BENCH}/text_embed.tsv"
    params:
        settings=rule_params.section_settings(config, "ssmttm.text.options:TextEmbedSettings", "text"),
        out_dir=subpath(output[0], parent=True),
    threads: 2
    resources:
        mem_mb=8000,
        gpu=device_gpus(TXT["device"]),
    conda:
        "../envs/tokens.yaml"
    shell:
        "python -m ssmttm text-embed --manifest {input.manifest:q} --text-encoder {input.encoder:q} --settings {params.settings:q} --out-dir {params.out_dir:q} 2> {log:q}"


rule tokenize:
    input:
        manifest=rules.manifest.output.manifest,
        text_clips=f"{TEXT_DIR}/clips.parquet",
        codec=weight_receipt(TOK["weights"]),
    output:
        [f"{TOKENS_DIR}/{{shard}}/{name}" for name in TOKEN_OUTPUTS],
    log:
        f"{LOGS}/tokenize/{{shard}}.log",
    benchmark:
        f"{BENCH}/tokenize/{{shard}}.tsv"
    params:
        settings=rule_params.section_settings(config, "ssmttm.tokens.options:TokenizeSettings", "tokens"),
        out_dir=subpath(output[0], parent=True),
    threads: 1
    resources:
        mem_mb=4000,
        gpu=device_gpus(TOK["device"]),
    conda:
        "../envs/tokens.yaml"
    shell:
        "python -m ssmttm tokenize --shard {wildcards.shard} --manifest {input.manifest:q} --text-clips {input.text_clips:q} --codec-weights {input.codec:q} --settings {params.settings:q} --out-dir {params.out_dir:q} 2> {log:q}"


rule codec_ceiling:
    input:
        tokens=[f"{TOKENS_DIR}/{{shard}}/{name}" for name in TOKEN_OUTPUTS],
        manifest=rules.manifest.output.manifest,
        codec=weight_receipt(TOK["weights"]),
    output:
        f"{TOKENS_DIR}/ceiling/{{shard}}.tsv",
    log:
        f"{LOGS}/codec_ceiling/{{shard}}.log",
    benchmark:
        f"{BENCH}/codec_ceiling/{{shard}}.tsv"
    params:
        settings=rule_params.section_settings(
            config, "ssmttm.tokens.options:CeilingSettings", "tokens", "tokens.ceiling"
        ),
        tokens_dir=subpath(input[0], parent=True),
    threads: 1
    resources:
        mem_mb=4000,
        gpu=device_gpus(TOK["device"]),
    conda:
        "../envs/tokens.yaml"
    shell:
        "python -m ssmttm ceiling --shard {wildcards.shard} --tokens {params.tokens_dir:q} --manifest {input.manifest:q} --codec-weights {input.codec:q} --settings {params.settings:q} --out {output:q} 2> {log:q}"


rule codec_ceiling_summary:
    input:
        expand(f"{TOKENS_DIR}/ceiling/{{shard}}.tsv", shard=SHARDS),
    output:
        tsv=f"{TOKENS_DIR}/ceiling.tsv",
        json=f"{TOKENS_DIR}/ceiling.json",
    log:
        f"{LOGS}/codec_ceiling_summary.log",
    benchmark:
        f"{BENCH}/codec_ceiling_summary.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm ceiling-summary --inputs {input:q} --out-tsv {output.tsv:q} --out-json {output.json:q} 2> {log:q}"


rule tokens:
    input:
        rules.text_embed.output,
        expand(f"{TOKENS_DIR}/{{shard}}/codes.npy", shard=SHARDS),
        rules.codec_ceiling_summary.output,
