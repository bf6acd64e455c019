"""Vocal removal for one shard: Demucs ``htdemucs`` keeps the no-vocals stem, or ``keep`` passes clips on.

The paper passes every 30 s clip through Demucs ``htdemucs`` and trains on the accompaniment
(docs/reference.md §2). Checkpoints are read in Demucs's own package format (``demucs.states``:
a dict with ``klass``, ``args``, ``kwargs``, ``state``, ``training_args``) but never unpickled
freely: ``torch.load(weights_only=True)`` with only :class:`demucs.htdemucs.HTDemucs` and
:class:`fractions.Fraction` allow-listed (the released htdemucs stores ``segment`` as a Fraction).

Registry: :data:`REMOVERS` maps a name to a class whose constructor is cheap; torch and demucs are
imported only when a remover is built. Output: ``<out-dir>/<clip_id>.flac`` and a TSV (:data:`COLUMNS`).
"""

from __future__ import annotations

import argparse
import inspect
import io
import logging
import os
import pickle
import re
import shutil
from abc import ABC, abstractmethod
from fractions import Fraction
from pathlib import Path

import numpy as np

from ssmttm import audio
from ssmttm.errors import CheckpointError
from ssmttm.io import atomic_open, atomic_path, sha256_file, write_table
from ssmttm.weight_cache import MissingWeightError, local_path

log = logging.getLogger("ssmttm.vocals")

COLUMNS = ["clip_id", "track_id", "shard", "audio_path", "sha256", "status", "reason", "vocals", "model_sha256"]
SOURCES = ("drums", "bass", "other", "vocals")  # htdemucs's four stems, in its order
CLIP_NAME = re.compile(r"^\d+_\d{3}\.flac$")
TMP_NAME = re.compile(r"^\..*\.tmp\.flac$")

# Small but structurally complete HTDemucs (both branches, 4 encoder layers, one cross-transformer
# layer): ~100k parameters, ~0.27 MB in half precision, a 30 s stereo clip in ~2 s on one CPU core.
# nfft/depth stay at the real values (4096, 4) because they set the transformer's token count;
# shrinking them makes attention sequences longer and separation slower, not faster.
TINY_HTDEMUCS = {
    "sources": list(SOURCES), "audio_channels": 2, "samplerate": 44_100, "segment": Fraction(39, 10),
    "channels": 4, "depth": 4, "nfft": 4096, "t_layers": 1, "t_heads": 2, "dconv_comp": 4,
}


def _safe_globals() -> list:
    from demucs.htdemucs import HTDemucs

    return [HTDemucs, Fraction]


def load_htdemucs(path: str | os.PathLike):
    """Load an HTDemucs from a Demucs package file without unpickling anything but the allow-list.

    Returns the model in eval mode on CPU. Raises CheckpointError naming ``path`` when the file is
    missing, is not a torch checkpoint, contains any other pickled object, or does not match the class.
    """
    import torch
    from demucs.htdemucs import HTDemucs

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            pkg = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        bad = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if bad is None:  # garbage, or a pickle opcode the weights-only unpickler does not run
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
            raise CheckpointError(
                f"{path}: not a readable torch checkpoint ({detail.group(1) if detail else exc})"
            ) from exc
        raise CheckpointError(
            f"{path}: refused to load: it references {bad.group(1)}, which is not allow-listed "
            "(only weights plus demucs.htdemucs.HTDemucs and fractions.Fraction are accepted; the "
            "file is not a clean Demucs htdemucs package, so it is not unpickled)"
        ) from exc
    except Exception as exc:  # truncated zip, not a torch file at all, ...
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({exc})") from exc
    if not isinstance(pkg, dict) or not {"klass", "args", "kwargs", "state"} <= set(pkg):
        keys = sorted(pkg) if isinstance(pkg, dict) else type(pkg).__name__
        raise CheckpointError(f"{path}: not a Demucs package (needs klass, args, kwargs, state; got {keys})")
    if pkg["klass"] is not HTDemucs:
        raise CheckpointError(f"{path}: klass is {pkg['klass']!r}, expected demucs.htdemucs.HTDemucs")
    state = pkg["state"]
    if not isinstance(state, dict) or state.get("__quantized"):
        raise CheckpointError(f"{path}: state is quantized or not a state dict (diffq models are not supported)")
    kwargs = dict(pkg["kwargs"])
    known = inspect.signature(HTDemucs).parameters
    for key in [k for k in kwargs if k not in known]:  # same leniency as demucs.states.load_model
        log.warning("%s: dropping unknown HTDemucs argument %r", path, key)
        del kwargs[key]
    try:
        model = HTDemucs(*pkg["args"], **kwargs)
        model.load_state_dict(state)
    except Exception as exc:
        raise CheckpointError(f"{path}: weights do not fit HTDemucs({kwargs}): {exc}") from exc
    if "vocals" not in model.sources:
        raise CheckpointError(f"{path}: model sources {model.sources} have no 'vocals' stem")
    return model.eval()


