import importlib
import subprocess
import sys

from ssmttm.cli import STAGES


def test_every_stage_resolves():
    for name, (module, func, _) in STAGES.items():
        mod = importlib.import_module(module)
        assert callable(getattr(mod, func)), name


def test_package_import_is_light(repo):
    """Importing the package, its CLI registry and config must not import torch or model libraries."""
    code = (
        "import sys, ssmttm, ssmttm.cli, ssmttm.config, ssmttm.io, ssmttm.audio;"
        "heavy = [m for m in ('torch', 'transformers', 'demucs', 'dac', 'laion_clap') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo)
    assert r.returncode == 0, r.stdout + r.stderr


def test_help_lists_stages(repo):
    r = subprocess.run([sys.executable, "-m", "ssmttm", "--help"], capture_output=True, text=True, cwd=repo)
    assert r.returncode == 0
    for name in ("fetch-shard", "licenses", "manifest"):
        assert name in r.stdout
