"""``python -m ssmttm import-checkpoint``: an LM checkpoint from another codebase -> a checkpoint folder of ours.

    python -m ssmttm import-checkpoint --format ssm-ttm CKPT CONFIG --text-encoder T5 --out DIR \\
        [--codec-weights W] [--settings '{"codec": "dac", "max_length": 256}' | --codec dac --max-length 256]

``CKPT`` is the authors' Lightning checkpoint and ``CONFIG`` the ``config.json`` beside it (formats:
:data:`FORMATS`, each a module with ``convert`` / ``preset_of``; ``ssm-ttm`` is
:mod:`ssmttm.models.ssm_ttm`). ``DIR`` becomes a checkpoint folder like a trained run's
``ckpt/step_N`` (``model.safetensors``, ``lm_config.json`` with the format's ``compat`` settings,
``meta.json``), which ``generate --checkpoint DIR`` and :func:`ssmttm.models.checkpoint.load_model` read.

The checkpoint is read with ``torch.load(weights_only=True)`` only: a file that pickles anything but
tensors and plain containers is refused (CheckpointError naming it, exit 2), never unpickled.

Text encoder: ``--text-encoder`` is the FLAN-T5-base of this pipeline (weights receipt or folder; its
tokenizer and config are needed in any case). The checkpoint's own ``text_encoder.`` tensors are
compared with it: equal (the authors froze FLAN-T5-base), meta.json records that encoder and
generation takes the same ``--text-encoder``; different, they are written with its tokenizer and
config to ``DIR/text_encoder/``, which meta.json records and generation must then be given.

meta.json also records the codec (``--codec-weights``: the key and sha256 generation checks; without
it only the codec's registry name), the ``max_length`` prompts are truncated at (config
``text.max_length``: the authors never truncate, so any length above the longest prompt repeats
them), the checkpoint's step, the source files with their sha256, and the sizes' preset if one matches.

In the pipeline (``experiments.<name>.import``, rule ``import_checkpoint``) ``CKPT`` and ``CONFIG`` are
weights receipts of the manifest (so both are sha256-pinned), ``DIR`` is the run's
``ckpt/step_<steps>`` and ``--done`` writes the run's ``done.json`` (what every later stage waits for:
the experiment, seed, the checkpoint's own step and the import record), so the imported model is
generated, evaluated and tabled like a trained run. It has no training logs, so it has no loss curves.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ssmttm import io, logs, settings
from ssmttm.errors import CheckpointError, SsmttmError

log = logging.getLogger("ssmttm.importer")

# --format name -> module with convert(state, config, label, config_label) -> (LMConfig, LM state, T5 state),
# preset_of(LMConfig), SOURCE_URL; imported only when used
FORMATS: dict[str, str] = {"ssm-ttm": "ssmttm.models.ssm_ttm"}
# keys of the config's model section that the checkpoint's own hyper_parameters must agree on
MODEL_KEYS = ("layers", "vocab_size", "codec_layer", "d_model", "d_state")


@dataclass(kw_only=True)
class ImportSettings:
    """The config keys an imported checkpoint records (defaults in the schema)."""

    SCHEMA_NODES = ("tokens", "text")

    codec: str
    max_length: int


def _read_config(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"config {path}: not a readable JSON file ({exc})") from exc
    if not isinstance(cfg, dict):
        raise CheckpointError(f"config {path}: expected a JSON object")
    return cfg


def read_checkpoint(path: Path) -> tuple[dict, dict]:
    """(state_dict, the rest of a Lightning checkpoint) read with weights_only=True; a plain state
    dict (no ``state_dict`` entry) is accepted as well."""
    import torch

    from ssmttm.weight_cache import load_torch_file

    try:
        obj = load_torch_file(path, CheckpointError, "import-checkpoint")
    except CheckpointError as exc:
        raise CheckpointError(
            f"{exc}\n(only tensors and plain containers are read. If the file is yours or you trust it, "
            f"re-save its weights alone, torch.save({{'state_dict': ckpt['state_dict']}}, 'weights.ckpt'), "
            f"and import that)") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path}: holds a {type(obj).__name__}, not a dict")
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"checkpoint {path}: no state_dict")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint {path}: state_dict entry {bad[0]!r} is not a tensor")
    return state, {k: v for k, v in obj.items() if k != "state_dict"} if "state_dict" in obj else {}


def _check_hyper_parameters(extra: dict, config: dict, ckpt: Path, cfg_path: Path) -> None:
    """The checkpoint's saved hyper_parameters (Lightning save_hyperparameters) must agree with CONFIG."""
    hp = extra.get("hyper_parameters")
    saved = hp.get("config", {}).get("model") if isinstance(hp, dict) and isinstance(hp.get("config"), dict) else None
    given = config.get("model")
    if not isinstance(saved, dict) or not isinstance(given, dict):
        return
    for key in MODEL_KEYS:
        if key in saved and key in given and saved[key] != given[key]:
            raise CheckpointError(f"config {cfg_path}: model.{key} = {given[key]!r}, but checkpoint {ckpt} was "
                                  f"saved with {key} = {saved[key]!r}; give the config.json of this checkpoint")