def build_tiny_htdemucs(path: str | os.PathLike, seed: int = 0):
    """Save a random-init tiny HTDemucs (:data:`TINY_HTDEMUCS`) as a Demucs package; return the model.

    The file has the layout of ``demucs.states.serialize_model`` (half-precision state, as the
    released checkpoints), written here because that helper needs omegaconf for ``training_args``.
    The returned model holds exactly the weights :func:`load_htdemucs` reads back.
    """
    import torch
    from demucs.htdemucs import HTDemucs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HTDemucs(**TINY_HTDEMUCS)
    args, kwargs = model._init_args_kwargs  # recorded by demucs.states.capture_init
    state = {k: v.detach().cpu().to(torch.float16 if v.is_floating_point() else v.dtype).clone()
             for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    pkg = {"klass": HTDemucs, "args": tuple(args), "kwargs": dict(kwargs), "state": state,
           "training_args": {"note": "tiny random-init HTDemucs for offline tests (ssmttm)", "seed": int(seed)}}
    # Saved through a buffer: torch names the zip's inner folder after a file's stem, which for the
    # atomic temporary file would be random; a buffer gets the fixed name "archive" (same bytes per seed).
    buf = io.BytesIO()
    torch.save(pkg, buf)
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue())
    return model.eval()


def checkpoint_file(model_path: str | os.PathLike) -> Path:
    """The ``.th`` file behind ``--model-path``: a weights receipt (``results/weights/<name>.json``,
    resolved by :func:`ssmttm.weight_cache.local_path`), a folder holding exactly one ``.th``, or the file."""
    try:
        path = local_path(model_path)
    except MissingWeightError as exc:
        raise CheckpointError(str(exc)) from exc
    if path.is_dir():
        found = sorted(path.glob("*.th"))
        if len(found) != 1:
            raise CheckpointError(f"{path}: expected exactly one .th checkpoint in the folder, found {len(found)}")
        path = found[0]
    return path


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; fails fast on an unusable ``--device``."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return name


def separate_no_vocals(model, mix, shifts: int, overlap: float, device: str):
    """Accompaniment of ``mix: [B, 2, T]`` float32 (CPU) -> ``[B, 2, T]`` float32 (CPU).

    Each item is normalised by its own mean/std before ``apply_model`` and restored after, as
    ``demucs.api.Separator`` does. No-vocals = drums + bass + other, the sum of the model's other
    stems, which is what ``demucs --two-stems vocals`` writes (``--other-method add``, its default).
    HTDemucs's stems do not sum exactly to the mixture, so mixture - vocals would carry the
    unexplained residual (including vocal bleed the vocals stem missed) into the training audio.
    """
    import random

    import torch
    from demucs.apply import apply_model

    ref = mix.mean(dim=1)  # [B, T]
    mean = ref.mean(dim=1).view(-1, 1, 1)
    std = ref.std(dim=1).view(-1, 1, 1) + 1e-8
    saved = random.getstate()
    random.seed(0)  # apply_model draws its time shifts from Python's random: fix them per call
    try:
        with torch.no_grad():
            stems = apply_model(model, (mix - mean) / std, shifts=shifts, split=True, overlap=overlap,
                                device=device, progress=False)  # [B, S, 2, T]
    finally:
        random.setstate(saved)
    stems = stems.to("cpu") * std.unsqueeze(1) + mean.unsqueeze(1)
    keep = [i for i, s in enumerate(model.sources) if s != "vocals"]
    return stems[:, keep].sum(dim=1)


