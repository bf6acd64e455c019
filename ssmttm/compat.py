"""Make torchaudio / torchvision importable beside a torch build they were not compiled for.

On the project's CPU machines torch is the CPU wheel 2.13.0, while PyPI's newest torchaudio
(2.11.0) and torchvision (0.28.0) are CUDA builds compiled against other torch versions: their
compiled libraries fail to load. descript-audio-codec (via audiotools) imports torchaudio at import
time, and laion-clap / frechet-audio-distance / transformers import torchvision. We use neither
library's compiled operators (audio I/O is soundfile + soxr), so:

* torchaudio: ``python -m ssmttm.compat --fix-install`` (run by ``make``) moves its compiled
  libraries aside when they cannot be loaded; torchaudio's pure-Python parts then import cleanly.
* torchvision: :func:`prepare_torchvision` declares the two operator schemas whose fake kernels
  torchvision registers at import (``torchvision::nms``, ``torchvision::qnms``) when its own
  extension cannot load. Every loader that imports a torchvision user calls it first.

With a consistent CUDA install (torch 2.9.1 + torchvision 0.24.1 + torchaudio 2.9.1, see
requirements/lock-gpu.txt) the libraries load and both steps are no-ops.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
from pathlib import Path

_TORCHVISION_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_state: dict = {}


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _loads(lib: Path) -> bool:
    import torch

    try:
        torch.ops.load_library(str(lib))
        return True
    except (OSError, RuntimeError):
        return False


def prepare_torchvision() -> str:
    """Call before importing torchvision (or anything that imports it). Returns what it did."""
    if "torchvision" in _state:
        return _state["torchvision"]
    pkg = _package_dir("torchvision")
    if pkg is None:
        result = "absent"
    elif "torchvision" in sys.modules:
        result = "already imported"
    else:
        libs = sorted(pkg.glob("_C*.so")) + sorted(pkg.glob("_C*.pyd"))
        if libs and _loads(libs[0]):
            result = "native"
        else:
            import torch

            lib = torch.library.Library("torchvision", "DEF")  # kept alive in _state
            for schema in _TORCHVISION_SCHEMAS.values():
                lib.define(schema)
            _state["torchvision_lib"] = lib
            result = "schemas declared (compiled ops unavailable)"
    _state["torchvision"] = result
    return result


def fix_torchaudio_install(dry_run: bool = False) -> list[str]:
    """Move torchaudio's compiled libraries aside when they cannot load beside this torch."""
    pkg = _package_dir("torchaudio")
    if pkg is None:
        return []
    libdir = pkg / "lib"
    libs = sorted(libdir.glob("*.so"))
    if not libs:
        return []
    main = next((p for p in libs if p.name.startswith("_torchaudio")), libs[0])
    if _loads(main):
        return []
    aside = pkg / "lib-disabled"
    moved = []
    for lib in libs:
        moved.append(lib.name)
        if not dry_run:
            aside.mkdir(exist_ok=True)
            shutil.move(str(lib), str(aside / lib.name))
    return moved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssmttm.compat", description=__doc__.split("\n\n")[0])
    p.add_argument("--fix-install", action="store_true", help="disable torchaudio libs that cannot load")
    p.add_argument("--check", action="store_true", help="import every audio/model library once")
    args = p.parse_args(argv)
    if args.fix_install:
        moved = fix_torchaudio_install()
        print("torchaudio: " + (f"disabled incompatible compiled libraries {moved}" if moved else "ok"))
    if args.check:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        print("torchvision:", prepare_torchvision())
        for mod in ("pyarrow", "torchaudio", "torchvision", "dac", "demucs.htdemucs", "transformers", "laion_clap",
                    "frechet_audio_distance"):
            __import__(mod)
            print(f"import {mod}: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
