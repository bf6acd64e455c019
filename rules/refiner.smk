# The second stage of the two-stage system: a diffusion refiner that generates DAC codebooks
# kappa+1..K from codebooks 1..kappa and the caption, trained on the token store (one job per refiner,
# resumable like the LM). Experiments with `refiner: <name>` decode through it (rules/generate.smk).
REFINERS = {name: r for name, r in config.get("refiners", {}).items() if r["enabled"]}
REFINER_DIR = f"{RESULTS}/refiner"
TRAINED_REFINERS = [name for name, r in REFINERS.items() if r["backend"] == "ssmttm"]


wildcard_constraints:
    refiner="|".join(re.escape(name) for name in TRAINED_REFINERS) or "(?!x)x",


def refiner_done(name):
    return f"{REFINER_DIR}/{name}/done.json"


def _refiner_flags(w):
    r = REFINERS[w.refiner]
    t = lambda key: r["train"].get(key, TRAIN[key])  # noqa: E731
    flags = [
        f"--preset {r['preset']} --kappa {r['kappa']} --steps {r['steps']} --seed {r['seed']}",
        f"--checkpoint-every {t('checkpoint_every')} --lr {t('lr')} --weight-decay {t('weight_decay')}",
        f"--betas {t('betas')[0]} {t('betas')[1]} --eps {t('eps')} --warmup {t('warmup_steps')}",
        f"--min-lr-ratio {t('min_lr_ratio')} --grad-clip {t('grad_clip')} --batch-size {t('batch_size')}",
        f"--grad-accum {t('grad_accum')} --max-frames {t('max_frames')} --cfg-dropout {t('cfg_dropout')}",
        f"--cfg-token-dropout {t('cfg_token_dropout')} --dropout {t('dropout')} --precision {t('precision')}",
        f"--device {t('device')} --num-workers {t('num_workers')} --log-every {t('log_every')}",
    ]
    if r["model"]:
        flags.append(opt("--model-overrides", _json.dumps(r["model"], sort_keys=True)))
    return " ".join(flags)


rule train_refiner:
    input:
        tokens=rules.tokens.input,
        licenses=f"{LICENSE_DIR}/licenses.json",
        attribution=f"{LICENSE_DIR}/ATTRIBUTION.md",
        manifest=rules.manifest.output.manifest,
        codec=weight_receipt(TOK["weights"]),
        text=weight_receipt(TXT["encoder"]),
    output:
        f"{REFINER_DIR}/{{refiner}}/done.json",
    log:
        f"{LOGS}/train_refiner/{{refiner}}.log",
    benchmark:
        f"{BENCH}/train_refiner/{{refiner}}.tsv"
    params:
        run_dir=lambda w: f"{REFINER_DIR}/{w.refiner}",
        tokens=TOKENS_DIR,
        text=TEXT_DIR,
        codec=TOK["codec"],
        flags=_refiner_flags,
    threads: TRAIN["threads"]
    resources:
        mem_mb=16000,
        gpu=lambda w: device_gpus(REFINERS[w.refiner]["train"].get("device", TRAIN["device"])),
    conda:
        "../envs/train.yaml"
    shell:
        "python -m ssmttm train-refiner --run-dir {params.run_dir:q} --experiment {wildcards.refiner} --tokens {params.tokens:q} --text {params.text:q} --codec {params.codec} --codec-weights {input.codec:q} {params.flags} --licenses {input.licenses:q} --attribution {input.attribution:q} --manifest {input.manifest:q} --codec-receipt {input.codec:q} --text-receipt {input.text:q} --out {output:q} 2> {log:q}"


rule refiners_all:
    input:
        [refiner_done(name) for name in TRAINED_REFINERS],


def refiner_input(exp):
    """What a generate job of ``exp`` needs from its refiner: the trained run's done.json, a user's
    DiscoDiff checkpoint, or nothing (single-stage)."""
    name = EXPERIMENTS[exp]["refiner"]
    if name is None:
        return []
    return [refiner_done(name)] if name in TRAINED_REFINERS else [REFINERS[name]["checkpoint"]]


def refiner_flags(exp):
    """`generate` flags of the experiment's second stage ("" for a single-stage experiment)."""
    name = EXPERIMENTS[exp]["refiner"]
    if name is None:
        return ""
    r = REFINERS[name]
    path = refiner_done(name) if r["backend"] == "ssmttm" else r["checkpoint"]
    s = r["sampler"]
    return (f"--refiner {shlex.quote(path)} --refiner-backend {r['backend']} --refiner-steps {s['steps']} "
            f"--refiner-cfg-scale {s['cfg_scale']} --refiner-sampler {s['sampler']}")
