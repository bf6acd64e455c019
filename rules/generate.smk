# Sample each experiment's chosen checkpoints (experiments.<name>.generate_at, default the final
# step) on the configured prompt set, decode with the codec and write 44.1 kHz audio + sidecars. An
# experiment with `refiner: <name>` is the two-stage system: its codes are completed by the refiner first.
GEN = config["generate"]
GEN_DIR = f"{RESULTS}/generate"


def gen_dir(exp, seed, step):
    return f"{GEN_DIR}/{exp}/seed{seed}/step_{int(step):07d}/{GEN['prompt_set']}"


def _prompt_source(wildcards):
    src = GEN["prompts_source"]
    return [meta(src)] if src else []


rule prompt_set:
    input:
        _prompt_source,
    output:
        f"{GEN_DIR}/prompts/{GEN['prompt_set']}.json",
    log:
        f"{LOGS}/prompt_set.log",
    benchmark:
        f"{BENCH}/prompt_set.tsv"
    params:
        prompts=lambda w: opt("--json", _json.dumps(GEN["prompts"], sort_keys=True)) if GEN["prompt_set"] == "demo" else "",
        source=lambda w, input: opt("--prompts-file", input[0] if input else None),
        options=lambda w: opt("--options", _json.dumps(GEN["prompt_options"].get(GEN["prompt_set"]) or {}, sort_keys=True)),
        name=GEN["prompt_set"],
    threads: 1
    resources:
        mem_mb=500,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm prompt-set --name {params.name} {params.prompts} {params.source} {params.options} --out {output:q} 2> {log:q}"


def _gen_steps(exp):
    return [f"{int(s):07d}" for s in (EXPERIMENTS[exp]["generate_at"] or [EXPERIMENTS[exp]["steps"]])]


rule generate:
    # One job per run: its chosen checkpoints are sampled in turn with the codec and T5 loaded once.
    input:
        run=f"{TRAIN_DIR}/{{exp}}/seed{{seed}}/done.json",
        refiner=lambda w: refiner_input(w.exp),
        prompts=rules.prompt_set.output,
        codec=weight_receipt(TOK["weights"]),
        text=weight_receipt(TXT["encoder"]),
    output:
        directory(f"{GEN_DIR}/{{exp}}/seed{{seed}}"),  # step_N/<set>/ for each generate_at step
    log:
        f"{LOGS}/generate/{{exp}}_seed{{seed}}.log",
    benchmark:
        f"{BENCH}/generate/{{exp}}_seed{{seed}}.tsv"
    params:
        points=lambda w: " ".join(
            f"--checkpoint {shlex.quote(run_dir(w.exp, w.seed) + f'/ckpt/step_{step}')} "
            f"--out-dir {shlex.quote(gen_dir(w.exp, w.seed, step))}"
            for step in _gen_steps(w.exp)
        ),
        refiner=lambda w: refiner_flags(w.exp),
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
        "python -m ssmttm generate {params.points} --codec {params.codec} --codec-weights {input.codec:q} --text-encoder {input.text:q} --prompt-set {params.set_name} --prompts-file {input.prompts:q} --n-tokens {params.n_tokens} --cfg-scale {params.cfg_scale} --temperature {params.temperature} --top-k {params.top_k} --seed {params.seed} --batch-size {params.batch_size} --device {params.device} {params.refiner} 2> {log:q}"


rule generate_all:
    input:
        [f"{GEN_DIR}/{exp}/seed{seed}" for exp, seed in RUNS],
