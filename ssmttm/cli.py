"""``python -m ssmttm <stage> ...``: the one entry point every Snakemake rule calls.

The registry maps a stage name to ``module:function``; modules are imported only when their stage
runs, so ``python -m ssmttm --help`` and the Snakefile never import torch or model libraries.
Each stage function takes ``argv`` (a list of strings), parses its own flags and returns an exit
code (or None for success).

numba's on-disk cache. librosa compiles its numba kernels with ``cache=True``, the ``guvectorize``
ones already when ``librosa.core`` / ``librosa.util`` are imported (the attribute metric, and the
CLAP metric through torchlibrosa). numba writes those caches into librosa's ``__pycache__`` (or into
``$NUMBA_CACHE_DIR``) with no locking between processes, and it names compiled functions after a
per-process counter: two stage jobs compiling at once can leave a kernel written by one process and
its ufunc wrapper written by the other, whose symbol names do not match, and every later process
that loads the pair segfaults (numba/numba#10128). So each stage process started from the command
line compiles into a numba cache of its own (a temporary folder, removed at exit), unless the user
set ``NUMBA_CACHE_DIR``. Compiling librosa's kernels from nothing costs ~20 s of CPU per process
(measured on the 2-core build machine; ~3 s with a warm cache), so the private cache starts as a
copy of a shared seed (:func:`numba_seed_dir`), and a process that compiled something publishes its
whole cache as the new seed. The seed is only ever replaced whole, under an exclusive file lock,
and only read under a shared one, so every copy is one process's consistent set of files; nothing
else writes to it. ``make setup`` fills it once (stage ``warm-numba``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

STAGES: dict[str, tuple[str, str, str]] = {
    "check-config": ("ssmttm.cli", "check_config", "validate config files against the schema"),
    "demo-corpus": ("ssmttm.demo.corpus", "main", "build only the synthetic MTG-Jamendo corpus"),
    "demo-mirror": ("ssmttm.demo.mirror", "main", "build the offline demo mirror (corpus + tiny weights)"),
    "weights": ("ssmttm.weights", "main", "fetch one third-party checkpoint into the weights cache"),
    "fetch-file": ("ssmttm.data.fetch", "main_file", "download one metadata file, sha256-verified"),
    "fetch-shard": ("ssmttm.data.fetch", "main_shard", "download, verify and unpack one audio tar"),
    "licenses": ("ssmttm.data.licenses", "main", "parse and audit audio_licenses.txt"),
    "select": ("ssmttm.data.select", "main", "metadata filter: duration, Song Describer, licence gate"),
    "segment": ("ssmttm.data.segment", "main", "decode, validate, resample and cut clips of one shard"),
    "vocals": ("ssmttm.data.vocals", "main", "remove vocals (htdemucs) or keep them, one shard"),
    "captions": ("ssmttm.data.captions", "main", "caption the clips of one shard"),
    "manifest": ("ssmttm.data.manifest", "main", "join every shard into the clip manifest"),
    "text-embed": ("ssmttm.text.embed", "main", "encode every unique caption once (frozen T5 encoder)"),
    "tokenize": ("ssmttm.tokens.tokenize", "main", "DAC-encode the manifest clips of one shard"),
    "ceiling": ("ssmttm.tokens.ceiling", "main", "codec re-synthesis quality on a seeded sample, one shard"),
    "ceiling-summary": ("ssmttm.tokens.ceiling", "main_summary", "aggregate the codec ceiling over shards"),
    "params": ("ssmttm.models.params", "main", "trainable LM parameters per preset x variant"),
    "train": ("ssmttm.train.loop", "main", "train one experiment x seed (resumes from its last checkpoint)"),
    "train-refiner": ("ssmttm.refiner.train", "main", "train the two-stage refiner (diffusion over DAC latents)"),
    "prompt-set": ("ssmttm.generate.prompts", "main", "write a prompt set as JSON"),
    "generate": ("ssmttm.generate.generate", "main", "sample a checkpoint on a prompt set, decode to audio"),
    "reference-audio": ("ssmttm.eval.reference", "main", "fetch/cut the reference clips of the prompt set"),
    "resynth": ("ssmttm.eval.resynth", "main", "reference clips through the codec at kappa codebooks"),
    "evaluate": ("ssmttm.eval.evaluate", "main", "one metric on one system's audio (rows with protocol + CI)"),
    "tables": ("ssmttm.report.tables", "main", "study tables (CSV/Markdown/LaTeX) and evaluation curves"),
    "claims": ("ssmttm.report.claims", "main", "recompute the paper's data and FLOPs claims from this run"),
    "report-pages": ("ssmttm.report.pages", "main", "HTML pages (tables, licence audit, audio) for snakemake --report"),
    "docs-results": ("ssmttm.report.docs", "main", "paste the demo's tables and the bench figures into README/docs"),
    "loss-curves": ("ssmttm.report.curves", "main", "training-loss plots per run and overlaid"),
    "envs": ("ssmttm.envs", "main", "write envs/*.yaml from the lock files"),
    "warm-numba": ("ssmttm.eval.attributes", "main_warm", "compile librosa's numba kernels into the shared seed cache"),
}

NUMBA_SEED_ENV = "SSMTTM_NUMBA_SEED"  # folder of the shared seed cache; empty: no seed (cold private caches)
PRIVATE_PREFIX = "ssmttm-numba-"
_STALE_AFTER_S = 3600.0  # a private cache left by a killed process is removed after this long

nlog = logging.getLogger("ssmttm.numba")


def check_config(argv: list[str]) -> int:
    import argparse

    from ssmttm import config

    p = argparse.ArgumentParser(prog="ssmttm check-config", description="Validate merged config files.")
    p.add_argument("files", nargs="+", help="config files, later ones override earlier ones")
    args = p.parse_args(argv)
    try:
        config.load(*args.files)
    except config.ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print("config ok: " + " + ".join(args.files))
    return 0


def keep_freed_memory() -> None:
    """glibc malloc policy for a stage process: keep freed memory instead of returning it to the kernel.

    The stages allocate and free the same large tensors over and over (STFT buffers of the vocal
    separation, activations, embedder inputs). By default glibc unmaps every block above a dynamic
    threshold when it is freed, and the next allocation faults in pages the kernel must zero again: in
    the demo's vocal separation that was half the run time (26.4 s, of which 13.2 s system time; 18.9 s
    with this policy, measured on the 2-core build machine). Same effect as the MALLOC_MMAP_THRESHOLD_,
    MALLOC_TRIM_THRESHOLD_ and MALLOC_TOP_PAD_ environment variables. Linux/glibc only; elsewhere, or
    with another allocator, nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl or another libc: keep its defaults
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # glibc <malloc.h>
    mallopt(m_mmap_threshold, 32 << 20)  # blocks below 32 MB (glibc's maximum) come from the heap
    mallopt(m_trim_threshold, 1 << 30)  # and up to 1 GB of freed heap stays with the process
    mallopt(m_top_pad, 512 << 20)  # grow the heap in large steps (virtual; pages are touched on use)


