"""The weights cache as loaders see it: receipt -> checked local path, offline hub, safe loading.

The ``weights`` stage (:mod:`ssmttm.weights`) fetches every third-party checkpoint once into
``<dir>/<name>/`` and writes a receipt ``<dir>/<name>.json``. Loaders never download: they call
:func:`local_path` (or :func:`resolve`), which returns the local path from the receipt or raises
:class:`MissingWeightError` saying how to fetch it, run inside :func:`offline_env` so no hub library
reaches the network, and read torch files with :func:`load_torch_file` (``weights_only=True``).

This module sits below every stage that loads a model (data, text, tokens, eval, generate): it
imports only :mod:`ssmttm.io` and :mod:`ssmttm.errors`, never the fetching machinery.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

from ssmttm import io
from ssmttm.errors import SsmttmError

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


class MissingWeightError(SsmttmError, FileNotFoundError):
    """A loader asked for a weight that has not been fetched; the message says how to fetch it."""


def receipt_for(weights_dir: str | os.PathLike, name: str) -> Path:
    return Path(weights_dir) / f"{name}.json"


def _how_to_fetch(name: str, weights_dir: Path) -> str:
    return (
        f"weight {name!r} is not available: it belongs in {weights_dir.as_posix()}/{name}/ "
        f"(receipt {weights_dir.as_posix()}/{name}.json). Fetch it with\n"
        f"  snakemake --cores 1 results/weights/{name}.json\n"
        f"or\n"
        f"  python -m ssmttm weights --name {name} --source <weights.models.{name}.source> "
        f"--licence <weights.models.{name}.licence> --dir {weights_dir.as_posix()} "
        f"--receipt {weights_dir.as_posix()}/{name}.json"
    )


def resolve(receipt_path_or_dir: str | os.PathLike, name: str) -> Path:
    """Local path of weight ``name`` from its receipt (a receipt file, or the weights folder).

    Checks that the path exists and, for a file, that its size matches the receipt; raises
    :class:`MissingWeightError` (naming the weight, its folder and the fetch command) otherwise.
    """
    arg = Path(receipt_path_or_dir)
    receipt = receipt_for(arg, name) if arg.is_dir() or arg.suffix != ".json" else arg
    weights_dir = receipt.parent

    def missing(why: str) -> MissingWeightError:
        return MissingWeightError(f"{_how_to_fetch(name, weights_dir)}\n({why})")

    if not receipt.is_file():
        raise missing(f"no receipt at {receipt}")
    rec = io.read_json(receipt)
    if rec.get("name") != name:
        raise missing(f"{receipt} is the receipt of {rec.get('name')!r}")
    path = Path(rec.get("path") or "")
    if not rec.get("path") or not path.exists():
        raise missing(f"the receipt points to {path}, which is gone")
    if rec.get("kind") == "file" and "bytes" in rec and path.stat().st_size != rec["bytes"]:
        raise missing(f"{path} has {path.stat().st_size} bytes, the receipt says {rec['bytes']}")
    return path


def local_path(path_or_receipt: str | os.PathLike) -> Path:
    """A loader's model argument: a weights receipt (``results/weights/<name>.json``, resolved and
    checked) or a plain local file/folder (returned as is, for users who bring their own)."""
    arg = Path(path_or_receipt)
    if arg.suffix == ".json":
        if not arg.is_file():
            name = arg.stem
            raise MissingWeightError(f"{_how_to_fetch(name, arg.parent)}\n(no receipt at {arg})")
        return resolve(arg, io.read_json(arg).get("name") or arg.stem)
    if not arg.exists():
        raise MissingWeightError(f"model path {arg} does not exist (give a weights receipt or a local checkpoint)")
    return arg


@contextlib.contextmanager
def offline_env() -> Iterator[None]:
    """Switch Hugging Face hub access off (HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1) for the block.

    huggingface_hub reads the variable once at import, so an already imported module is switched
    too; everything is restored on exit.
    """
    saved = {k: os.environ.get(k) for k in OFFLINE_VARS}
    hub = sys.modules.get("huggingface_hub.constants")
    saved_hub = getattr(hub, "HF_HUB_OFFLINE", None)
    for k in OFFLINE_VARS:
        os.environ[k] = "1"
    if hub is not None:
        hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if hub is not None:
            hub.HF_HUB_OFFLINE = saved_hub


def load_torch_file(path: str | os.PathLike, error: type[Exception], label: str, safe_globals: list | None = None):
    """``torch.load(path, weights_only=True)`` on CPU, with errors that name the model and the file.

    A file that pickles anything but tensors and plain containers is refused (``weights_only``);
    ``safe_globals`` admits extra data-only reconstructors for this one load (e.g. numpy scalars in a
    checkpoint's training metadata). Raises ``error`` for a missing, refused or unreadable file.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise error(f"{label}: weights file {path} not found (fetch it with the `weights` stage)")
    try:
        with torch.serialization.safe_globals(safe_globals or []):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise error(f"{label}: {path} refused: it pickles objects other than tensors and plain containers "
                    f"(loaded with weights_only=True): {str(exc)[:300]}") from exc
    except Exception as exc:  # zip/format errors: RuntimeError, EOFError, ...
        raise error(f"{label}: {path} is not a readable PyTorch weights file ({type(exc).__name__}: "
                    f"{str(exc)[:300]})") from exc
