"""The SLURM profile: valid YAML, names only real rules, and its executor plugin is installed."""

import re

import yaml


def test_slurm_profile(repo):
    profile = yaml.safe_load((repo / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    rules_text = "\n".join(p.read_text() for p in (repo / "rules").glob("*.smk"))
    defined = set(re.findall(r"^rule (\w+):", rules_text, re.M))
    assert set(profile["set-resources"]) <= defined
    gpu_rules = set(re.findall(r"^rule (\w+):(?:(?!^rule ).)*?\n\s+gpu=", rules_text, re.M | re.S))
    assert {"train", "generate", "vocals", "tokenize"} <= gpu_rules  # the plugin maps `gpu` to --gpus
    import snakemake_executor_plugin_slurm  # noqa: F401  (pinned in requirements/lock-*.txt)
