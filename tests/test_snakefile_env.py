"""Jobs run in the project's environment whatever the user's shell has on PATH."""

import os
import subprocess
import sys
from pathlib import Path


def test_jobs_use_the_interpreter_that_runs_snakemake(repo, tmp_path):
    # A shell with no virtualenv activated: only the system folders on PATH. The rule's bare
    # `python -m ssmttm params` must still find the package (it is only in the venv).
    snakemake = Path(sys.executable).parent / "snakemake"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/bin:/bin"
    proc = subprocess.run(
        [str(snakemake), "--cores", "1", "results/models/params.tsv", "--snakefile", str(repo / "Snakefile"),
         "--directory", str(tmp_path), "--configfile", str(repo / "config" / "demo.yaml")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    log = tmp_path / "results" / "logs" / "model_params.log"
    assert proc.returncode == 0, proc.stderr[-3000:] + (log.read_text() if log.exists() else "")
    assert "prefix-simba" in (tmp_path / "results" / "models" / "params.tsv").read_text()
