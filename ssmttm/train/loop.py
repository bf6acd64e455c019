"""``python -m ssmttm train``: train one LM variant (docs/reference.md §1 recipe), resumable, DDP-ready.

Recipe defaults: AdamW lr 1e-4, betas (0.9, 0.999), eps 1e-7, weight decay 0.02 on >= 2-D
weights only (not on norms, biases, or Mamba2's A_log / D / dt_bias, flagged ``_no_weight_decay``);
linear warm-up 500 steps then cosine to 0.005 x lr per optimizer step (ssmttm.train.schedule);
grad-norm clip 1.0 (the pre-clip norm is logged); batch 4 x 32 accumulation; bf16 autocast on CUDA,
fp32 on CPU; cross-entropy with label smoothing 0.1 ignoring SPECIAL_TOKEN; CFG dropout 0.1 of the
whole prompt + 0.1 per text token (ssmttm.train.data).

Run folder (``--run-dir``): ``ckpt/step_<NNNNNNN>/`` (save_model folder + trainer_state.pt +
MODEL_CARD.md + card.json + ATTRIBUTION.md), ``ckpt/last`` (names the newest complete one),
``log.csv``, ``val.csv``, ``flops.csv``, ``tb/`` (TensorBoard) and ``done.json`` (``--out``, last).
Checkpoints: every ``--checkpoint-every`` steps, at each ``--checkpoints`` step and at the end,
each with the validation loss. Old periodic checkpoints beyond ``--keep-last`` are deleted;
``--checkpoints`` steps and the final one are always kept.

Resume: when ``ckpt/last`` exists the run continues from it (weights, optimizer, scheduler, RNG of
every rank, data position) and CSV rows after that step are dropped, so on CPU the loss curve
equals an uninterrupted run's. Several GPUs / nodes: start with ``torchrun`` (WORLD_SIZE > 1):
NCCL on CUDA, gloo on CPU; the epoch order is sharded by rank; rank 0 alone writes files.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from ssmttm import io, logs
from ssmttm.models.checkpoint import CONFIG_FILE as LM_CONFIG_FILE
from ssmttm.train.data import TrainError
from ssmttm.train.options import TrainConfig, parse_args  # noqa: F401  (parse_args: re-exported)

log = logging.getLogger("ssmttm.train")

LOG_COLUMNS = ("step", "epoch", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "flops_6nd", "elapsed_s",
               "val_loss")
VAL_COLUMNS = ("step", "val_loss", "val_loss_smoothed", "n", "n_tokens")
FLOPS_COLUMNS = ("step", "tokens_seen", "flops_6nd", "measured_forward_flops_per_token", "measured_flops_total")


class CsvLog:
    """Append-only CSV (one flushed line per row). On open, rows whose step exceeds ``keep_upto`` and
    a torn last line are dropped (atomic rewrite), so a resumed run's file equals an uninterrupted
    run's; a fresh file gets the header."""

    def __init__(self, path: Path, columns: tuple[str, ...], keep_upto: int | None):
        self.path, self.columns = Path(path), columns
        header = ",".join(columns)
        lines = [header]
        if keep_upto is not None and self.path.is_file():
            old = self.path.read_text(encoding="utf-8").split("\n")
            complete = old[1:-1] if old and old[-1] else old[1:]  # last piece lacks "\n" -> torn
            lines += [ln for ln in complete if ln and int(ln.split(",", 1)[0]) <= keep_upto]
        io.write_text(self.path, "\n".join(lines) + "\n")

    def append(self, row: dict[str, Any]) -> None:
        vals = ["" if row.get(c) is None else (repr(row[c]) if isinstance(row[c], float) else str(row[c]))
                for c in self.columns]
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(",".join(vals) + "\n")
            f.flush()


def param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on >= 2-D weights; none on 1-D params (norms, biases) or ``_no_weight_decay``."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or getattr(p, "_no_weight_decay", False) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _read_json(path: str | None) -> Any:
    return io.read_json(path) if path else None


