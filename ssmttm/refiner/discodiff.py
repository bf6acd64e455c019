"""A DiscoDiff checkpoint behind the :class:`ssmttm.refiner.Refiner` interface (``--refiner-backend
discodiff``), for users who have one. DiscoDiff's weights were never released and nothing here
downloads anything; this adapter is written from DiscoDiff's public source and is NOT verified
against real DiscoDiff weights (none were available to this project).

What DiscoDiff is (its public implementation, a diffusers-style ``UNet1DConditionModel``): a
*secondary* model that denoises the 64 latent channels of DAC codebooks 2..9 given the 8-channel
latent of codebook 1, concatenated on the channel axis (72 input channels, 64 output channels),
with FLAN-T5-large encoder states (1024-d) as cross-attention context; latents are divided by a
normalisation factor (3.6) before diffusion; a discrete 1000-step noise schedule (diffusers'
schedulers), v-prediction by default. The two-stage system of the paper hands it the LM's codebook-1
codes; we turn them into the codebook-1 latent with the codec's codebook vectors (DAC
``decode_code``), which is the quantised latent, not the encoder's continuous one DiscoDiff was
trained on: expect some mismatch.

Layout of ``--refiner PATH`` (a folder you prepare once):

- ``discodiff.ckpt``: a Lightning checkpoint readable with ``torch.load(weights_only=True)`` whose
  ``state_dict`` holds the secondary model under ``model_secondary.`` (or a ``.safetensors`` file of
  that state dict). A checkpoint that pickles other objects is refused: re-save its
  ``state_dict`` in your own trusted environment;
- ``discodiff.json``: ``{"unet_class": one of :data:`UNET_CLASSES` (default
  "models.unet.unet_1d_condition:UNet1DConditionModel", importable from your DiscoDiff checkout; no
  other callable can be named),
  "unet_config": {constructor keyword arguments of the secondary model}, "text_encoder": path to a
  FLAN-T5-large folder or weights receipt, "normalize": 3.6, "prediction_type": "v_prediction" |
  "epsilon" | "sample", "num_train_timesteps": 1000, "beta_schedule": "linear" |
  "squaredcos_cap_v2", "beta_start": 0.0001, "beta_end": 0.02, "n_codebooks": 9,
  "codebook_dim": 8, "codebook_tables": path of a [K, 1024, D] .npy of the codec's codebook vectors}``.

Sampling: the timesteps ``linspace(T - 1, 0, steps)`` with the DDIM update (``eta`` 1 for the
``ddpm`` sampler, 0 for ``ddim``) on the discrete schedule, classifier-free guidance on the model
output with the empty prompt's T5 states in one batch of 2B.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from pathlib import Path

import numpy as np

from ssmttm import io
from ssmttm.refiner import Refiner, RefinerError
from ssmttm.rng import make_generators
from ssmttm.text.store import pad

# The classes a discodiff.json may name: the JSON is data, so it selects from this list and never names
# an arbitrary callable (a "module:function" there would otherwise be imported and called with
# unet_config before any weight is read). DiscoDiff's secondary model, from its own checkout.
UNET_CLASSES = ("models.unet.unet_1d_condition:UNet1DConditionModel",)

DEFAULTS = {
    "unet_class": UNET_CLASSES[0],
    "unet_config": {},
    "text_encoder": None,
    "normalize": 3.6,  # DAC_NORMALIZE_FACTOR in DiscoDiff's source
    "prediction_type": "v_prediction",
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "n_codebooks": 9,
    "codebook_dim": 8,
    "codebook_tables": None,
    "max_text_length": 256,
}
PREFIX = "model_secondary."


def alphas_cumprod(cfg: dict):
    """The discrete schedule's cumulative alpha products [T] (diffusers' 'linear' / 'squaredcos_cap_v2')."""
    import torch

    T = int(cfg["num_train_timesteps"])
    if cfg["beta_schedule"] == "linear":
        betas = torch.linspace(cfg["beta_start"], cfg["beta_end"], T, dtype=torch.float64)
    elif cfg["beta_schedule"] == "squaredcos_cap_v2":
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        betas = torch.tensor([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)], dtype=torch.float64)
    else:
        raise RefinerError(f"discodiff: beta_schedule {cfg['beta_schedule']!r} is not supported "
                           "(linear, squaredcos_cap_v2)")
    return torch.cumprod(1 - betas, 0)


def read_state(path: Path) -> dict:
    """The secondary model's state dict from a weights-only Lightning checkpoint or a safetensors file."""
    import pickle

    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise RefinerError(f"{path}: refused: the checkpoint pickles objects other than tensors (loaded with "
                               f"weights_only=True); re-save its state_dict in a trusted environment ({exc})") from exc
        except Exception as exc:
            raise RefinerError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
        state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
        if not isinstance(state, dict):
            raise RefinerError(f"{path}: expected a dict with a 'state_dict'")
    sec = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    if not sec and not any(k.startswith("model_primary.") for k in state):
        sec = dict(state)  # a bare state dict of the secondary model
    if not sec:
        raise RefinerError(f"{path}: no '{PREFIX}*' weights (the secondary model) in the checkpoint")
    return sec


