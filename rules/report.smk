# Tables, curves, claims and the HTML report (`snakemake --report report.html` after a run).
# Each stage gets its settings as one JSON object (--settings): the studies, the claims run's recipe,
# evaluation.report_clips.
STUDIES = config["studies"]
TABLES_DIR = f"{RESULTS}/tables"
EVAL_PLOTS = f"{RESULTS}/plots/eval"
VAL_LOSS_PLOTS = f"{RESULTS}/plots/val_loss"
REPORT_DIR = f"{RESULTS}/report"
CURVE_STUDIES = [s for s, st in STUDIES.items() if st["kind"] == "curve"]
CLAIMS_EXP = rule_params.claims_experiment(config)
CLAIMS_RUN = run_dir(CLAIMS_EXP, EXPERIMENTS[CLAIMS_EXP]["seeds"][0])
CAPTIONS = "report"  # rules/report/<name>.rst, relative to this file


rule tables:
    input:
        SCORE_FILES,
    output:
        [f"{TABLES_DIR}/{s}.{ext}" for s in STUDIES for ext in ("csv", "md", "tex")],
        plots=[
            report(
                f"{EVAL_PLOTS}/{s}_vs_{x}.png",
                caption=f"{CAPTIONS}/curves_vs_{x}.rst",
                category="Curves",
                labels={"study": s, "x axis": x},
            )
            for s in CURVE_STUDIES
            for x in ("steps", "flops")
        ],
        vectors=[f"{EVAL_PLOTS}/{s}_vs_{x}.svg" for s in CURVE_STUDIES for x in ("steps", "flops")],
        all_scores=f"{TABLES_DIR}/all_scores.csv",
    log:
        f"{LOGS}/tables.log",
    benchmark:
        f"{BENCH}/tables.tsv"
    params:
        settings=rule_params.tables_settings(config),
        out_dir=subpath(output.all_scores, parent=True),
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm tables --scores {input:q} --settings {params.settings:q} --out-dir {params.out_dir:q} --plots {output.plots:q} {output.vectors:q} 2> {log:q}"


# Validation loss of every study's experiments: mean ± 95 % t-interval over seeds, vs steps and FLOPs;
# the matched-step summary (val_loss.json) is what `make docs-results` writes into README/docs.
rule val_loss:
    input:
        [f"{run_dir(exp, seed)}/done.json" for exp, seed in TRAINED_RUNS],
    output:
        plots=[
            report(
                f"{VAL_LOSS_PLOTS}/{s}.png",
                caption=f"{CAPTIONS}/val_loss.rst",
                category="Validation loss",
                labels={"study": s},
            )
            for s in STUDIES
        ],
        vectors=[f"{VAL_LOSS_PLOTS}/{s}.svg" for s in STUDIES],
        points=f"{TABLES_DIR}/val_loss.csv",
        summary=f"{TABLES_DIR}/val_loss.json",
    log:
        f"{LOGS}/val_loss.log",
    benchmark:
        f"{BENCH}/val_loss.tsv"
    params:
        settings=rule_params.tables_settings(config),
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm val-loss --run {input:q} --settings {params.settings:q} --plots {output.plots:q} {output.vectors:q} --csv {output.points:q} --json {output.summary:q} 2> {log:q}"


# claims builds the configured model and a MusicGen-small-shaped transformers model (shapes only, to
# count their FLOPs): torch and transformers, hence the eval environment
rule claims:
    input:
        manifest=f"{RESULTS}/data/manifest.parquet",
        run=f"{CLAIMS_RUN}/done.json",
        # the text width and mean caption length of the counted forwards (ours and MusicGen-small's)
        text_meta=f"{TEXT_DIR}/meta.json",
        text_index=f"{TEXT_DIR}/index.parquet",
    output:
        [f"{TABLES_DIR}/claims.{ext}" for ext in ("csv", "md", "tex")],
    log:
        f"{LOGS}/claims.log",
    benchmark:
        f"{BENCH}/claims.tsv"
    params:
        settings=rule_params.claims_settings(config),
        run=f"{CLAIMS_EXP}={CLAIMS_RUN}",
        exp=CLAIMS_EXP,
        text=subpath(input.text_meta, parent=True),
        out_dir=subpath(output[0], parent=True),
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/eval.yaml"
    shell:
        "python -m ssmttm claims --settings {params.settings:q} --manifest {input.manifest:q} --runs {params.run:q} --experiment {params.exp:q} --text {params.text:q} --out-dir {params.out_dir:q} 2> {log:q}"


rule report_pages:
    input:
        tables=rules.tables.output,
        claims=rules.claims.output,
        audit_summary=f"{LICENSE_DIR}/summary.tsv",
        audit_attribution=f"{LICENSE_DIR}/ATTRIBUTION.md",
        # each trained model's done.json: its training split's licences, and the final checkpoint
        # (whose ATTRIBUTION.md lists that split) is complete once done.json exists
        runs=[f"{run_dir(exp, seed)}/done.json" for exp, seed in TRAINED_RUNS]
        + [refiner_done(name) for name in TRAINED_REFINERS],
        audio=[f"{GEN_DIR}/{exp}/seed{EXPERIMENTS[exp]['seeds'][0]}" for exp in EXPERIMENTS],
        prompts=PROMPTS_JSON,
    output:
        [
            report(
                f"{REPORT_DIR}/tables/{s}.html",
                caption=f"{CAPTIONS}/{STUDIES[s]['kind']}_table.rst",
                category="Tables",
                labels={"table": s},
            )
            for s in STUDIES
        ],
        report(
            f"{REPORT_DIR}/tables/claims.html",
            caption=f"{CAPTIONS}/claims.rst",
            category="Tables",
            labels={"table": "claims"},
        ),
        report(
            f"{REPORT_DIR}/licences.html",
            caption=f"{CAPTIONS}/licences.rst",
            category="Data",
            labels={"page": "training data per model and licence audit"},
        ),
        [
            report(
                f"{REPORT_DIR}/audio/{exp}.html",
                caption=f"{CAPTIONS}/audio.rst",
                category="Audio",
                labels={"experiment": exp},
            )
            for exp in EXPERIMENTS
        ],
    log:
        f"{LOGS}/report_pages.log",
    benchmark:
        f"{BENCH}/report_pages.tsv"
    params:
        tables=[f"{s}={TABLES_DIR}/{s}.md" for s in list(STUDIES) + ["claims"]],
        audio=rule_params.report_audio(EXPERIMENTS, gen_dir),
        settings=rule_params.stage_settings(config, "ssmttm.report.options:ReportPagesSettings", "evaluation"),
        out_dir=subpath(output[0], ancestor=2),  # results/report/tables/<table>.html -> results/report
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm report-pages --table {params.tables:q} --audio {params.audio:q} --run {input.runs:q} --prompts {input.prompts:q} --settings {params.settings:q} --licenses-summary {input.audit_summary:q} --licenses-attribution {input.audit_attribution:q} --out-dir {params.out_dir:q} 2> {log:q}"
