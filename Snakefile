# ssmttm: text-to-music with state-space models, end to end (arXiv 2601.14786).
#   snakemake --cores N                                  the paper reproduction (config.yaml)
#   snakemake --cores 2 --configfile config/demo.yaml    the same DAG on the offline demo corpus
# After a run, `snakemake --report report.html` (same --configfile) writes the HTML report.
# Stages live in rules/<stage>.smk; their logic lives in the ssmttm package.
import os
import sys

from snakemake.utils import min_version

from ssmttm import config as ssmttm_config
from ssmttm import rule_params

min_version("9.0")

# Every rule runs `python -m ssmttm ...` with the interpreter that runs Snakemake first on PATH (the
# project's virtualenv when started as .venv/bin/snakemake or `make demo`), whatever the user's shell
# has activated; see ssmttm.rule_params.use_this_interpreter.
rule_params.use_this_interpreter(sys.executable)


configfile: os.path.join(workflow.basedir, "config.yaml")


report: "rules/report/workflow.rst"


# Fails before any job, naming every wrong key (rules/schemas/config.schema.yaml).
ssmttm_config.validate(config)


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/weights.smk"
include: "rules/fetch.smk"
include: "rules/licenses.smk"
include: "rules/select.smk"
include: "rules/segment.smk"
include: "rules/vocals.smk"
include: "rules/captions.smk"
include: "rules/manifest.smk"
include: "rules/tokens.smk"
include: "rules/models.smk"
include: "rules/train.smk"
include: "rules/refiner.smk"
include: "rules/generate.smk"
include: "rules/plots.smk"
include: "rules/eval.smk"
include: "rules/listening.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        rules.data.input,
        rules.licenses.input,
        rules.tokens.input,
        rules.model_params.output,
        rules.train_all.input,
        rules.generate_all.input,
        rules.loss_curves.output,
        rules.val_loss.output,
        rules.evaluate_all.input,
        rules.tables.output,
        rules.claims.output,
        rules.report_pages.output,
        rules.listening.input,
