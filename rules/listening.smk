# Blind listening tests (docs/listening.md): per test (listening.tests.<name>) a kit of loudness-matched
# clips under anonymous ids with every rater's order (served by `python -m ssmttm listen serve --test
# <name>` or exported static), then the MOS tables from the ratings people (or the demo's scripted
# raters) gave. The key that maps ids to systems stays outside the served kit/ folder.


wildcard_constraints:
    test="|".join(re.escape(name) for name in LISTEN_TESTS) or "(?!x)x",


rule listening_kit:
    input:
        unpack(listening_kit_inputs),
    output:
        kit=directory(f"{LISTEN_DIR}/{{test}}/kit"),
        key=f"{LISTEN_DIR}/{{test}}/key.json",
        summary=f"{LISTEN_DIR}/{{test}}/kit.json",
    log:
        f"{LOGS}/listening/{{test}}_kit.log",
    benchmark:
        f"{BENCH}/listening/{{test}}_kit.tsv"
    params:
        settings=rule_params.listening_settings(config, "KitSettings"),
        systems=listening_system_args,
        out_dir=subpath(output.key, parent=True),
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/listen.yaml"
    shell:
        "python -m ssmttm listening-kit --test {wildcards.test:q} --settings {params.settings:q} --system {params.systems:q} --out-dir {params.out_dir:q} 2> {log:q}"


rule listening_scripted:
    # ratings.source scripted (the offline demo): seeded raters that play and rate every clip of their
    # order through the rating app itself; the last one fails the attention checks
    input:
        kit=rules.listening_kit.output.kit,
        key=rules.listening_kit.output.key,
    output:
        f"{LISTEN_DIR}/{{test}}/scripted.sqlite",
    log:
        f"{LOGS}/listening/{{test}}_scripted.log",
    benchmark:
        f"{BENCH}/listening/{{test}}_scripted.tsv"
    params:
        raters=listening_scripted_raters,
        seed=listening_seed,
        test_dir=subpath(input.key, parent=True),
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/listen.yaml"
    shell:
        "python -m ssmttm listen simulate --test-dir {params.test_dir:q} --raters {params.raters:q} --seed {params.seed:q} --db {output:q} 2> {log:q}"


rule listening_results:
    input:
        kit=rules.listening_kit.output.kit,
        key=rules.listening_kit.output.key,
        ratings=listening_ratings_input,
    output:
        [f"{LISTEN_DIR}/{{test}}/results/{name}.{ext}" for name in ("mos", "pairwise") for ext in ("csv", "md", "tex")],
        summary=f"{LISTEN_DIR}/{{test}}/results/summary.json",
        page=report(
            f"{LISTEN_DIR}/{{test}}/results/mos.html",
            caption="report/listening.rst",
            category="Listening tests",
            labels={"test": "{test}", "figure": "MOS table"},
        ),
        plot=report(
            f"{LISTEN_DIR}/{{test}}/results/mos.png",
            caption="report/listening.rst",
            category="Listening tests",
            labels={"test": "{test}", "figure": "MOS plot"},
        ),
    log:
        f"{LOGS}/listening/{{test}}_results.log",
    benchmark:
        f"{BENCH}/listening/{{test}}_results.tsv"
    params:
        settings=rule_params.listening_settings(config),
        ratings=listening_ratings_args,
        test_dir=subpath(input.key, parent=True),
        out_dir=subpath(output.summary, parent=True),
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/listen.yaml"
    shell:
        "python -m ssmttm listening-results --test {wildcards.test:q} --settings {params.settings:q} --test-dir {params.test_dir:q} {params.ratings:q} --out-dir {params.out_dir:q} 2> {log:q}"


rule listening:
    # every enabled test's kit, and its MOS tables once it has ratings (scripted ones at once)
    input:
        [f"{LISTEN_DIR}/{test}/kit" for test in LISTEN_TESTS],
        [f"{LISTEN_DIR}/{test}/results/summary.json" for test in LISTEN_TESTS if listening_ready(test)],
