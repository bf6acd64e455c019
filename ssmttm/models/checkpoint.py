"""LM checkpoints: safetensors weights + the LMConfig as JSON + free-form metadata. No pickle.

Layout of a checkpoint folder (written atomically: a temporary folder renamed into place):
``model.safetensors`` (the LM state_dict), ``lm_config.json`` (LMConfig.to_dict()) and
``meta.json`` (step, codec, text encoder, data manifest hash, licence summary, ...). Training
state (optimizer, scheduler, RNG, data position) lives beside it in ``trainer_state.pt`` and is
the trainer's business (loaded with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ssmttm import io
from ssmttm.errors import CheckpointError

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "lm_config.json"
META_FILE = "meta.json"


def save_model(out_dir: str | os.PathLike, lm, meta: dict[str, Any] | None = None,
               extra_files: dict[str, bytes] | None = None, config_file: str = CONFIG_FILE) -> Path:
    """Write ``lm`` (its weights and ``lm.cfg`` as ``config_file``) and ``meta`` to ``out_dir``
    atomically; returns out_dir. Any module with a ``cfg.to_dict()`` (the refiner too) fits."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = io.temp_dir(out_dir.parent, prefix=f".{out_dir.name}.")  # umask permissions, not 0700
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in lm.state_dict().items()}
        # safetensors writes its file 0600 whatever the umask; atomic_path hands it over with umask permissions
        with io.atomic_path(tmp / MODEL_FILE) as t:
            save_file(state, str(t))
        io.write_json(tmp / config_file, lm.cfg.to_dict())
        io.write_json(tmp / META_FILE, meta or {})
        for name, data in (extra_files or {}).items():
            with io.atomic_open(tmp / name, "wb") as f:
                f.write(data)
        io.replace_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
    return out_dir


def resolve_checkpoint(path: str | os.PathLike, label: str = "--checkpoint") -> Path:
    """A checkpoint folder from ``path``: the folder itself (holds model.safetensors), or a run
    folder / its ``ckpt/`` folder, whose ``ckpt/last`` text file names the newest checkpoint.
    Raises :class:`CheckpointError` starting with ``label`` (the flag or role ``path`` came from)."""
    p = Path(path)
    if (p / MODEL_FILE).is_file():
        return p
    for last in (p / "ckpt" / "last", p / "last"):
        if last.is_file():
            name = last.read_text(encoding="utf-8").strip()
            for cand in (Path(name), last.parent / name, last.parent / Path(name).name):
                if name and (cand / MODEL_FILE).is_file():
                    return cand
            raise CheckpointError(f"{label} {p}: {last} names {name!r}, which is not a checkpoint folder")
    raise CheckpointError(f"{label} {p}: not a checkpoint folder (no {MODEL_FILE}) and no ckpt/last file")


def read_meta(ckpt_dir: str | os.PathLike, config_file: str = CONFIG_FILE) -> tuple[dict, dict]:
    """(config dict, meta dict) of a checkpoint, without loading weights."""
    ckpt_dir = Path(ckpt_dir)
    for name in (MODEL_FILE, config_file, META_FILE):
        if not (ckpt_dir / name).is_file():
            raise CheckpointError(f"{ckpt_dir}: not a checkpoint (missing {name})")
    with open(ckpt_dir / config_file, encoding="utf-8") as f:
        cfg = json.load(f)
    with open(ckpt_dir / META_FILE, encoding="utf-8") as f:
        meta = json.load(f)
    return cfg, meta


def load_model(ckpt_dir: str | os.PathLike, device=None, kappa: int | None = None):
    """Rebuild the LM of a checkpoint and load its weights strictly: returns (lm in eval mode, meta).

    ``kappa``: the number of codebooks the caller will feed; a checkpoint trained for another κ
    fails here with both numbers named, not later with a shape error.
    """
    from ssmttm.models import build_lm
    from ssmttm.models.config import LMConfig

    ckpt_dir = Path(ckpt_dir)
    cfg_dict, meta = read_meta(ckpt_dir)
    cfg = LMConfig.from_dict(cfg_dict)
    if kappa is not None and kappa != cfg.n_codebooks:
        raise CheckpointError(
            f"{ckpt_dir}: trained for kappa={cfg.n_codebooks} codebooks, but kappa={kappa} was requested"
        )
    return load_weights(build_lm(cfg, device=device), ckpt_dir, device), meta


def load_weights(module, ckpt_dir: str | os.PathLike, device=None):
    """Load the folder's model.safetensors into ``module`` strictly (CheckpointError naming the folder
    and the mismatching keys); returns the module in eval mode."""
    from safetensors.torch import load_file

    state = load_file(str(Path(ckpt_dir) / MODEL_FILE), device=str(device or "cpu"))
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{ckpt_dir}: weights do not match the config (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]})")
    return module.eval()