class VocalRemover(ABC):
    """One way of turning clips into training audio; ``process`` returns None (ok) or a reason."""

    vocals: str = ""
    model_sha256: str = ""
    batch_size: int = 1

    @abstractmethod
    def process(self, jobs: list[tuple[Path, Path, int]]) -> list[str | None]:
        """``jobs``: (clip path, output path, channels) triples; one result per job, same order."""


class KeepVocals(VocalRemover):
    """Vocals kept: the clip itself, hard-linked (copied when linking fails) into the output folder."""

    vocals = "keep"

    def __init__(self, **_: object) -> None:
        pass

    def process(self, jobs):
        out = []
        for src, dst, _ in jobs:
            try:
                audio.info(src)  # a clip that is not readable audio is rejected, not passed on
            except audio.AudioError as exc:
                out.append(f"unreadable clip: {exc}")
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.parent / f".{dst.name}.link.tmp.flac"
            try:
                if tmp.exists():
                    tmp.unlink()
                os.link(src, tmp)
                os.replace(tmp, dst)
            except OSError:  # another filesystem, or links not permitted
                if tmp.exists():
                    tmp.unlink()
                with atomic_path(dst) as t:
                    shutil.copyfile(src, t)
            out.append(None)
        return out


class HTDemucsRemover(VocalRemover):
    """Vocals removed with an HTDemucs checkpoint (:func:`load_htdemucs`); batches equal-length clips."""

    vocals = "separate"

    def __init__(self, model_path: str | os.PathLike, *, device: str, shifts: int, overlap: float, batch_size: int,
                 **_: object) -> None:
        """``device``, ``shifts``, ``overlap``, ``batch_size``: config keys ``vocals.*`` (VocalsSettings)."""
        ckpt = checkpoint_file(model_path)
        self.model = load_htdemucs(ckpt)
        self.model_sha256 = sha256_file(ckpt)
        self.device = resolve_device(device)
        self.model.to(self.device)
        self.shifts, self.overlap, self.batch_size = int(shifts), float(overlap), int(batch_size)
        self.sr = int(self.model.samplerate)

    def _read(self, src: Path) -> np.ndarray:
        x, sr = audio.read(src)
        audio.check_usable(x, src, float("-inf"))  # non-finite input would poison the whole batch
        # HTDemucs is a stereo model: a mono clip is duplicated here and folded back on output.
        return audio.resample(audio.to_channels(x, self.model.audio_channels), sr, self.sr)

    def _separate(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        mix = torch.from_numpy(np.stack(xs))
        y = separate_no_vocals(self.model, mix, self.shifts, self.overlap, self.device).numpy()
        if not np.all(np.isfinite(y)):
            raise RuntimeError("separation produced non-finite samples")
        return list(y)

    def process(self, jobs):
        out: list[str | None] = [None] * len(jobs)
        ready: dict[int, np.ndarray] = {}
        for i, (src, _, _) in enumerate(jobs):
            try:
                ready[i] = self._read(src)
            except audio.AudioError as exc:
                out[i] = f"unreadable clip: {exc}"
        groups: dict[int, list[int]] = {}
        for i, x in ready.items():  # only equal lengths can share a batch tensor
            groups.setdefault(x.shape[1], []).append(i)
        for idx in groups.values():
            try:
                ys = dict(zip(idx, self._separate([ready[i] for i in idx])))
            except Exception as exc:  # retry one by one so one bad clip does not sink the batch
                log.warning("batch of %d failed (%s); retrying clips one by one", len(idx), exc)
                ys = {}
                for i in idx:
                    try:
                        ys[i] = self._separate([ready[i]])[0]
                    except Exception as exc1:
                        out[i] = f"separation failed: {jobs[i][0]}: {exc1}"
            for i, y in ys.items():
                _, dst, channels = jobs[i]
                y = audio.to_channels(y, channels)
                # Peak-rescale instead of hard clipping, as demucs's default --clip-mode rescale.
                y = y / max(1.01 * float(np.abs(y).max()), 1.0)
                audio.write(dst, y, self.sr)
        return out


# Registry: name -> class (lazy: heavy imports happen in the constructor, not here).
REMOVERS: dict[str, type[VocalRemover]] = {"keep": KeepVocals, "htdemucs": HTDemucsRemover}
MODES = {"keep": "keep", "separate": "htdemucs"}  # --mode -> registry name


def remove_vocals_shard(clips: str | Path, remover: VocalRemover, out_dir: str | Path, table: str | Path):
    """Run ``remover`` over the ok clips of a segment table; pass rejected rows through; write the table."""
    import pandas as pd

    from ssmttm.logs import progress

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = pd.read_csv(clips, sep="\t", dtype=str, keep_default_na=False)
    missing = {"clip_id", "track_id", "shard", "status", "reason", "clip_path", "channels"} - set(df.columns)
    if missing:
        raise ValueError(f"--clips {clips}: missing columns {sorted(missing)}")
    rows = []
    for r in df.to_dict("records"):
        rows.append({"clip_id": r["clip_id"], "track_id": r["track_id"], "shard": r["shard"],
                     "audio_path": "", "sha256": "", "status": r["status"], "reason": r["reason"],
                     "vocals": remover.vocals, "model_sha256": remover.model_sha256})
    todo = [i for i, r in enumerate(df.to_dict("records")) if r["status"] == "ok"]
    bar = progress(total=len(todo), desc="vocals", unit="clip")
    for b in range(0, len(todo), max(1, remover.batch_size)):
        idx = todo[b:b + max(1, remover.batch_size)]
        jobs = [(Path(df["clip_path"][i]), out_dir / f"{df['clip_id'][i]}.flac",
                 int(float(df["channels"][i] or 2))) for i in idx]
        for i, (_, dst, _), reason in zip(idx, jobs, remover.process(jobs)):
            if reason is None:
                rows[i].update(audio_path=str(dst), sha256=sha256_file(dst))
            else:
                log.warning("%s: rejected: %s", rows[i]["clip_id"], reason)
                rows[i].update(status="rejected", reason=reason)
        bar.update(len(idx))
    bar.close()
    written = {Path(r["audio_path"]).name for r in rows if r["status"] == "ok"}
    for p in out_dir.iterdir():  # files of an earlier run that this run did not write
        if p.is_file() and (TMP_NAME.match(p.name) or (CLIP_NAME.match(p.name) and p.name not in written)):
            p.unlink()
    out = pd.DataFrame(rows, columns=COLUMNS)
    write_table(table, out)
    log.info("%d clips in, %d written, %d rejected rows", len(df), len(written), len(out) - len(written))
    return out


def main(argv: list[str]) -> int | None:
    from ssmttm import settings
    from ssmttm.data.options import VocalsSettings
    from ssmttm.logs import setup

    p = argparse.ArgumentParser(prog="ssmttm vocals", description=__doc__.split("\n")[0])
    p.add_argument("--shard", required=True, help="two-digit shard id (for logs)")
    p.add_argument("--clips", required=True, help="segment table of this shard (clips/NN.tsv)")
    p.add_argument("--model-path", nargs="?", default=None,
                   help="htdemucs checkpoint (Demucs package .th), its folder or its weights receipt "
                        "results/weights/<name>.json (config key vocals.model names it); needed for --mode separate, "
                        "no value = none")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default; the rule's threads)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--table", required=True)
    settings.add_arguments(p, VocalsSettings)
    args = p.parse_args(argv)
    cfg = settings.from_args(p, VocalsSettings, args)
    setup()
    if not Path(args.clips).is_file():
        p.error(f"--clips: {args.clips} does not exist")
    if cfg.mode == "separate" and not args.model_path:
        p.error("--model-path is required with --mode separate")
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    try:
        remover = REMOVERS[MODES[cfg.mode]](
            model_path=args.model_path, device=cfg.device, shifts=cfg.shifts,
            overlap=cfg.overlap, batch_size=cfg.batch_size)
    except CheckpointError as exc:
        p.error(f"--model-path: {exc}")
    except ValueError as exc:
        p.error(str(exc))
    log.info("shard %s: vocals %s%s", args.shard, cfg.mode,
             f" with {args.model_path} (sha256 {remover.model_sha256[:12]})" if remover.model_sha256 else "")
    remove_vocals_shard(args.clips, remover, args.out_dir, args.table)
    return 0
