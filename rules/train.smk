# Train every experiment named in config (variant x preset x kappa x steps) once per seed: one job
# per run, resumable (a rerun after any interruption continues from the run's last checkpoint).
import json as _json

TRAIN = config["train"]
EXPERIMENTS = {name: exp for name, exp in config["experiments"].items() if exp["enabled"]}
TRAIN_DIR = f"{RESULTS}/train"
RUNS = [(name, seed) for name, exp in EXPERIMENTS.items() for seed in exp["seeds"]]


wildcard_constraints:
    exp="|".join(re.escape(name) for name in EXPERIMENTS),
    seed=r"\d+",
    step=r"\d+",


def run_dir(exp, seed):
    return f"{TRAIN_DIR}/{exp}/seed{seed}"


def _train_opt(exp, key):
    """An experiment's override of the shared train section, else the shared value."""
    return EXPERIMENTS[exp]["train"].get(key, TRAIN[key])


def _train_flags(w):
    e = EXPERIMENTS[w.exp]
    t = lambda key: _train_opt(w.exp, key)  # noqa: E731
    flags = [
        f"--variant {e['variant']} --preset {e['preset']} --kappa {e['kappa']} --steps {e['steps']}",
        f"--checkpoint-every {t('checkpoint_every')} --lr {t('lr')} --weight-decay {t('weight_decay')}",
        f"--betas {t('betas')[0]} {t('betas')[1]} --eps {t('eps')} --warmup {t('warmup_steps')}",
        f"--min-lr-ratio {t('min_lr_ratio')} --grad-clip {t('grad_clip')} --batch-size {t('batch_size')}",
        f"--grad-accum {t('grad_accum')} --max-frames {t('max_frames')} --label-smoothing {t('label_smoothing')}",
        f"--cfg-dropout {t('cfg_dropout')} --cfg-token-dropout {t('cfg_token_dropout')} --dropout {t('dropout')}",
        f"--precision {t('precision')} --device {t('device')} --num-workers {t('num_workers')}",
        f"--log-every {t('log_every')}",
    ]
    if e["checkpoints"]:
        flags.append("--checkpoints " + " ".join(str(s) for s in e["checkpoints"]))
    if e["model"]:
        flags.append(opt("--model-overrides", _json.dumps(e["model"], sort_keys=True)))
    return " ".join(flags)


rule train:
    input:
        tokens=rules.tokens.input,
        licenses=f"{LICENSE_DIR}/licenses.json",
        attribution=f"{LICENSE_DIR}/ATTRIBUTION.md",
        manifest=rules.manifest.output.manifest,
        codec=weight_receipt(TOK["weights"]),
        text=weight_receipt(TXT["encoder"]),
    output:
        f"{TRAIN_DIR}/{{exp}}/seed{{seed}}/done.json",
    log:
        f"{LOGS}/train/{{exp}}_seed{{seed}}.log",
    benchmark:
        f"{BENCH}/train/{{exp}}_seed{{seed}}.tsv"
    params:
        run_dir=lambda w: run_dir(w.exp, w.seed),
        tokens=TOKENS_DIR,
        text=TEXT_DIR,
        flags=_train_flags,
    threads: TRAIN["threads"]
    resources:
        mem_mb=16000,
        gpu=lambda w: device_gpus(_train_opt(w.exp, "device")),
    conda:
        "../envs/train.yaml"
    shell:
        "python -m ssmttm train --run-dir {params.run_dir:q} --experiment {wildcards.exp} --seed {wildcards.seed} --tokens {params.tokens:q} --text {params.text:q} {params.flags} --licenses {input.licenses:q} --attribution {input.attribution:q} --manifest {input.manifest:q} --codec-receipt {input.codec:q} --text-receipt {input.text:q} --out {output:q} 2> {log:q}"


rule train_all:
    input:
        [f"{run_dir(exp, seed)}/done.json" for exp, seed in RUNS],
