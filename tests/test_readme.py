"""The README documents what exists: its quick start, its stage table and its commands."""

import re

from ssmttm.cli import STAGES


def test_quick_start_commands_exist(repo):
    readme = (repo / "README.md").read_text()
    makefile = (repo / "Makefile").read_text()
    assert "make demo" in readme and "make test" in readme
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (repo / ".ci" / "run").read_text()


def test_stage_table_names_real_rules_and_stages(repo):
    readme = (repo / "README.md").read_text()
    rules_text = "\n".join(p.read_text() for p in (repo / "rules").glob("*.smk"))
    defined = set(re.findall(r"^rule (\w+):", rules_text, re.M))
    table = [line for line in readme.splitlines() if line.startswith("| ") and "python -m ssmttm" in line]
    assert len(table) >= 9
    for line in table:
        rule = re.search(r"\| `(\w+)`", line).group(1)
        assert rule in defined, rule
    for stage in re.findall(r"python -m ssmttm ([a-z][a-z0-9-]+)", readme):
        assert stage in STAGES, stage
    for target in re.findall(r"snakemake --cores \w+ (\w+)\s", readme):
        assert target in defined, target
