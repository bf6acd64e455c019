# MTG-Jamendo sources: metadata files once, then one job per audio tar (shard). Streamed, resumable,
# sha256-verified downloads; a verified file is never fetched twice.
SRC = config["source"]


def _meta_entry(wildcards):
    return SRC["metadata"][FILE_TO_META_KEY[wildcards.metafile]]


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
        url=lambda w: _meta_entry(w)["url"],
        sha256=lambda w: opt("--sha256", _meta_entry(w).get("sha256")),
        retries=SRC["retries"],
        timeout=SRC["timeout_s"],
    threads: 1
    resources:
        downloads=1,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm fetch-file --url {params.url:q} {params.sha256} --out {output:q} --retries {params.retries} --timeout {params.timeout} 2> {log:q}"


rule fetch_shard:
    input:
        tar_sums=meta("tar_sha256"),
        track_sums=meta("track_sha256"),
        requires=SRC["requires"],
    output:
        receipt=f"{AUDIO_DIR}/{{shard}}.json",
        audio=directory(f"{AUDIO_DIR}/{{shard}}"),
    log:
        f"{LOGS}/fetch_shard/{{shard}}.log",
    benchmark:
        f"{BENCH}/fetch_shard/{{shard}}.tsv"
    params:
        base_url=SRC["base_url"],
        mirrors=" ".join(f"--mirror {shlex.quote(m)}" for m in SRC["mirrors"]),
        dataset=SRC["dataset"],
        audio_type=SRC["audio_type"],
        keep_tars="--keep-tars" if SRC["keep_tars"] else "",
        retries=SRC["retries"],
        timeout=SRC["timeout_s"],
        out_dir=AUDIO_DIR,
    threads: 1
    resources:
        downloads=1,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm fetch-shard --shard {wildcards.shard} --base-url {params.base_url:q} {params.mirrors} --dataset {params.dataset} --audio-type {params.audio_type} --tar-sha256 {input.tar_sums:q} --track-sha256 {input.track_sums:q} --out-dir {params.out_dir:q} --receipt {output.receipt:q} {params.keep_tars} --retries {params.retries} --timeout {params.timeout} 2> {log:q}"
