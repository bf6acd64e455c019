# ssmttm: text-to-music with state-space models, end to end (arXiv 2601.14786).
#   snakemake --cores N                                  the paper reproduction (config.yaml)
#   snakemake --cores 2 --configfile config/demo.yaml    the same DAG on the offline demo corpus
# After a run, `snakemake --report report.html` (same --configfile) writes the HTML report.
# Stages live in rules/<stage>.smk; their logic lives in the ssmttm package.
import os
import sys

from snakemake.utils import min_version

from ssmttm import config as ssmttm_config

min_version("9.0")

# Every rule runs `python -m ssmttm ...`. Put the interpreter that runs Snakemake (the project's
# virtualenv when started as .venv/bin/snakemake or `make demo`) first on PATH, so jobs import the
# same environment whatever the user's shell has activated. With --sdm conda, each job's own
# environment is activated on top of this and still comes first.
os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])


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
        rules.evaluate_all.input,
        rules.tables.output,
        rules.claims.output,
        rules.report_pages.output,
