"""The ``train`` stage's flags: :class:`TrainConfig` (one field per flag) and :func:`parse_args`.

Defaults are the paper recipe (docs/reference.md §1); see ssmttm.train.loop for what each does.
No torch import here.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    """Every flag of the ``train`` stage (see :func:`parse_args` for meanings)."""

    run_dir: str
    experiment: str
    tokens: str
    text: str
    variant: str
    preset: str
    kappa: int = 1
    seed: int = 0
    steps: int = 100_000
    checkpoint_every: int = 500
    checkpoints: list[int] = field(default_factory=list)
    keep_last: int = 3
    lr: float = 1e-4
    weight_decay: float = 0.02
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-7
    warmup: int = 500
    min_lr_ratio: float = 0.005
    grad_clip: float = 1.0
    batch_size: int = 4
    grad_accum: int = 32
    max_frames: int | None = 2584
    label_smoothing: float = 0.1
    cfg_dropout: float = 0.1
    cfg_token_dropout: float = 0.1
    dropout: float = 0.3
    caption: str = "random"
    precision: str = "auto"
    device: str = "auto"
    num_workers: int = 0
    log_every: int = 10
    val_max_batches: int = 0
    licenses: str | None = None
    attribution: str | None = None
    manifest: str | None = None
    codec_receipt: str | None = None
    text_receipt: str | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)
    out: str | None = None

    def recipe(self) -> dict[str, Any]:
        keys = ("steps", "lr", "weight_decay", "betas", "eps", "warmup", "min_lr_ratio", "grad_clip", "batch_size",
                "grad_accum", "max_frames", "label_smoothing", "cfg_dropout", "cfg_token_dropout", "dropout",
                "caption", "precision", "seed")
        return {k: getattr(self, k) for k in keys}


def parse_args(argv: list[str]) -> TrainConfig:
    """Flags -> TrainConfig; bad values fail here naming the flag."""
    from ssmttm.models import VARIANTS
    from ssmttm.models.config import PRESETS

    p = common_parser("ssmttm train", "Train one LM variant: the paper recipe, resumable, DDP-ready (torchrun).")
    a = p.add_argument
    a("--variant", required=True, choices=list(VARIANTS))
    a("--preset", required=True, choices=list(PRESETS))
    a("--kappa", type=int, default=1, help="codebooks modelled (1 = two-stage system)")
    a("--label-smoothing", type=float, default=0.1)
    return finish(p, p.parse_args(argv), TrainConfig)


def common_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The flags every trainer shares (run folder, stores, recipe, provenance); the LM and the refiner
    add their model flags."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    a = p.add_argument
    a("--run-dir", required=True, help="results/train/<experiment>/seed<S>")
    a("--experiment", required=True)
    a("--tokens", required=True, help="token store root, results/tokens/<codec>")
    a("--text", required=True, help="text store folder, results/text/<encoder>")
    a("--seed", type=int, default=0)
    a("--steps", type=int, required=True, help="optimizer steps")
    a("--checkpoint-every", type=int, default=500)
    a("--checkpoints", type=int, nargs="*", default=[], help="extra steps to checkpoint (kept forever)")
    a("--keep-last", type=int, default=3, help="periodic checkpoints kept (0 = all)")
    a("--lr", type=float, default=1e-4)
    a("--weight-decay", type=float, default=0.02)
    a("--betas", type=float, nargs=2, default=[0.9, 0.999])
    a("--eps", type=float, default=1e-7)
    a("--warmup", type=int, default=500)
    a("--min-lr-ratio", type=float, default=0.005)
    a("--grad-clip", type=float, default=1.0, help="max grad norm (<= 0: no clipping, norm still logged)")
    a("--batch-size", type=int, default=4, help="sequences per micro-batch per rank")
    a("--grad-accum", type=int, default=32, help="micro-batches per optimizer step")
    a("--max-frames", type=int, default=2584, help="random crop length in frames (0 = whole clips)")
    a("--cfg-dropout", type=float, default=0.1, help="p of replacing a prompt by the empty prompt")
    a("--cfg-token-dropout", type=float, default=0.1, help="p of masking out one text position")
    a("--dropout", type=float, default=0.3, help="model dropout")
    a("--caption", default="random", choices=["random", "primary"], help="which of a clip's captions")
    a("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="auto: bf16 autocast on CUDA, fp32 on CPU")
    a("--device", default="auto", help="auto, cpu, cuda, cuda:N (torchrun: LOCAL_RANK decides)")
    a("--num-workers", type=int, default=0)
    a("--log-every", type=int, default=10)
    a("--val-max-batches", type=int, default=0, help="cap on validation micro-batches per rank (0 = all)")
    a("--licenses", required=True, help="results/licenses/licenses.json (copied into every model card)")
    a("--attribution", required=True, help="results/licenses/ATTRIBUTION.md (copied next to every checkpoint)")
    a("--manifest", required=True, help="results/data/manifest.parquet (its sha256 goes into the card)")
    a("--codec-receipt", default=None, help="results/weights/<key>.json (default: the token store's meta)")
    a("--text-receipt", default=None, help="results/weights/<key>.json (default: the text store's meta)")
    a("--model-overrides", default="{}", help='JSON object of model config fields, e.g. \'{"d_model": 64}\'')
    a("--out", required=True, help="done.json, written last")
    return p


def finish(p: argparse.ArgumentParser, args: argparse.Namespace, cls=TrainConfig, **fixed: Any):
    """Validate parsed flags (errors name the flag) and build ``cls`` (TrainConfig or a subclass);
    ``fixed``: fields the trainer sets itself (e.g. the refiner's ``variant``)."""
    try:
        overrides = json.loads(args.model_overrides)
    except json.JSONDecodeError as exc:
        p.error(f"--model-overrides: not JSON ({exc})")
    if not isinstance(overrides, dict):
        p.error("--model-overrides: must be a JSON object")
    for flag, val, lo in (("--steps", args.steps, 1), ("--checkpoint-every", args.checkpoint_every, 1),
                          ("--batch-size", args.batch_size, 1), ("--grad-accum", args.grad_accum, 1),
                          ("--log-every", args.log_every, 1), ("--kappa", args.kappa, 1), ("--warmup", args.warmup, 0),
                          ("--max-frames", args.max_frames, 0), ("--num-workers", args.num_workers, 0)):
        if val < lo:
            p.error(f"{flag} {val}: must be >= {lo}")
    for flag, val in (("--cfg-dropout", args.cfg_dropout), ("--cfg-token-dropout", args.cfg_token_dropout),
                      ("--label-smoothing", getattr(args, "label_smoothing", 0.0))):
        if not 0.0 <= val < 1.0:
            p.error(f"{flag} {val}: must be in [0, 1)")
    for flag in ("licenses", "attribution", "manifest", "codec_receipt", "text_receipt"):
        path = getattr(args, flag)
        if path and not Path(path).is_file():
            p.error(f"--{flag.replace('_', '-')} {path}: no such file")
    kw = {k: v for k, v in vars(args).items() if k != "model_overrides"}
    kw["betas"] = tuple(kw["betas"])
    kw["max_frames"] = kw["max_frames"] or None
    return cls(model_overrides=overrides, **kw, **fixed)