class DiscoDiffRefiner(Refiner):
    name = "discodiff"

    def __init__(self, folder: str | os.PathLike, device: str = "cpu"):
        import torch

        folder = Path(folder)
        ckpt = next((folder / n for n in ("discodiff.ckpt", "discodiff.safetensors") if (folder / n).is_file()), None)
        if ckpt is None or not (folder / "discodiff.json").is_file():
            raise RefinerError(f"--refiner {folder}: a DiscoDiff folder needs discodiff.ckpt (or .safetensors) and "
                               "discodiff.json (see ssmttm/refiner/discodiff.py); DiscoDiff weights are not "
                               "downloadable, bring your own")
        cfg = {**DEFAULTS, **json.loads((folder / "discodiff.json").read_text(encoding="utf-8"))}
        unknown = sorted(set(cfg) - set(DEFAULTS))
        if unknown:
            raise RefinerError(f"{folder / 'discodiff.json'}: unknown keys {unknown} (known: {sorted(DEFAULTS)})")
        for key in ("text_encoder", "codebook_tables"):
            if not cfg[key]:
                raise RefinerError(f"{folder / 'discodiff.json'}: {key!r} is required")
        self.cfg, self.device, self.folder = cfg, device, folder
        self.n_codebooks, self.cond_codebooks = int(cfg["n_codebooks"]), 1
        if cfg["unet_class"] not in UNET_CLASSES:
            raise RefinerError(f"{folder / 'discodiff.json'}: unet_class {cfg['unet_class']!r} is not one of the "
                               f"classes a refiner folder may name {list(UNET_CLASSES)} (ssmttm/refiner/discodiff.py "
                               "UNET_CLASSES)")
        if not isinstance(cfg["unet_config"], dict):
            raise RefinerError(f"{folder / 'discodiff.json'}: unet_config must be a JSON object of keyword arguments")
        module, _, cls = cfg["unet_class"].partition(":")
        try:
            unet_cls = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as exc:
            raise RefinerError(f"discodiff: cannot import {cfg['unet_class']} ({exc}); put your DiscoDiff checkout on "
                               "PYTHONPATH or set unet_class in discodiff.json") from exc
        self.unet = unet_cls(**cfg["unet_config"]).to(device).eval()
        missing, unexpected = self.unet.load_state_dict(read_state(ckpt), strict=False)
        if missing or unexpected:
            raise RefinerError(f"{ckpt}: weights do not fit {cfg['unet_class']}({cfg['unet_config']}) (missing "
                               f"{missing[:5]}, unexpected {unexpected[:5]})")
        tables = np.load(cfg["codebook_tables"], allow_pickle=False)
        self.tables = torch.from_numpy(np.asarray(tables, dtype=np.float32)).to(device)
        if tuple(self.tables.shape[::2]) != (self.n_codebooks, int(cfg["codebook_dim"])):
            raise RefinerError(f"{cfg['codebook_tables']}: codebook tables of shape {tuple(self.tables.shape)}, "
                               f"expected [{self.n_codebooks}, N, {cfg['codebook_dim']}]")
        self.acp = alphas_cumprod(cfg).to(device)
        from ssmttm.text.encoder import load_t5_encoder

        self.t5, self.tokenizer = load_t5_encoder(cfg["text_encoder"], device)
        self.sha256 = io.sha256_file(ckpt)

    def check_codec(self, codec) -> None:
        super().check_codec(codec)
        import torch

        if not torch.allclose(codec.codebook_tables().to(self.tables.device), self.tables):
            raise RefinerError(f"{self.cfg['codebook_tables']}: not the codebook tables of codec {codec.weights_path}")

    def encode(self, prompts: list[str]):
        """FLAN-T5-large states of ``prompts`` + "" -> (text [2B, L, D], mask [2B, L])."""
        from ssmttm.text.embed import tokenize
        from ssmttm.text.encoder import forward

        texts = list(prompts) + [""] * len(prompts)
        ids, _ = tokenize(self.tokenizer, texts, int(self.cfg["max_text_length"]))
        text, mask = pad(forward(self.t5, ids, self.tokenizer.pad_token_id))
        return text.to(self.device), mask.to(self.device)

    def refine(self, codes, states, uncond, prompts, sampler, seeds):
        import torch
        import torch.nn.functional as F

        from ssmttm.refiner.diffusion import SAMPLERS

        c = torch.as_tensor(codes, dtype=torch.int64).to(self.device)
        if c.shape[1] != 1:
            raise RefinerError(f"DiscoDiff completes codebook 1 only, got codes of {c.shape[1]} codebooks")
        B, _, T = c.shape
        D, K, norm = int(self.cfg["codebook_dim"]), self.n_codebooks, float(self.cfg["normalize"])
        primary = self.tables[0][c[:, 0]].transpose(1, 2) / norm  # [B, 8, T]
        text, mask = self.encode(prompts)
        gens = make_generators(seeds, self.device)
        x = torch.stack([torch.randn((K - 1) * D, T, generator=g, device=self.device) for g in gens])
        eta = SAMPLERS[sampler.sampler]
        n_train = int(self.cfg["num_train_timesteps"])
        ts = torch.linspace(n_train - 1, 0, sampler.steps, device=self.device).round().long()
        with torch.no_grad():
            for i, t in enumerate(ts):
                inp = torch.cat([torch.cat([primary, x], 1)] * 2)
                out = self.unet(inp, t.expand(2 * B), encoder_hidden_states=text, encoder_attention_mask=mask)
                out = getattr(out, "sample", out).float()
                out = out[B:] + sampler.cfg_scale * (out[:B] - out[B:])
                a_t = self.acp[t]
                a, s = a_t.sqrt(), (1 - a_t).sqrt()
                kind = self.cfg["prediction_type"]
                x0 = a * x - s * out if kind == "v_prediction" else (out if kind == "sample" else (x - s * out) / a)
                eps = (x - a * x0) / s
                if i == len(ts) - 1:
                    x = x0
                    break
                a_p = self.acp[ts[i + 1]]
                sd = eta * ((1 - a_p) / (1 - a_t) * (1 - a_t / a_p)).clamp_min(0).sqrt()
                x = a_p.sqrt() * x0 + (1 - a_p - sd ** 2).clamp_min(0).sqrt() * eps
                if eta > 0:
                    x = x + sd * torch.stack([torch.randn(x.shape[1:], generator=g, device=self.device) for g in gens])
        lat = x * norm
        rest = []
        for j in range(1, K):  # cosine nearest neighbour, as DAC's decode_latents
            z = F.normalize(lat[:, (j - 1) * D:j * D].transpose(1, 2), dim=-1)
            rest.append((z @ F.normalize(self.tables[j], dim=-1).T).argmax(-1))
        return torch.cat([c, torch.stack(rest, 1)], 1).cpu()

    def describe(self) -> dict:
        return {"refiner": str(self.folder), "refiner_backend": self.name, "refiner_sha256": self.sha256,
                "refiner_step": None, "refiner_experiment": "discodiff"}


def load(path: str | os.PathLike, device: str = "cpu") -> DiscoDiffRefiner:
    """Registry factory for ``discodiff``."""
    from ssmttm.codec import resolve_device

    return DiscoDiffRefiner(path, resolve_device(device))