def _weights_identity(weights: str | os.PathLike) -> tuple[str, str]:
    """(key, sha256) of a weights receipt (its name and pinned sha256) or of a plain file."""
    from ssmttm.weight_cache import local_path

    arg = Path(weights)
    path = local_path(arg)
    if arg.suffix == ".json":
        rec = io.read_json(arg)
        return str(rec.get("name") or arg.stem), str(rec.get("sha256") or io.sha256_file(path))
    return arg.stem, io.sha256_file(path)


def text_encoder_files(t5_state: dict, text_encoder: str | os.PathLike, text_dim: int,
                       label: str) -> tuple[dict[str, str], dict[str, bytes], str]:
    """Compare the checkpoint's T5 tensors with ``text_encoder``. Returns (identity {key, sha256} for
    meta.json, files to write under the checkpoint folder, what was found)."""
    import torch

    from ssmttm.text.embed import encoder_identity
    from ssmttm.text.encoder import load_t5_encoder

    model, tokenizer = load_t5_encoder(text_encoder, device="cpu", dtype="float32")
    if int(model.config.d_model) != text_dim:
        raise CheckpointError(f"--text-encoder {text_encoder} gives {model.config.d_model}-d states, the LM of "
                              f"{label} projects {text_dim}-d text")
    key, sha = encoder_identity(text_encoder)
    if not t5_state:
        log.warning("%s holds no text_encoder weights; using --text-encoder %s as is", label, text_encoder)
        return {"key": key, "sha256": sha}, {}, "not in the checkpoint: --text-encoder used"
    ref = model.state_dict()
    unexpected = sorted(set(t5_state) - set(ref))
    if unexpected:
        raise CheckpointError(f"{label}: text_encoder.{unexpected[0]} has no counterpart in --text-encoder "
                              f"{text_encoder} (another T5 architecture)")
    given_ptrs = {ref[k].data_ptr() for k in t5_state}
    absent = [k for k in ref if k not in t5_state and ref[k].data_ptr() not in given_ptrs]  # tied copies are fine
    if absent:
        raise CheckpointError(f"{label}: missing key 'text_encoder.{absent[0]}'")
    for k, v in t5_state.items():
        if tuple(v.shape) != tuple(ref[k].shape):
            raise CheckpointError(f"{label}: text_encoder.{k} has shape {list(v.shape)}, --text-encoder "
                                  f"{text_encoder} has {list(ref[k].shape)}")
    if all(torch.equal(v.to(torch.float32), ref[k].to(torch.float32)) for k, v in t5_state.items()):
        return {"key": key, "sha256": sha}, {}, "equal to --text-encoder"
    model.load_state_dict({k: v.to(torch.float32) for k, v in t5_state.items()}, strict=False)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        files = {f"text_encoder/{p.relative_to(tmp).as_posix()}": p.read_bytes()
                 for p in sorted(Path(tmp).rglob("*")) if p.is_file()}
        sha = io.sha256_tree(tmp)
    log.warning("%s: its text encoder differs from --text-encoder %s; written to text_encoder/ in the checkpoint "
                "folder: generate with --text-encoder <DIR>/text_encoder", label, text_encoder)
    return {"key": "text_encoder", "sha256": sha}, files, "differs from --text-encoder: written to text_encoder/"


def import_checkpoint(fmt: str, ckpt: str | os.PathLike, config: str | os.PathLike, out: str | os.PathLike,
                      text_encoder: str | os.PathLike, s: ImportSettings,
                      codec_weights: str | os.PathLike | None = None) -> Path:
    """Convert checkpoint ``ckpt`` (format ``fmt``, its config.json ``config``) into the checkpoint
    folder ``out`` (written atomically); returns it. Raises CheckpointError naming the file and key."""
    import torch

    from ssmttm import pattern
    from ssmttm.models import build_lm
    from ssmttm.models.checkpoint import load_model, save_model

    if fmt not in FORMATS:
        raise CheckpointError(f"--format {fmt!r}: known formats are {', '.join(sorted(FORMATS))}")
    fmt_mod = importlib.import_module(FORMATS[fmt])
    ckpt, config, out = Path(ckpt), Path(config), Path(out)
    cfg_json = _read_config(config)
    state, extra = read_checkpoint(ckpt)
    _check_hyper_parameters(extra, cfg_json, ckpt, config)
    label = f"checkpoint {ckpt}"
    cfg, lm_state, t5_state = fmt_mod.convert(state, cfg_json, label, f"config {config}")
    del state
    text, t5_files, t5_status = text_encoder_files(t5_state, text_encoder, cfg.text_dim, label)
    lm = build_lm(cfg, device="meta")
    lm.load_state_dict(lm_state, strict=True, assign=True)
    n_params = sum(p.numel() for p in lm.parameters())
    n_emb = sum(p.numel() for e in lm.emb for p in e.parameters())
    codec = {"codec": s.codec, "key": None, "sha256": None}
    if codec_weights:
        codec["key"], codec["sha256"] = _weights_identity(codec_weights)
    meta = {
        "model": "lm", "experiment": None, "seed": None, "step": extra.get("global_step"),
        "variant": cfg.variant, "preset": fmt_mod.preset_of(cfg), "kappa": cfg.n_codebooks, "pattern": pattern.NAME,
        "n_params": int(n_params), "n_params_non_embedding": int(n_params - n_emb), "tokens_seen": None,
        "codec": codec, "text_encoder": {**text, "max_length": int(s.max_length)},
        "imported": {"format": fmt, "source": fmt_mod.SOURCE_URL, "checkpoint": str(ckpt),
                     "checkpoint_sha256": io.sha256_file(ckpt), "config": str(config),
                     "config_sha256": io.sha256_file(config), "epoch": extra.get("epoch"),
                     "global_step": extra.get("global_step"),
                     "lightning_version": extra.get("pytorch-lightning_version"), "text_encoder_weights": t5_status},
    }
    save_model(out, lm, meta, extra_files=t5_files)
    # the folder must load like a trained run's checkpoint and give finite logits
    back, _ = load_model(out, device="cpu")
    with torch.no_grad():
        codes = torch.zeros(1, cfg.n_codebooks, 2, dtype=torch.long)
        logits = back(codes, torch.zeros(1, 2, cfg.text_dim), torch.ones(1, 2, dtype=torch.bool))
    if not bool(torch.isfinite(logits).all()):
        raise CheckpointError(f"{label}: the converted LM gives non-finite logits")
    log.info("imported %s (%s, %d layers, kappa %d, %.2fM parameters, compat %s) to %s; text encoder %s",
             ckpt, cfg.variant, cfg.n_layers, cfg.n_codebooks, n_params / 1e6, cfg.compat.source, out, t5_status)
    return out


