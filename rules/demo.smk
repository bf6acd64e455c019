# The offline demo mirror: a synthetic corpus in MTG-Jamendo's exact layout plus tiny weights of the
# real model classes. Only a config whose sources point here (config/demo.yaml) pulls it into the DAG.
DEMO = config["demo_mirror"]


rule demo_mirror:
    output:
        index=f"{DEMO['out_dir']}/MIRROR.json",
    log:
        f"{LOGS}/demo_mirror.log",
    benchmark:
        f"{BENCH}/demo_mirror.tsv"
    params:
        settings=rule_params.section_settings(config, "ssmttm.demo.mirror:MirrorSettings", "demo_mirror"),
    threads: 2
    resources:
        mem_mb=2000,
    conda:
        "../envs/demo.yaml"
    shell:
        "python -m ssmttm demo-mirror --settings {params.settings:q} --jobs {threads} 2> {log:q}"
