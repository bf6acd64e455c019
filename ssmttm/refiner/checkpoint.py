"""Refiner checkpoints trained here: the LM's checkpoint layout with ``refiner_config.json``.

A folder holds ``model.safetensors`` (weights and the codec's codebook tables), ``refiner_config.json``
(:class:`RefinerConfig`), ``meta.json`` (step, codec and text encoder sha256, data provenance) and the
trainer's state, written by :func:`ssmttm.models.checkpoint.save_model`. :func:`load` is the
``ssmttm`` backend of the refiner registry.
"""

from __future__ import annotations

import os
from pathlib import Path

from ssmttm import io
from ssmttm.errors import CheckpointError
from ssmttm.models.checkpoint import MODEL_FILE, load_weights, read_meta, resolve_checkpoint
from ssmttm.refiner import Refiner, RefinerError
from ssmttm.rng import make_generators
from ssmttm.text.store import pad

CONFIG_FILE = "refiner_config.json"


def load_net(ckpt_dir: str | os.PathLike, device=None):
    """(RefinerNet in eval mode, meta) of a checkpoint folder, weights loaded strictly."""
    from ssmttm.refiner.config import RefinerConfig
    from ssmttm.refiner.model import build_refiner

    cfg_dict, meta = read_meta(ckpt_dir, CONFIG_FILE)
    return load_weights(build_refiner(RefinerConfig.from_dict(cfg_dict), device=device), ckpt_dir, device), meta


def resolve(path: str | os.PathLike) -> Path:
    """A refiner checkpoint folder from a folder, a run folder (ckpt/last) or its done.json."""
    p = Path(path)
    if p.is_file() and p.name == "done.json":
        p = p.parent
    try:
        return resolve_checkpoint(p, label="refiner")
    except CheckpointError as exc:
        raise RefinerError(str(exc)) from exc


class TrainedRefiner(Refiner):
    """:class:`ssmttm.refiner.model.RefinerNet` + the v-prediction sampler of :mod:`ssmttm.refiner.diffusion`."""

    name = "ssmttm"

    def __init__(self, ckpt_dir: str | os.PathLike, device: str = "cpu"):
        self.ckpt_dir = resolve(ckpt_dir)
        self.device = device
        self.net, self.meta = load_net(self.ckpt_dir, device)
        self.n_codebooks = self.net.cfg.n_codebooks
        self.cond_codebooks = self.net.cfg.cond_codebooks
        self.sha256 = io.sha256_file(self.ckpt_dir / MODEL_FILE)

    def check_codec(self, codec) -> None:
        super().check_codec(codec)
        want = (self.meta.get("codec") or {}).get("sha256")
        if want and want != codec.weights_sha256:
            raise RefinerError(f"refiner {self.ckpt_dir} was trained on codec weights sha256 {want[:12]}, this codec "
                               f"({codec.weights_path}) has {codec.weights_sha256[:12]}")

    def refine(self, codes, states, uncond, prompts, sampler, seeds):
        import torch

        from ssmttm.refiner.diffusion import sample

        c = torch.as_tensor(codes, dtype=torch.int64).to(self.device)
        B = c.shape[0]
        if c.shape[1] != self.cond_codebooks:
            raise RefinerError(f"refiner {self.ckpt_dir} completes kappa={self.cond_codebooks} codebook(s), got "
                               f"codes of {c.shape[1]}")
        if states and states[0].shape[-1] != self.net.cfg.text_dim:
            raise RefinerError(f"refiner {self.ckpt_dir} expects {self.net.cfg.text_dim}-d text states, got "
                               f"{states[0].shape[-1]}-d")
        text, mask = pad(list(states) + [uncond] * B)
        text, mask = text.to(self.device), mask.to(self.device)
        x0 = sample(self.net, c, text[:B], mask[:B], text[B:], mask[B:], sampler,
                    make_generators(seeds, self.device))
        rest = self.net.quantize(self.net.denormalise(x0))
        return torch.cat([c, rest], dim=1).cpu()

    def describe(self) -> dict:
        return {"refiner": str(self.ckpt_dir), "refiner_backend": self.name, "refiner_sha256": self.sha256,
                "refiner_step": self.meta.get("step"), "refiner_experiment": self.meta.get("experiment")}


def load(path: str | os.PathLike, device: str = "cpu") -> TrainedRefiner:
    """Registry factory for ``ssmttm``."""
    from ssmttm.codec import resolve_device

    return TrainedRefiner(path, resolve_device(device))
