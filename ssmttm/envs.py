"""``python -m ssmttm envs``: write envs/<stage>.yaml (for ``snakemake --sdm conda``) from a lock file.

Each stage lists the distributions it imports; their dependency closure is read from the installed
packages' metadata and pinned with the lock file's versions, so the conda environments and the
virtualenv never drift apart (tests/test_envs.py regenerates and compares). ``python -m ssmttm``
runs from the repository root, so the package itself needs no install inside these environments.

The GPU stages' environment (``train``: the rules train, train_refiner and generate) also carries
the Mamba2 CUDA kernels at the versions of requirements/gpu-kernels.txt, as the upstream prebuilt
wheels for the lock's torch (see KERNEL_WHEELS for why not the PyPI source packages).
"""

from __future__ import annotations

import argparse
import re
from importlib import metadata
from pathlib import Path

from ssmttm import io

BASE = ["numpy", "pandas", "pyarrow", "pyyaml", "jsonschema", "soundfile", "soxr", "tqdm", "requests"]
STAGES: dict[str, list[str]] = {
    "data": BASE + ["huggingface-hub", "matplotlib", "markdown"],
    "vocals": BASE + ["torch", "demucs", "lameenc"],
    "captions": BASE + ["torch", "transformers", "tokenizers", "safetensors", "huggingface-hub"],
    "tokens": BASE + ["torch", "descript-audio-codec", "transformers", "tokenizers", "safetensors"],
    "models": BASE + ["torch", "safetensors"],
    "train": BASE + ["torch", "safetensors", "tensorboard", "descript-audio-codec", "transformers", "tokenizers"],
    # evaluation: reference audio (yt-dlp), codec re-synthesis, metric models, librosa attributes
    "eval": BASE + ["torch", "descript-audio-codec", "transformers", "tokenizers", "safetensors", "librosa",
                    "laion-clap", "hear21passt", "timm", "frechet-audio-distance", "yt-dlp", "markdown"],
    # listening tests: the kit (loudness), the rating app, the MOS tables and plot
    "listen": BASE + ["flask", "pyloudnorm", "scipy", "matplotlib", "markdown"],
    # the demo mirror builds tiny weights of every model class the demo loads
    "demo": BASE + ["torch", "demucs", "descript-audio-codec", "transformers", "tokenizers", "safetensors",
                    "laion-clap", "hear21passt", "timm"],
}
PYTHON = "3.11"
# Conda-forge packages a stage needs that PyPI does not provide: yt-dlp hands MusicCaps audio over
# as m4a/webm, which only ffmpeg decodes (ssmttm/eval/reference.py).
CONDA_EXTRAS: dict[str, list[str]] = {"eval": ["ffmpeg=7.1"]}
# Installer tooling that pip freeze leaves out and conda provides.
TOOLING = {"pip", "setuptools", "wheel"}

# --- CUDA kernels for the Mamba2 mixer (mamba-ssm, causal-conv1d) -------------------------------------
# Stages whose rules build the LM and so pick mamba_ssm's kernels when CUDA is present
# (ssmttm.models.mamba2.make_mamba2, backend "auto"): train, train_refiner and generate all use
# envs/train.yaml. The other stages never import mamba_ssm (parameter counts use the PyTorch mixer).
KERNEL_STAGES = ("train",)
KERNELS_FILE = "requirements/gpu-kernels.txt"
# PyPI has only source packages of both, and they cannot be built by the pip that conda runs for an
# env file: that pip builds in isolation (``--no-build-isolation`` is not allowed in the requirements
# file conda hands it), where mamba-ssm's setup.py finds no torch at all and causal-conv1d's build
# requirements pull the newest torch, so it fetches or compiles kernels for that torch, which fail to
# load against the lock's. Their setup.py, run without isolation (``make setup-gpu``), downloads a
# prebuilt wheel from the project's GitHub release, named after the version, the CUDA major of torch's
# build, torch major.minor, the C++11 ABI flag and the Python tag. These lines install exactly those
# wheels, for the lock's torch: PyPI torch 2.9 is a CUDA 12 build (12.8; the kernels publish one wheel
# per CUDA major) with the C++11 ABI (every PyPI torch since 2.7). No compiler or nvcc is needed.
KERNEL_WHEELS = {
    "causal-conv1d": "https://github.com/Dao-AILab/causal-conv1d/releases/download/v{version}/"
                     "causal_conv1d-{version}+cu{cuda}torch{torch}cxx11abi{abi}-{py}-{py}-linux_x86_64.whl",
    "mamba-ssm": "https://github.com/state-spaces/mamba/releases/download/v{version}/"
                 "mamba_ssm-{version}+cu{cuda}torch{torch}cxx11abi{abi}-{py}-{py}-linux_x86_64.whl",
}
KERNEL_CUDA_MAJOR = "12"
KERNEL_CXX11_ABI = "TRUE"
# Only Linux x86_64 gets them (the wheels above); elsewhere the env still resolves and ssmttm runs its
# pure-PyTorch Mamba2, as it does whenever mamba_ssm is missing.
KERNEL_MARKER = 'sys_platform == "linux" and platform_machine == "x86_64"'


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: str | Path) -> dict[str, str]:
    pins = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_norm(name)] = version.strip()
    return pins


