# Sample each experiment's chosen checkpoints (experiments.<name>.generate_at, default the final
# step) on the configured prompt set, decode with the codec and write 44.1 kHz audio + sidecars.
GEN = config["generate"]
GEN_DIR = f"{RESULTS}/generate"
GEN_POINTS = [
    (exp, seed, step)
    for exp, seed in RUNS
    for step in (EXPERIMENTS[exp]["generate_at"] or [EXPERIMENTS[exp]["steps"]])
]


def gen_dir(exp, seed, step):
    return f"{GEN_DIR}/{exp}/seed{seed}/step_{int(step):07d}/{GEN['prompt_set']}"


rule prompt_set:
    output:
        f"{GEN_DIR}/prompts/{GEN['prompt_set']}.json",
    log:
        f"{LOGS}/prompt_set.log",
    benchmark:
        f"{BENCH}/prompt_set.tsv"
    params:
        prompts=lambda w: opt("--json", _json.dumps(GEN["prompts"], sort_keys=True)),
        name=GEN["prompt_set"],
    threads: 1
    resources:
        mem_mb=500,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm prompt-set --name {params.name} {params.prompts} --out {output:q} 2> {log:q}"


rule generate:
    input:
        run=f"{TRAIN_DIR}/{{exp}}/seed{{seed}}/done.json",
        prompts=rules.prompt_set.output,
        codec=weight_receipt(TOK["weights"]),
        text=weight_receipt(TXT["encoder"]),
    output:
        f"{GEN_DIR}/{{exp}}/seed{{seed}}/step_{{step}}/{GEN['prompt_set']}/index.json",
    log:
        f"{LOGS}/generate/{{exp}}_seed{{seed}}_step{{step}}.log",
    benchmark:
        f"{BENCH}/generate/{{exp}}_seed{{seed}}_step{{step}}.tsv"
    params:
        ckpt=lambda w: f"{run_dir(w.exp, w.seed)}/ckpt/step_{w.step}",
        out_dir=lambda w: gen_dir(w.exp, w.seed, w.step),
        codec=TOK["codec"],
        set_name=GEN["prompt_set"],
        n_tokens=GEN["n_tokens"],
        cfg_scale=GEN["cfg_scale"],
        temperature=GEN["temperature"],
        top_k=GEN["top_k"],
        seed=GEN["seed"],
        batch_size=GEN["batch_size"],
        device=GEN["device"],
    threads: 1
    resources:
        mem_mb=8000,
        gpu=device_gpus(GEN["device"]),
    conda:
        "../envs/train.yaml"
    shell:
        "python -m ssmttm generate --checkpoint {params.ckpt:q} --codec {params.codec} --codec-weights {input.codec:q} --text-encoder {input.text:q} --prompt-set {params.set_name} --prompts-file {input.prompts:q} --n-tokens {params.n_tokens} --cfg-scale {params.cfg_scale} --temperature {params.temperature} --top-k {params.top_k} --seed {params.seed} --batch-size {params.batch_size} --device {params.device} --out-dir {params.out_dir:q} 2> {log:q}"


rule generate_all:
    input:
        [f"{gen_dir(exp, seed, step)}/index.json" for exp, seed, step in GEN_POINTS],
