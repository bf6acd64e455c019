"""``trainer_state.pt``: everything besides the weights that exact resume needs. No pickle.

Saved with ``torch.save`` of tensors and plain Python values only, loaded with
``torch.load(weights_only=True)``:

    {"version": 1, "step": int, "epoch": int, "batch_in_epoch": int, "tokens_seen": int,
     "elapsed_s": float, "measured_per_token": float, "measured_total": float,
     "world_size": int, "optimizer": optimizer.state_dict(), "scheduler": WarmupCosine.state_dict(),
     "rng": [one per rank: {"python": [...], "numpy": {...}, "torch": ByteTensor,
                             "cuda": ByteTensor of the rank's current device}]}

``epoch``/``batch_in_epoch`` is the data position: the next micro-batch to read (see
ssmttm.train.data). The file is written inside the checkpoint folder, which
ssmttm.models.checkpoint.save_model renames into place only when complete; ``ckpt/last`` (a text
file naming that folder) is then replaced atomically, so a run killed at any moment resumes from
a complete checkpoint.
"""

from __future__ import annotations

import io as _io
import os
import random
from pathlib import Path

import numpy as np

from ssmttm import io

STATE_FILE = "trainer_state.pt"
LAST_FILE = "last"
STATE_VERSION = 1


def capture_rng(cuda: bool = False) -> dict:
    """RNG states of python, numpy and torch (and the current CUDA device when ``cuda``), as tensors
    and plain values (weights_only-loadable)."""
    import torch

    version, words, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    out = {
        "python": [int(version), torch.tensor(words, dtype=torch.int64), gauss],
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gauss": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if cuda and torch.cuda.is_available():
        # the current device only (each rank drives one GPU): get_rng_state_all would open a CUDA
        # context on every GPU of the node from every rank
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def restore_rng(state: dict) -> None:
    """Inverse of :func:`capture_rng`."""
    import torch

    version, words, gauss = state["python"]
    random.setstate((int(version), tuple(int(w) for w in words.tolist()), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def state_bytes(state: dict) -> bytes:
    """``torch.save`` of ``state`` into bytes (to be written inside an atomic checkpoint folder)."""
    import torch

    buf = _io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def load_state(path: str | os.PathLike) -> dict:
    """Load a trainer state with ``torch.load(weights_only=True)`` (no arbitrary unpickling)."""
    import pickle

    import torch

    from ssmttm.errors import CheckpointError

    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:  # corrupt, truncated, unsafe
        raise CheckpointError(f"{path}: not a readable trainer state ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); resume from an earlier "
                              "checkpoint (point ckpt/last at it) or start a new --run-dir") from exc
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise CheckpointError(f"{path}: not a trainer state of version {STATE_VERSION}")
    return state


def write_last(ckpt_root: str | os.PathLike, folder_name: str) -> None:
    """Point ``<ckpt_root>/last`` at ``folder_name`` (atomic replace)."""
    io.write_text(Path(ckpt_root) / LAST_FILE, folder_name + "\n")


def read_last(ckpt_root: str | os.PathLike) -> Path | None:
    """The checkpoint folder ``<ckpt_root>/last`` names, or None when there is none yet."""
    ckpt_root = Path(ckpt_root)
    last = ckpt_root / LAST_FILE
    if not last.is_file():
        return None
    name = last.read_text(encoding="utf-8").strip()
    folder = ckpt_root / name
    if not name or "/" in name or not (folder / STATE_FILE).is_file():
        raise ValueError(f"{last}: names {name!r}, which is not a complete checkpoint folder with {STATE_FILE}")
    return folder