def closure(roots: list[str]) -> set[str]:
    """Normalised names of ``roots`` and everything they require (markers evaluated, no extras)."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [_norm(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for raw in reqs:
            req = Requirement(raw)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            todo.append(_norm(req.name))
    return seen


def kernel_requirements(kernels: dict[str, str], torch_version: str) -> list[str]:
    """pip lines for the prebuilt kernel wheels matching ``torch_version`` (one per KERNEL_WHEELS
    entry, at the version ``kernels`` pins), each limited to Linux x86_64 by an environment marker."""
    missing = [n for n in KERNEL_WHEELS if n not in kernels]
    if missing:
        raise SystemExit(f"envs: {KERNELS_FILE} does not pin {', '.join(missing)}")
    major, minor = torch_version.split("+")[0].split(".")[:2]
    py = "cp" + PYTHON.replace(".", "")
    return [f"{name} @ " + url.format(version=kernels[name], cuda=KERNEL_CUDA_MAJOR, torch=f"{major}.{minor}",
                                      abi=KERNEL_CXX11_ABI, py=py) + f" ; {KERNEL_MARKER}"
            for name, url in sorted(KERNEL_WHEELS.items())]


def render(stage: str, pins: dict[str, str], lock_name: str, kernels: dict[str, str] | None = None) -> str:
    """envs/<stage>.yaml; ``kernels`` (the pins of KERNELS_FILE) is required for KERNEL_STAGES."""
    names = sorted(closure(STAGES[stage]) - TOOLING)
    missing = [n for n in names if n not in pins]
    if missing:
        raise SystemExit(f"envs: {stage}: not pinned in {lock_name}: {', '.join(missing)}")
    extra: list[str] = []
    head = [
        f"# Generated by `python -m ssmttm envs` from {lock_name}"
        + (f" and {KERNELS_FILE}" if stage in KERNEL_STAGES else "") + "; do not edit by hand.",
        f"# Environment for the {stage} stage(s), used with `snakemake --sdm conda`.",
    ]
    if stage in KERNEL_STAGES:
        if kernels is None:
            raise SystemExit(f"envs: {stage}: needs the kernel pins of {KERNELS_FILE}")
        extra = kernel_requirements(kernels, pins["torch"])
        head += [
            "# Last in the pip list: the Mamba2 CUDA kernels, as the upstream prebuilt wheels for this torch",
            "# (Linux x86_64; pip cannot build them here, see ssmttm/envs.py). Their own dependencies are",
            "# resolved by pip. Elsewhere, or to compile them instead, run inside the activated env (needs nvcc):",
            f"#   pip install --no-build-isolation -r {KERNELS_FILE}",
        ]
    lines = [
        *head,
        f"name: ssmttm-{stage}",
        "channels:",
        "  - conda-forge",
        "  - nodefaults",
        "dependencies:",
        f"  - python={PYTHON}",
        *(f"  - {pkg}" for pkg in CONDA_EXTRAS.get(stage, [])),
        "  - pip",
        "  - pip:",
    ]
    lines += [f"      - {n}=={pins[n]}" for n in names]
    lines += [f"      - {r}" for r in extra]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ssmttm envs", description=__doc__.split("\n\n")[0])
    p.add_argument("--lock", type=Path, default=Path("requirements/lock-gpu.txt"))
    p.add_argument("--kernels", type=Path, default=Path(KERNELS_FILE),
                   help="pins of the CUDA kernels for the GPU stages' environment")
    p.add_argument("--out-dir", type=Path, default=Path("envs"))
    a = p.parse_args(argv)
    pins = read_lock(a.lock)
    kernels = read_lock(a.kernels)
    for stage in STAGES:
        io.write_text(a.out_dir / f"{stage}.yaml", render(stage, pins, a.lock.as_posix(), kernels))
        print(f"wrote {a.out_dir / (stage + '.yaml')}")
    return 0
