"""The rules are declarations: lint-clean, snakefmt-formatted, helpers only in rules/common.smk."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _smk_files(repo):
    return [repo / "Snakefile", *sorted((repo / "rules").glob("*.smk"))]


@pytest.mark.parametrize("configs", [[], ["config/demo.yaml"]], ids=["paper", "demo"])
def test_snakemake_lint_is_clean(repo, tmp_path, configs):
    extra = ["--configfile", *[str(repo / c) for c in configs]] if configs else []
    r = subprocess.run([str(BIN / "snakemake"), "--lint", "--cores", "1", "--snakefile", str(repo / "Snakefile"),
                        "--directory", str(tmp_path), *extra], capture_output=True, text=True, cwd=tmp_path,
                       timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Lints for" not in out, out[-6000:]


def test_rules_are_snakefmt_formatted(repo):
    r = subprocess.run([str(BIN / "snakefmt"), "--check", "--diff", *[str(p) for p in _smk_files(repo)]],
                       capture_output=True, text=True, cwd=repo, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]


def test_no_functions_outside_common_smk(repo):
    """Logic lives in the package; rules/common.smk alone holds the input functions that wire config to rules."""
    bad = []
    for path in _smk_files(repo):
        if path.name == "common.smk":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.match(r"\s*def\s", code) or re.search(r"\blambda\b", code):
                bad.append(f"{path.relative_to(repo)}:{n}: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_common_smk_is_only_helpers(repo):
    """common.smk defines functions and constants; no rules (each stage's rules are in its own file)."""
    text = (repo / "rules" / "common.smk").read_text()
    assert not re.search(r"^\s*(rule|checkpoint)\s+\w+\s*:", text, re.M)


def test_every_shell_value_is_quoted(repo):
    """Every {input.x}/{output.x}/{params.x} in a shell command is shell-quoted ({x:q}); bare wildcards are
    allowed only because their constraints admit no shell metacharacters."""
    bad = []
    for path in _smk_files(repo):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for m in re.finditer(r"\{(input|output|params|log|resources)(\.[A-Za-z_]\w*)?\}", line):
                bad.append(f"{path.relative_to(repo)}:{n}: {m.group(0)}")
    assert not bad, "unquoted values in shell commands:\n" + "\n".join(bad)
