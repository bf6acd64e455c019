"""pyproject.toml's dependencies cover what the package imports, and agree with the lock files.

`pip install -e .` alone must give every CPU stage its libraries. The stages import their heavy
libraries inside functions (so ``python -m ssmttm --help`` stays fast), which an import at the top
of a test never sees: this walks every module's syntax tree, function bodies included, and maps each
third-party top-level import to its distribution. A new import without a dependency fails here.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ssmttm"

# import name -> distribution name, where they differ (or where the distribution ships several names)
DISTRIBUTION = {
    "yaml": "pyyaml",
    "dac": "descript-audio-codec",
    "audiotools": "descript-audiotools",
    "clap_module": "laion-clap",
    "laion_clap": "laion-clap",
    "sklearn": "scikit-learn",
    "PIL": "pillow",
    "yt_dlp": "yt-dlp",
    "huggingface_hub": "huggingface-hub",
    "frechet_audio_distance": "frechet-audio-distance",
    "mamba_ssm": "mamba-ssm",
    "causal_conv1d": "causal-conv1d",
    "google": "protobuf",
}
# submodules that live in another distribution than their top-level package
SUBMODULE_DISTRIBUTION = {
    "torch.utils.tensorboard": "tensorboard",
}
# libraries a stage needs that the package reaches only through another library's import
INDIRECT = {
    "timm": "hear21passt (ssmttm/eval/embedders/passt.py) builds PaSST from timm's modules",
}
# CUDA-only kernels: in the gpu extra, never in the CPU install
GPU_ONLY = {"mamba-ssm", "causal-conv1d"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def requirements(section: list[str]) -> dict[str, Requirement]:
    return {canonical(r.name): r for r in map(Requirement, section)}


def third_party_imports() -> dict[str, set[str]]:
    """distribution -> modules of the package that import it (module-level and function-local)."""
    stdlib = set(sys.stdlib_module_names)
    found: dict[str, set[str]] = {}

    def add(module: str, where: str) -> None:
        top = module.split(".")[0]
        if top in stdlib or top in ("ssmttm", "__future__"):
            return
        dist = next((d for prefix, d in SUBMODULE_DISTRIBUTION.items()
                     if module == prefix or module.startswith(prefix + ".")), None)
        found.setdefault(canonical(dist or DISTRIBUTION.get(top, top)), set()).add(where)
        if dist:  # the top-level package is needed too
            found.setdefault(canonical(DISTRIBUTION.get(top, top)), set()).add(where)

    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=where)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name, where)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                add(node.module, where)
    return found


def test_the_scan_sees_function_local_imports():
    found = third_party_imports()
    # imported only inside functions: the KL metric, the codec, the report, reference audio
    assert "ssmttm/eval/embedders/passt.py" in found["hear21passt"]
    assert "ssmttm/codec/dac.py" in found["descript-audio-codec"]
    assert "ssmttm/train/loop.py" in found["tensorboard"]
    assert "ssmttm/eval/reference.py" in found["yt-dlp"]


def test_dependencies_cover_every_import():
    project = pyproject()["project"]
    deps = requirements(project["dependencies"])
    gpu = requirements(project["optional-dependencies"]["gpu"])
    missing = {}
    for dist, where in sorted(third_party_imports().items()):
        if dist in GPU_ONLY:
            assert dist in gpu and dist not in deps, f"{dist}: CUDA-only, belongs in the gpu extra"
        elif dist not in deps:
            missing[dist] = sorted(where)
    for dist, why in INDIRECT.items():
        if dist not in deps:
            missing[dist] = [why]
    assert not missing, f"imported but not in pyproject.toml [project] dependencies: {missing}"


def _lock(name: str) -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements" / name).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith(("-", "http")):
            dist, version = line.split("==", 1)
            pins[canonical(dist.split("[")[0])] = Version(version.split(";")[0].strip())
    return pins


@pytest.mark.parametrize("lock", ["lock-cpu.txt", "lock-gpu.txt"])
def test_dependency_ranges_admit_the_locked_versions(lock):
    """The loose ranges must not exclude the tested pins (torch included: a range, not a pin)."""
    pins = _lock(lock)
    deps = requirements(pyproject()["project"]["dependencies"])
    assert "torch" in deps and not any(s.operator == "==" for s in deps["torch"].specifier)
    missing = sorted(d for d in deps if d not in pins)
    assert not missing, f"{lock} pins no version of {missing}"
    bad = {d: f"{r.specifier} excludes {pins[d]}" for d, r in deps.items()
           if not r.specifier.contains(pins[d], prereleases=True)}
    assert not bad, bad