def numba_seed_dir() -> Path | None:
    """Folder of the shared seed cache: ``$SSMTTM_NUMBA_SEED`` when set (empty: none), else
    ``${XDG_CACHE_HOME:-~/.cache}/ssmttm/numba/<key>``, one per Python environment (the cache's file
    layout follows the path of librosa's sources, so another environment could not use it anyway)."""
    env = os.environ.get(NUMBA_SEED_ENV)
    if env is not None:
        return Path(env).expanduser() if env.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):  # no home folder: no seed rather than a folder relative to the job's cwd
        return None
    key = hashlib.sha256(f"{os.path.realpath(sys.prefix)}\0{sys.version}".encode()).hexdigest()[:12]
    return Path(base) / "ssmttm" / "numba" / key


@contextlib.contextmanager
def _seed_lock(root: Path, exclusive: bool) -> Iterator[None]:
    """flock on ``root/lock``: shared to copy the seed, exclusive to replace it (released on close)."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    with open(root / "lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) of every file below ``folder``: what a process compiled shows
    up as a new or changed entry."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            out[os.path.relpath(path, folder)] = (st.st_size, st.st_mtime_ns)
    return out


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _seed(private: Path, root: Path) -> None:
    """Copy the seed into the (empty) private cache: all of it or nothing. Half a seed could hold a
    ufunc wrapper without its kernel, which this process would then compile under another name."""
    try:
        with _seed_lock(root, exclusive=False):
            if (root / "cache").is_dir():
                shutil.copytree(root / "cache", private, dirs_exist_ok=True)
    except (OSError, shutil.Error, ImportError) as exc:  # ImportError: no fcntl (not a POSIX system)
        nlog.warning("numba seed cache %s not used (%s); compiling from scratch", root, exc)
        _empty(private)


def _publish(private: Path, root: Path) -> None:
    """Make this process's whole cache the new seed (replaced whole: never mixed with another's)."""
    from ssmttm import io

    try:
        with _seed_lock(root, exclusive=True):
            for stale in root.glob(".cache.new-*"):  # left by a publisher that was killed (we hold the lock)
                shutil.rmtree(stale, ignore_errors=True)
            staging = io.temp_dir(root, ".cache.new-")
            try:
                shutil.copytree(private, staging, dirs_exist_ok=True)
                io.apply_umask_modes(staging)  # not the 0700 of the private temporary folder
                io.replace_dir(staging, root / "cache")
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (OSError, shutil.Error, ImportError) as exc:
        nlog.warning("numba seed cache %s not updated (%s)", root, exc)


def _sweep_private_caches(tmp: Path) -> None:
    """Remove private caches of our own processes that died without cleaning up (killed, segfault)."""
    now = time.time()
    try:
        entries = list(tmp.iterdir())
    except OSError:
        return
    for d in entries:
        m = re.fullmatch(re.escape(PRIVATE_PREFIX) + r"(\d+)-\w+", d.name)
        if not m:
            continue
        try:
            st = d.lstat()
            if st.st_uid != os.getuid() or now - st.st_mtime < _STALE_AFTER_S:
                continue
            os.kill(int(m.group(1)), 0)
            continue  # its process is still running
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (OSError, OverflowError):
            continue


@contextlib.contextmanager
def private_numba_cache() -> Iterator[Path | None]:
    """Point ``NUMBA_CACHE_DIR`` at a private temporary folder for this process, seeded from and
    published to the shared seed; yields the folder (None when the user set ``NUMBA_CACHE_DIR``,
    which is then left alone). Must run before numba is imported. Child processes inherit the folder:
    no stage runs numba code in several child processes at once (threads are safe: numba compiles
    under a process-wide lock)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        yield None
        return
    tmp = Path(tempfile.gettempdir())
    _sweep_private_caches(tmp)
    private = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{os.getpid()}-", dir=tmp))
    root = numba_seed_dir()
    try:
        if root is not None:
            _seed(private, root)
        before = _listing(private)
        os.environ["NUMBA_CACHE_DIR"] = str(private)
        try:
            yield private
        finally:
            os.environ.pop("NUMBA_CACHE_DIR", None)
            if root is not None and _listing(private) != before:
                _publish(private, root)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def main(argv: list[str] | None = None, own_numba_cache: bool | None = None) -> int:
    """Run one stage. ``own_numba_cache`` (default: when ``argv`` comes from the command line, i.e.
    this is the process's entry point): run it under :func:`private_numba_cache`."""
    if own_numba_cache is None:
        own_numba_cache = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m ssmttm <stage> [options]\n\nstages:")
        for name, (_, _, text) in STAGES.items():
            print(f"  {name:<14} {text}")
        return 0 if argv else 2
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"unknown stage {stage!r}; known: {', '.join(STAGES)}", file=sys.stderr)
        return 2
    module, func, _ = STAGES[stage]
    keep_freed_memory()
    if own_numba_cache and not sys.stderr.isatty():
        # A rule sends stderr to a log file, where a progress bar's carriage-return redraws pile up
        # on one line. Ours write plain lines there (ssmttm.logs.progress); this switches off the
        # bars of huggingface_hub and transformers ("Loading weights"), which read it at import.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with private_numba_cache() if own_numba_cache else contextlib.nullcontext():
        fn = getattr(importlib.import_module(module), func)
        rc = fn(rest)
    return int(rc or 0)