def _manifest_splits(path: str | os.PathLike | None) -> dict[str, list[str]]:
    """split -> clip ids (manifest order) of the data manifest: the clips a run trains and validates on."""
    import pandas as pd

    if not path:
        raise TrainError("--manifest: required (its clips of each split are what is trained on)")
    try:
        df = pd.read_parquet(path, columns=["clip_id", "split"])
    except (OSError, ValueError, KeyError) as exc:
        raise TrainError(f"--manifest {path}: cannot read clip_id/split ({exc})") from exc
    return {str(k): [str(c) for c in g["clip_id"]] for k, g in df.groupby("split", sort=True)}


class Trainer:
    """One training run; :meth:`run` trains to ``cfg.steps`` and returns the done.json object."""

    def __init__(self, cfg: TrainConfig):
        import numpy as np
        import torch

        from ssmttm.train import flops, state
        from ssmttm.train.data import MicroBatches
        from ssmttm.train.schedule import WarmupCosine

        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.ckpt_root = self.run_dir / "ckpt"
        self._setup_distributed(cfg.device)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        self._build()
        if self.world > 1 and self.rank > 0:
            torch.manual_seed(cfg.seed + 1_000_003 * self.rank)  # own dropout stream per rank
        self.n_params, self.n_params_non_emb = flops.count_params(self.net, self._embeddings())
        self.optimizer = torch.optim.AdamW(param_groups(self.net, cfg.weight_decay), lr=cfg.lr,
                                           betas=tuple(cfg.betas), eps=cfg.eps)
        self.sched = WarmupCosine(self.optimizer, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
        self.step, self.tokens_seen, self.elapsed = 0, 0, 0.0
        self.measured = {"per_token": None, "total": None}
        self._flops_cache: dict = {}
        epoch, batch_in_epoch = 0, 0
        last = state.read_last(self.ckpt_root)
        if last is not None:
            epoch, batch_in_epoch = self._resume(last)
        self.batches = MicroBatches(self.train_ds, cfg.batch_size, cfg.seed, self.rank, self.world,
                                    cfg.num_workers, epoch, batch_in_epoch)
        self.model = self.net
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)
        self._data_meta = self._data_provenance()

    # --- what is trained (the hooks a subclass replaces: ssmttm.refiner.train) -----------------------
    MODEL_KIND = "lm"
    CONFIG_FILE = LM_CONFIG_FILE
    PATTERN = "musicgen-delay"  # ssmttm.pattern.NAME: how codes are laid out in the trained sequences

    def _build(self) -> None:
        """Set ``train_ds``, ``val_ds`` (or None), ``empty`` (the empty prompt's states), ``model_cfg`` and
        ``net`` (the module trained: the LM, or the refiner in the subclass; on ``self.device``)."""
        from ssmttm.models import build_lm
        from ssmttm.models.config import from_preset

        cfg = self.cfg
        self._load_data(cfg.kappa)
        overrides = self._overrides((("n_codebooks", cfg.kappa), ("dropout", cfg.dropout),
                                     ("text_dim", self.train_ds.text.d_model)),
                                    "--kappa / --dropout / the text store's d_model")
        self.model_cfg = from_preset(cfg.preset, cfg.variant, **overrides)
        self.net = build_lm(self.model_cfg, device=self.device)

    def _load_data(self, n_codebooks: int, delay: bool = True) -> None:
        """``train_ds``, ``val_ds`` (None without a valid split) and ``empty`` from the token and text stores:
        the manifest's clips of each split, exactly (``--manifest``), read from exactly the shard folders
        given (``--tokens``); the first ``n_codebooks`` codebooks, delay-patterned (the LM) or aligned
        (the refiner)."""
        import numpy as np

        from ssmttm.text.store import EMPTY_ID
        from ssmttm.tokens.dataset import TokenDataset

        cfg = self.cfg
        clips = _manifest_splits(cfg.manifest)

        def split(name: str, caption: str):
            ds = TokenDataset(cfg.tokens, cfg.text, n_codebooks, name, cfg.max_frames, caption, cfg.seed,
                              clips=clips[name], delay=delay)
            if ds.untokenized:
                log.warning("split %s: %d manifest clip(s) were rejected by the codec (rejected.tsv), e.g. %s",
                            name, len(ds.untokenized), ds.untokenized[:3])
            return ds

        if not clips.get("train"):
            raise TrainError(f"--manifest {cfg.manifest}: no clips in split 'train'")
        self.train_ds = split("train", cfg.caption)
        if clips.get("valid"):
            self.val_ds = split("valid", "primary")
        else:
            log.warning("no validation loss: --manifest %s has no clips in split 'valid'", cfg.manifest)
            self.val_ds = None
        self.empty = np.asarray(self.train_ds.text.embedding(EMPTY_ID), dtype=np.float32)

    def _overrides(self, pinned, source: str) -> dict:
        """``model`` (the config key, ``--model``) plus the ``(field, value)`` pairs the stores and flags fix; an override that
        contradicts one of those fails naming both (``source`` says where the fixed values come from)."""
        overrides = dict(self.cfg.model)
        for key, val in pinned:
            if key in overrides and overrides[key] != val:
                raise ValueError(f"model override (--model) {key}={overrides[key]} contradicts {val} (from {source})")
            overrides[key] = val
        return overrides

    def _embeddings(self):
        """Token embedding modules, left out of N in 6ND (ssmttm.train.flops)."""
        return self.net.emb

    def _micro_loss(self, batch):
        """Loss of one (CFG-dropped) micro-batch: token-mean cross-entropy with label smoothing."""
        cfg = self.cfg
        codes = batch["codes"].to(self.device, non_blocking=True)
        with self._autocast():
            logits = self.model(codes, batch["text"].to(self.device), batch["text_mask"].to(self.device))
        return self.net.loss(logits, codes, batch["codes_mask"].to(self.device), cfg.label_smoothing)

    def _val_sums(self, batch, index: int) -> tuple[float, float, float]:
        """(loss x n, smoothed loss x n, n) of validation micro-batch ``index``: n = real tokens."""
        from ssmttm.constants import SPECIAL_TOKEN

        codes = batch["codes"].to(self.device)
        mask = batch["codes_mask"].to(self.device)
        with self._autocast():
            logits = self.net(codes, batch["text"].to(self.device), batch["text_mask"].to(self.device))
        nt = float((mask & (codes != SPECIAL_TOKEN)).sum())
        return (float(self.net.loss(logits, codes, mask, 0.0)) * nt,
                float(self.net.loss(logits, codes, mask, self.cfg.label_smoothing)) * nt, nt)

    def _forward_flops(self, batch) -> tuple[int, int]:
        """(forward FLOPs, positions) of one forward pass over ``batch``."""
        from ssmttm.train.flops import measure_forward_flops

        return measure_forward_flops(self.model_cfg, batch["codes"], batch["text"], batch["text_mask"],
                                     device=self.device)

    # --- setup ------------------------------------------------------------------------------------
    def _setup_distributed(self, device: str) -> None:
        import torch

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
        if self.world > 1:
            import torch.distributed as dist

            local = int(os.environ.get("LOCAL_RANK", "0"))
            if cuda:
                torch.cuda.set_device(local)
                self.device = torch.device("cuda", local)
            else:
                self.device = torch.device("cpu")
            if not dist.is_initialized():
                dist.init_process_group("nccl" if cuda else "gloo")
        else:
            self.device = torch.device("cuda" if cuda and device == "auto" else ("cpu" if device == "auto" else device))
        p = self.cfg.precision
        if p not in ("auto", "fp32", "bf16"):
            raise ValueError(f"--precision {p!r}: expected auto, fp32 or bf16")
        self.bf16 = p == "bf16" or (p == "auto" and self.device.type == "cuda")
        self.is_main = self.rank == 0

    def _autocast(self):
        import torch

        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _data_provenance(self) -> dict[str, Any]:
        cfg = self.cfg
        tok_meta = self.train_ds._tokens().meta
        text_meta = self.train_ds.text.meta
        codec = {"key": tok_meta.get("weights"), "sha256": tok_meta.get("weights_sha256"),
                 "codec": tok_meta.get("codec")}
        # what inference must repeat: the same encoder, truncating prompts at the same length
        text = {"key": text_meta.get("encoder"), "sha256": text_meta.get("weights_sha256"),
                "max_length": text_meta.get("max_length")}
        for rec_path, target in ((cfg.codec_weights, codec), (cfg.text_encoder, text)):
            # a weights receipt (JSON) names the entry; a bare weights file leaves the store's record
            rec = _read_json(rec_path) if rec_path and str(rec_path).endswith(".json") else None
            if rec:
                target.update(key=rec.get("name", target["key"]), sha256=rec.get("sha256", target["sha256"]))
        self._attribution = None
        licences = None
        if cfg.licenses_table:
            from ssmttm.data.licenses import training_licences

            # the tracks of the clips trained on, not the whole audit: what the weights were made from
            licences, markdown = training_licences(cfg.licenses_table, self.train_ds.track_ids,
                                                   _read_json(cfg.licenses_json))
            self._attribution = markdown.encode()
        return {
            "codec": codec, "text_encoder": text,
            "manifest_sha256": io.sha256_file(cfg.manifest) if cfg.manifest else None,
            "licences": licences,
        }

    def _resume(self, folder: Path) -> tuple[int, int]:
        from safetensors.torch import load_file

        from ssmttm.models.checkpoint import read_meta
        from ssmttm.train import state

        cfg_dict, _ = read_meta(folder, self.CONFIG_FILE)
        if cfg_dict != self.model_cfg.to_dict():
            raise TrainError(f"resume: {folder} holds a model with another config than this run's flags; use a "
                             f"new --run-dir or the original flags")
        self.net.load_state_dict(load_file(str(folder / "model.safetensors"), device=str(self.device)))
        st = state.load_state(folder / state.STATE_FILE)
        self.optimizer.load_state_dict(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        rngs = st["rng"]
        if len(rngs) != self.world:
            raise TrainError(f"resume: {folder} was written by {len(rngs)} rank(s), this run has {self.world}; "
                             "exact resume needs the same world size")
        state.restore_rng(rngs[self.rank])
        self.step, self.tokens_seen, self.elapsed = int(st["step"]), int(st["tokens_seen"]), float(st["elapsed_s"])
        self.measured = {"per_token": st.get("measured_per_token"), "total": st.get("measured_total")}
        log.info("resumed from %s (step %d, epoch %d, batch %d)", folder, self.step, st["epoch"], st["batch_in_epoch"])
        return int(st["epoch"]), int(st["batch_in_epoch"])

    # --- collectives --------------------------------------------------------------------------------
    def _all_reduce(self, t):
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t)
        return t

    def _barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    # --- one optimizer step ---------------------------------------------------------------------------
    def train_step(self, it) -> dict[str, float]:
        """Run ``grad_accum`` micro-batches and one optimizer update; returns the step's stats.

        The loss of a micro-batch is its token-mean cross-entropy; the step's loss (and gradient) is
        the mean over micro-batches and ranks. ``tokens`` = delayed positions of every sequence of
        the step on all ranks. Raises TrainError before the update on a non-finite loss or
        gradient norm (the weights and checkpoints stay at the last good state)."""
        import torch

        from ssmttm.train.data import batch_rng, cfg_dropout, check_codes

        cfg = self.cfg
        self.model.train()
        lr = self.sched.apply()
        losses, clip_ids, tokens = [], [], 0
        for j in range(cfg.grad_accum):
            epoch, b, batch = next(it)
            check_codes(batch)
            batch = cfg_dropout(batch, self.empty, cfg.cfg_dropout, cfg.cfg_token_dropout,
                                batch_rng(cfg.seed, epoch, b, self.rank))
            sync = self.world > 1 and j < cfg.grad_accum - 1
            with (self.model.no_sync() if sync else contextlib.nullcontext()):
                loss = self._micro_loss(batch)
                (loss / cfg.grad_accum).backward()
            losses.append(loss.detach().float())
            clip_ids.append(batch["clip_ids"])
            tokens += int(batch["lengths"].sum())
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), max_norm)
        per_mb = torch.stack(losses)
        stats = self._all_reduce(torch.stack([per_mb.mean(), grad_norm.float().reshape(()),
                                              torch.tensor(float(tokens), device=per_mb.device)]))
        loss_v, norm_v, tok_v = (float(x) for x in stats.cpu())
        loss_v /= self.world
        norm_v /= self.world  # grads are all-reduced: every rank holds the same norm
        step = self.step + 1
        if not (math.isfinite(loss_v) and math.isfinite(norm_v)):
            raise self._nonfinite(step, loss_v, norm_v, per_mb.cpu().tolist(), clip_ids)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.sched.step()
        self.step = step
        self.tokens_seen += int(round(tok_v))
        return {"loss": loss_v, "lr": lr, "grad_norm": norm_v, "tokens": int(round(tok_v))}

    def _nonfinite(self, step: int, loss: float, norm: float, per_mb: list[float], clip_ids: list) -> TrainError:
        """The error for a non-finite step: names the step, the micro-batches' clips, the last checkpoint."""
        bad = [ids for ids, v in zip(clip_ids, per_mb) if not math.isfinite(v)]
        where = (f"micro-batch clips {bad}" if bad else
                 f"the step's clips {clip_ids} (losses finite on this rank: another rank's batch or the gradients)")
        return TrainError(f"step {step}: non-finite loss {loss} / gradient norm {norm} on rank {self.rank}, {where}; "
                          f"stopped before the update, last good checkpoint: {self._last_good()}")

    def _last_good(self) -> str:
        last = self.ckpt_root / "last"
        return str(self.ckpt_root / last.read_text().strip()) if last.is_file() else "none yet"

    # --- validation, FLOPs, checkpoints -------------------------------------------------------------------
    def validate(self) -> dict[str, float] | None:
        """Token-weighted validation loss over the valid split (sharded by rank, summed across ranks);
        ``val_loss`` is plain cross-entropy, ``val_loss_smoothed`` uses the training label smoothing."""
        import torch

        from ssmttm.tokens.dataset import collate
        from ssmttm.train.data import check_codes

        if self.val_ds is None:
            return None
        n = len(self.val_ds)
        idx = list(range(self.rank, n, self.world))
        chunks = [idx[i:i + self.cfg.batch_size] for i in range(0, len(idx), self.cfg.batch_size)]
        if self.cfg.val_max_batches > 0:
            chunks = chunks[:self.cfg.val_max_batches]
        acc = torch.zeros(4, dtype=torch.float64, device=self.device)  # loss sum, smoothed sum, tokens, clips
        self.net.eval()
        with torch.no_grad():
            for j, chunk in enumerate(chunks):
                batch = collate([self.val_ds[i] for i in chunk])
                check_codes(batch)
                ce, sm, nt = self._val_sums(batch, j)
                acc[0] += ce
                acc[1] += sm
                acc[2] += nt
                acc[3] += len(chunk)
        self._all_reduce(acc)
        ce, sm, nt, nc = acc.cpu().tolist()
        return {"val_loss": ce / max(nt, 1.0), "val_loss_smoothed": sm / max(nt, 1.0), "n": int(nc),
                "n_tokens": int(nt)}

    def measure_flops(self) -> None:
        """Forward FLOPs per position on a small fixed batch (the first two clips of the valid split,
        else of the train split). FLOPs depend only on shapes, so a shape already measured is reused."""
        from ssmttm.tokens.dataset import collate

        ds = self.val_ds or self.train_ds
        batch = collate([ds[i] for i in range(min(2, len(ds)))])
        key = (tuple(batch["codes"].shape), tuple(batch["text"].shape), int(batch["text_mask"].sum()))
        if key not in self._flops_cache:
            self._flops_cache[key] = self._forward_flops(batch)
        fl, positions = self._flops_cache[key]
        self.measured["per_token"] = fl / positions
        self.measured["total"] = 3.0 * self.measured["per_token"] * self.tokens_seen

    def meta(self, val: dict | None) -> dict[str, Any]:
        from ssmttm.train.flops import flops_6nd

        c = self.cfg
        return {"model": self.MODEL_KIND, "experiment": c.experiment, "seed": c.seed, "step": self.step, "variant": c.variant,
                "preset": c.preset, "kappa": c.kappa, "pattern": self.PATTERN, "n_params": self.n_params,
                "n_params_non_embedding": self.n_params_non_emb, "tokens_seen": self.tokens_seen,
                "flops_6nd": flops_6nd(self.n_params_non_emb, self.tokens_seen),
                "flops_6nd_all_params": flops_6nd(self.n_params, self.tokens_seen),
                "measured_forward_flops_per_token": self.measured["per_token"],
                "measured_flops_total": self.measured["total"],
                "val_loss": None if val is None else val["val_loss"], "world_size": self.world,
                **self._data_meta}

    def save_checkpoint(self, val: dict | None) -> Path:
        """Write ckpt/step_<N> (complete, atomically) then point ckpt/last at it; rank 0 only."""
        from ssmttm.models.checkpoint import save_model
        from ssmttm.train import card, state

        import torch

        name = f"step_{self.step:07d}"
        bad = [n for n, p in self.net.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:  # every rank holds the same weights, so every rank stops here
            raise TrainError(f"step {self.step}: non-finite weights in {bad[:5]}; checkpoint not written, last good "
                             f"checkpoint: {self._last_good()}")
        epoch, b = self.batches.position
        rngs = self._gather_rng()
        if not self.is_main:
            return self.ckpt_root / name
        st = {"version": state.STATE_VERSION, "step": self.step, "epoch": epoch, "batch_in_epoch": b,
              "tokens_seen": self.tokens_seen, "elapsed_s": self.elapsed, "world_size": self.world,
              "optimizer": self.optimizer.state_dict(), "scheduler": self.sched.state_dict(), "rng": rngs,
              "measured_per_token": self.measured["per_token"], "measured_total": self.measured["total"]}
        meta = self.meta(val)
        files = card.card_files(meta, self.model_cfg.to_dict(), self.cfg.recipe(), self._attribution)
        files[state.STATE_FILE] = state.state_bytes(st)
        folder = save_model(self.ckpt_root / name, self.net, meta, files, self.CONFIG_FILE)
        state.write_last(self.ckpt_root, name)
        self._prune()
        return folder

    def _gather_rng(self) -> list[dict]:
        from ssmttm.train.state import capture_rng

        mine = capture_rng(cuda=self.device.type == "cuda")
        if self.world == 1:
            return [mine]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, mine)
        return out

    def _prune(self) -> None:
        if self.cfg.keep_last <= 0:
            return
        keep = {f"step_{s:07d}" for s in self.cfg.checkpoints} | {f"step_{self.cfg.steps:07d}"}
        periodic = sorted(p for p in self.ckpt_root.glob("step_*") if p.is_dir() and p.name not in keep)
        for p in periodic[:-self.cfg.keep_last]:
            shutil.rmtree(p)

    # --- the run --------------------------------------------------------------------------------------
    def _open_logs(self) -> None:
        """Rank 0: CSV logs (truncated after the resumed step) and the TensorBoard writer."""
        self.csv, self.tb = {}, None
        if not self.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for tmp in self.ckpt_root.glob(".step_*"):  # staging folders of a save killed midway
            shutil.rmtree(tmp, ignore_errors=True)
        keep = self.step if (self.ckpt_root / "last").is_file() else None
        for name, cols in (("log.csv", LOG_COLUMNS), ("val.csv", VAL_COLUMNS), ("flops.csv", FLOPS_COLUMNS)):
            self.csv[name] = CsvLog(self.run_dir / name, cols, keep)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step + 1 if self.step else None)
        except ImportError as exc:  # tensorboard missing: the CSV logs still hold everything
            log.warning("no TensorBoard events (%s)", exc)

    def _log_row(self, s: dict, val: dict | None, since: tuple[float, int]) -> None:
        from ssmttm.train.flops import flops_6nd

        now = time.perf_counter()
        row = {"step": self.step, "epoch": self.batches.position[0], "loss": s["loss"], "lr": s["lr"],
               "grad_norm": s["grad_norm"], "tokens": self.tokens_seen,
               "tokens_per_s": round((self.tokens_seen - since[1]) / max(now - since[0], 1e-9), 1),
               "flops_6nd": flops_6nd(self.n_params_non_emb, self.tokens_seen),
               "elapsed_s": round(self.elapsed, 3), "val_loss": None if val is None else val["val_loss"]}
        self.csv["log.csv"].append(row)
        if self.tb is not None:
            for k in ("loss", "lr", "grad_norm", "tokens_per_s", "flops_6nd"):
                self.tb.add_scalar(f"train/{k}", row[k], self.step)
            if val is not None:
                self.tb.add_scalar("val/loss", val["val_loss"], self.step)

    def _checkpoint(self, val: dict | None) -> None:
        """All ranks: val.csv / flops.csv rows and the checkpoint (rank 0 writes), between barriers."""
        from ssmttm.train.flops import flops_6nd

        self._barrier()
        if self.is_main:
            if val is not None:
                self.csv["val.csv"].append({"step": self.step, **val})
            self.csv["flops.csv"].append({
                "step": self.step, "tokens_seen": self.tokens_seen,
                "flops_6nd": flops_6nd(self.n_params_non_emb, self.tokens_seen),
                "measured_forward_flops_per_token": self.measured["per_token"],
                "measured_flops_total": self.measured["total"]})
        self.save_checkpoint(val)
        self._barrier()

    def run(self) -> dict[str, Any]:
        """Train from the current step to ``cfg.steps``; write done.json (rank 0) and return it."""
        import torch

        cfg = self.cfg
        self._open_logs()
        milestones = set(cfg.checkpoints)
        it = iter(self.batches)
        bar = logs.progress(total=cfg.steps, initial=self.step, desc=cfg.experiment, disable=not self.is_main)
        val = None
        since = (time.perf_counter(), self.tokens_seen)
        t_run = time.perf_counter() - self.elapsed  # elapsed_s accumulates across resumes
        try:
            while self.step < cfg.steps:
                s = self.train_step(it)
                self.elapsed = time.perf_counter() - t_run
                is_ckpt = self.step % cfg.checkpoint_every == 0 or self.step in milestones or self.step == cfg.steps
                val = None
                if is_ckpt:  # neither may move the RNG streams that training continues with
                    with torch.random.fork_rng(devices=[self.device.index or 0] if self.device.type == "cuda" else []):
                        val = self.validate()
                        if self.is_main:
                            self.measure_flops()
                bar.update(1)
                if self.is_main and (self.step % cfg.log_every == 0 or is_ckpt):
                    self._log_row(s, val, since)
                    since = (time.perf_counter(), self.tokens_seen)
                    bar.set_postfix(loss=f"{s['loss']:.4f}", lr=f"{s['lr']:.2e}")
                if is_ckpt:
                    self._checkpoint(val)
        finally:
            bar.close()
            if self.tb is not None:
                self.tb.close()
        final = self.ckpt_root / f"step_{self.step:07d}"
        done = {**self.meta(val), "final_checkpoint": final.as_posix(), "elapsed_s": round(self.elapsed, 3),
                "log": (self.run_dir / "log.csv").as_posix(), "recipe": cfg.recipe()}
        if val is None and (final / "meta.json").is_file():  # nothing left to train: report the checkpoint's
            done["val_loss"] = io.read_json(final / "meta.json").get("val_loss")
        if self.is_main and cfg.out:
            io.write_json(cfg.out, done)  # last: the Snakemake rule's output
        return done

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def main(argv: list[str]) -> int:
    logs.setup()
    return run_stage(Trainer, parse_args(argv))


def run_stage(trainer_cls, cfg: TrainConfig) -> int:
    """Build ``trainer_cls(cfg)`` and train; exit code 2 for bad inputs, 1 for a training failure."""
    try:
        trainer = trainer_cls(cfg)
    except (ValueError, TrainError) as exc:  # bad stores, config or resume state: the message names it
        log.error("%s", exc)
        return 2
    try:
        done = trainer.run()
    except TrainError as exc:
        log.error("%s", exc)
        return 1
    finally:
        trainer.close()
    if trainer.is_main:
        log.info("done: %s step %d, %d positions, 6ND %.3g FLOPs, validation loss %s -> %s", done["model"],
                 done["step"], done["tokens_seen"], done["flops_6nd"], done.get("val_loss"), cfg.out)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
