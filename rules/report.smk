# Tables, curves, claims and the HTML report (`snakemake --report report.html` after a run).
STUDIES = config["studies"]
TABLES_DIR = f"{RESULTS}/tables"
EVAL_PLOTS = f"{RESULTS}/plots/eval"
REPORT_DIR = f"{RESULTS}/report"
CURVE_STUDIES = [s for s, st in STUDIES.items() if st["kind"] == "curve"]
CLAIMS_EXP = EVAL["claims_experiment"] or next(
    (STUDIES[s]["experiments"][0] for s in CURVE_STUDIES), next(iter(EXPERIMENTS))
)
CAPTIONS = "report"  # rules/report/*.rst, relative to this file


def _caption(name):
    return f"{CAPTIONS}/{name}.rst"


rule tables:
    input:
        SCORE_FILES,
    output:
        [f"{TABLES_DIR}/{s}.{ext}" for s in STUDIES for ext in ("csv", "md", "tex")],
        f"{TABLES_DIR}/all_scores.csv",
        [
            report(
                f"{EVAL_PLOTS}/{s}_vs_{x}.png",
                caption=_caption(f"curves_vs_{x}"),
                category="Curves",
                labels={"study": s, "x axis": x},
            )
            for s in CURVE_STUDIES
            for x in ("steps", "flops")
        ],
        [f"{EVAL_PLOTS}/{s}_vs_{x}.svg" for s in CURVE_STUDIES for x in ("steps", "flops")],
    log:
        f"{LOGS}/tables.log",
    benchmark:
        f"{BENCH}/tables.tsv"
    params:
        studies=shlex.quote(_json.dumps(STUDIES, sort_keys=True)),
        out_dir=TABLES_DIR,
        plots_dir=EVAL_PLOTS,
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm tables --scores {input} --studies {params.studies} --out-dir {params.out_dir:q} --plots-dir {params.plots_dir:q} 2> {log:q}"


rule claims:
    input:
        manifest=f"{RESULTS}/data/manifest.parquet",
        run=f"{run_dir(CLAIMS_EXP, EXPERIMENTS[CLAIMS_EXP]['seeds'][0])}/done.json",
    output:
        [f"{TABLES_DIR}/claims.{ext}" for ext in ("csv", "md", "tex")],
    log:
        f"{LOGS}/claims.log",
    benchmark:
        f"{BENCH}/claims.tsv"
    params:
        config=lambda w: shlex.quote(
            _json.dumps({"experiments": {CLAIMS_EXP: EXPERIMENTS[CLAIMS_EXP]}, "train": TRAIN}, sort_keys=True)
        ),
        run=f"{CLAIMS_EXP}={run_dir(CLAIMS_EXP, EXPERIMENTS[CLAIMS_EXP]['seeds'][0])}",
        exp=CLAIMS_EXP,
        out_dir=TABLES_DIR,
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm claims --config-json {params.config} --manifest {input.manifest:q} --runs {params.run:q} --experiment {params.exp} --out-dir {params.out_dir:q} 2> {log:q}"


def _report_audio_sets():
    """The last generated checkpoint of each experiment's first seed (clips shown in the report)."""
    return {exp: _generated_sets(exp)[len(_generated_sets(exp)) // len(e["seeds"]) - 1]
            for exp, e in EXPERIMENTS.items()}


rule report_pages:
    input:
        tables=rules.tables.output,
        claims=rules.claims.output,
        licences=[f"{LICENSE_DIR}/summary.tsv", f"{LICENSE_DIR}/ATTRIBUTION.md"],
        audio=[f"{GEN_DIR}/{exp}/seed{EXPERIMENTS[exp]['seeds'][0]}" for exp in EXPERIMENTS],
        prompts=PROMPTS_JSON,
    output:
        [
            report(f"{REPORT_DIR}/tables/{s}.html", caption=_caption(STUDIES[s]["kind"] + "_table"),
                   category="Tables", labels={"table": s})
            for s in STUDIES
        ],
        report(f"{REPORT_DIR}/tables/claims.html", caption=_caption("claims"), category="Tables",
               labels={"table": "claims"}),
        report(f"{REPORT_DIR}/licences.html", caption=_caption("licences"), category="Data",
               labels={"page": "licence audit and attribution"}),
        [
            report(f"{REPORT_DIR}/audio/{exp}.html", caption=_caption("audio"), category="Audio",
                   labels={"experiment": exp})
            for exp in EXPERIMENTS
        ],
    log:
        f"{LOGS}/report_pages.log",
    benchmark:
        f"{BENCH}/report_pages.tsv"
    params:
        tables=" ".join(f"--table {s}={TABLES_DIR}/{s}.md" for s in list(STUDIES) + ["claims"]),
        audio=" ".join(f"--audio {exp}={shlex.quote(d)}" for exp, d in _report_audio_sets().items()),
        clips=EVAL["report_clips"],
        out_dir=REPORT_DIR,
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m ssmttm report-pages {params.tables} {params.audio} --prompts {input.prompts:q} --clips {params.clips} --licences-dir {LICENSE_DIR} --out-dir {params.out_dir:q} 2> {log:q}"
