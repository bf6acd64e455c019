# Loss curves: one figure per training run and an overlay of every run (PNG + SVG); settings from the
# config's plots section.
PLOTS_DIR = f"{RESULTS}/plots"


rule loss_curves:
    input:
        [f"{run_dir(exp, seed)}/done.json" for exp, seed in TRAINED_RUNS],
    output:
        [f"{PLOTS_DIR}/loss/{exp}_seed{seed}.{ext}" for exp, seed in TRAINED_RUNS for ext in ("png", "svg")],
        report(
            f"{PLOTS_DIR}/loss/all.png",
            caption="report/loss_curves.rst",
            category="Training",
            labels={"figure": "training loss, every run"},
        ),
        overlay=f"{PLOTS_DIR}/loss/all.svg",
    log:
        f"{LOGS}/loss_curves.log",
    benchmark:
        f"{BENCH}/loss_curves.tsv"
    params:
        runs=[f"{exp}_seed{seed}={run_dir(exp, seed)}" for exp, seed in TRAINED_RUNS],
        settings=rule_params.stage_settings(config, "ssmttm.report.options:LossCurvesSettings", "plots"),
        out_dir=subpath(output.overlay, parent=True),
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm loss-curves --run {params.runs:q} --settings {params.settings:q} --out-dir {params.out_dir:q} 2> {log:q}"
