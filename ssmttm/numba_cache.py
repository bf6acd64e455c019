"""A private numba cache per stage process, seeded from and published to a shared one.

librosa compiles its numba kernels with ``cache=True``, the ``guvectorize`` ones already when
``librosa.core`` / ``librosa.util`` are imported (the attribute metric, and the CLAP metric through
torchlibrosa). numba writes those caches into librosa's ``__pycache__`` (or into
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

:func:`private_numba_cache` is entered by :func:`ssmttm.cli.main` around every stage started from
the command line. Importing this module imports no numba (the standard library and ssmttm.io only).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from ssmttm import io

NUMBA_SEED_ENV = "SSMTTM_NUMBA_SEED"  # folder of the shared seed cache; empty: no seed (cold private caches)
PRIVATE_PREFIX = "ssmttm-numba-"
_STALE_AFTER_S = 3600.0  # a private cache left by a killed process is removed after this long

nlog = logging.getLogger("ssmttm.numba")


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