RECEIPT_KEYS = {"name", "source", "sha256", "path", "kind"}  # what ssmttm.weights writes


def _input_file(path: str, local_path) -> Path:
    """A positional file argument: a weights receipt of the manifest (the pipeline's rule) resolves to its
    pinned local copy; anything else (a checkpoint, their own config.json) is the file itself."""
    p = Path(path)
    if p.suffix == ".json" and p.is_file():
        try:
            obj = io.read_json(p)
        except ValueError:
            return p
        if isinstance(obj, dict) and RECEIPT_KEYS <= set(obj):
            return local_path(p)
    return p


def write_done(path: str | os.PathLike, ckpt_dir: Path, experiment: str | None, seed: int) -> dict:
    """The run record of an imported checkpoint (the fields a trained run's done.json shares with it); a
    checkpoint folder under a run's ``ckpt/`` also becomes its ``ckpt/last``, as in a trained run."""
    meta = io.read_json(Path(ckpt_dir) / "meta.json")
    if Path(ckpt_dir).parent.name == "ckpt":
        io.write_text(Path(ckpt_dir).parent / "last", Path(ckpt_dir).name)
    keep = ("step", "variant", "preset", "kappa", "pattern", "n_params", "n_params_non_embedding", "codec",
            "text_encoder", "imported")
    done = {"experiment": experiment, "seed": int(seed), "checkpoint": str(ckpt_dir),
            **{k: meta.get(k) for k in keep}, "tokens_seen": None, "flops_6nd": None, "recipe": None}
    io.write_json(path, done)
    return done


def main(argv: list[str]) -> int | None:
    """``import-checkpoint``: convert another codebase's LM checkpoint into a checkpoint folder."""
    logs.setup()
    p = argparse.ArgumentParser(prog="ssmttm import-checkpoint", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="the codebase the checkpoint comes from")
    p.add_argument("checkpoint", help="the checkpoint file (ssm-ttm: the authors' Lightning .ckpt)")
    p.add_argument("config", help="its configuration (ssm-ttm: the config.json released with it)")
    p.add_argument("--out", required=True, help="checkpoint folder to write (model.safetensors, lm_config.json, meta.json)")
    p.add_argument("--text-encoder", required=True,
                   help="T5 weights receipt results/weights/<key>.json or folder (FLAN-T5-base: tokenizer, config, "
                        "and the weights the checkpoint's own text encoder is compared with)")
    p.add_argument("--codec-weights", default=None,
                   help="codec weights receipt or file the checkpoint's tokens came from (recorded; generation checks it)")
    p.add_argument("--done", default=None, help="also write this run record (done.json), last (the pipeline's rule)")
    p.add_argument("--experiment", default=None, help="experiment name recorded in --done")
    p.add_argument("--seed", type=int, default=0, help="seed recorded in --done (the run folder's)")
    settings.add_arguments(p, ImportSettings)
    args = p.parse_args(argv)
    s = settings.from_args(p, ImportSettings, args)
    from ssmttm.weight_cache import MissingWeightError, local_path

    try:
        out = import_checkpoint(args.format, _input_file(args.checkpoint, local_path),
                                _input_file(args.config, local_path), args.out, args.text_encoder, s,
                                codec_weights=args.codec_weights)
        if args.done:
            write_done(args.done, out, args.experiment, args.seed)
    except (SsmttmError, MissingWeightError) as exc:  # unreadable or unsafe checkpoint, missing keys, wrong text encoder: named
        log.error("%s", exc)
        return 2
    return 0
