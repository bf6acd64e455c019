"""The ``train`` stage's settings: :class:`TrainConfig` and :func:`parse_args`.

Every recipe value is a config key: the shared ``train`` section (docs/reference.md §1) with an
experiment's ``train:`` overrides merged in, plus the experiment's own keys (variant, preset, kappa,
steps, checkpoints, model). Their defaults live in the config schema only
(rules/schemas/config.schema.yaml); the Snakemake rule passes the resolved section as ``--settings``
JSON and a person may type the same keys as flags (``--warmup-steps 20``), see ssmttm.settings. The
remaining fields are the run's inputs and outputs. No torch import here.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssmttm import settings


@dataclass(kw_only=True)
class TrainConfig:
    """One training run: the recipe (config keys) and the files it reads and writes."""

    SCHEMA_NODES = ("train", "experiments.*")
    FIXED: tuple[str, ...] = ()  # setting fields a subclass's trainer decides itself (not flags)

    # --- config keys (experiments.<name>) ---
    variant: str
    preset: str
    kappa: int
    steps: int
    checkpoints: list[int]
    model: dict[str, Any]
    # --- config keys (train, or experiments.<name>.train) ---
    lr: float
    weight_decay: float
    betas: list[float]
    eps: float
    warmup_steps: int
    min_lr_ratio: float
    grad_clip: float
    batch_size: int
    grad_accum: int
    max_frames: int | None
    label_smoothing: float
    cfg_dropout: float
    cfg_token_dropout: float
    dropout: float
    caption: str
    precision: str
    device: str
    num_workers: int
    log_every: int
    checkpoint_every: int
    keep_last: int
    val_max_batches: int
    # --- the run (wildcards, inputs, outputs) ---
    run_dir: str
    experiment: str
    seed: int
    tokens: list[str] = field(default_factory=list)
    text: str = ""
    licenses_json: str | None = None
    licenses_table: str | None = None
    manifest: str | None = None
    codec_weights: str | None = None
    text_encoder: str | None = None
    out: str | None = None

    def recipe(self) -> dict[str, Any]:
        keys = ("steps", "lr", "weight_decay", "betas", "eps", "warmup_steps", "min_lr_ratio", "grad_clip",
                "batch_size", "grad_accum", "max_frames", "label_smoothing", "cfg_dropout", "cfg_token_dropout",
                "dropout", "caption", "precision", "seed")
        return {k: getattr(self, k) for k in keys}


def parse_args(argv: list[str]) -> TrainConfig:
    """Flags -> TrainConfig; bad values fail here naming the flag and the config key."""
    p = common_parser("ssmttm train", "Train one LM variant: the paper recipe, resumable, DDP-ready (torchrun).",
                      TrainConfig)
    p.add_argument("--seed", type=int, default=0, help="the run's seed (one of experiments.<name>.seeds)")
    return finish(p, p.parse_args(argv), TrainConfig)


def common_parser(prog: str, description: str, cls) -> argparse.ArgumentParser:
    """The run's files (shared by the LM and the refiner trainers) plus one flag per setting of ``cls``."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    a = p.add_argument
    a("--run-dir", required=True, help="results/train/<experiment>/seed<S>")
    a("--experiment", required=True, help="the experiment's name (recorded in the checkpoints)")
    a("--tokens", required=True, nargs="+", help="token shard folders, results/tokens/<codec>/<shard> (exactly these "
      "are read)")
    a("--text", required=True, help="text store folder, results/text/<encoder>")
    a("--licenses-json", required=True, help="results/licenses/licenses.json (the audit's preset and allow-list)")
    a("--licenses-table", required=True, help="results/licenses/tracks.tsv: the licence of every track; the "
      "training split's tracks go into the model card and ATTRIBUTION.md")
    a("--manifest", required=True, help="results/data/manifest.parquet: its clips of each split are the ones "
      "trained and validated on (its sha256 goes into the card)")
    a("--codec-weights", default=None, help="codec weights receipt results/weights/<key>.json (default: the token "
      "store's meta)")
    a("--text-encoder", default=None, help="text encoder weights receipt results/weights/<key>.json (default: the "
      "text store's meta)")
    a("--out", required=True, help="done.json, written last")
    settings.add_arguments(p, cls)
    return p


PATH_ARGS = ("licenses_json", "licenses_table", "manifest", "codec_weights", "text_encoder")


def finish(p: argparse.ArgumentParser, args: argparse.Namespace, cls=TrainConfig, **fixed: Any):
    """Settings from the schema defaults, ``--settings`` and the flags (see ssmttm.settings), the run's files
    from their flags; ``fixed``: setting fields the trainer decides itself (e.g. the refiner's ``variant``)."""
    for name in PATH_ARGS:
        path = getattr(args, name)
        if path and not Path(path).is_file():
            p.error(f"--{name.replace('_', '-')} {path}: no such file")
    names = {f.name for f in settings.setting_fields(cls)}
    run = {k: v for k, v in vars(args).items() if k not in names and k != "settings"}
    return settings.from_args(p, cls, args, **run, **fixed)
