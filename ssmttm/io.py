"""Atomic file writes and hashing shared by every stage.

Every file a stage produces is written to a temporary name in the target folder and renamed into
place, so an interrupted job never leaves a half-written file at a final path. ``tempfile`` creates
those temporary files 0600 and folders 0700 whatever the umask; :func:`file_mode` and :func:`dir_mode`
give them the permissions a plain ``open()``/``mkdir()`` would have had (0644/0755 under umask 022)
before they are renamed into place, so results on a shared machine are readable as the user intends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, Iterator

_UMASK_LOCK = threading.Lock()


def _umask_from_proc() -> int | None:
    """The umask from ``/proc/self/status`` (Linux >= 4.7): a read, so no other thread is disturbed."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def current_umask() -> int:
    """The process umask, read afresh on each call (a stage or a test may change it).

    There is no getter: elsewhere the mask is set and restored at once. That swap is process-wide,
    so a file another thread creates in between gets the temporary mask; 0o077 is used for it (not
    the usual 0) so such a file comes out too private rather than world-writable. The lock keeps
    two of our own callers from interleaving their swaps and losing the real value.
    """
    mask = _umask_from_proc()
    if mask is not None:
        return mask
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """Permission bits of a new file under the current umask (0o644 under umask 022)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """Permission bits of a new folder under the current umask (0o755 under umask 022)."""
    return 0o777 & ~current_umask()


def apply_umask_modes(path: str | os.PathLike) -> None:
    """Give ``path`` (a file, or a folder and everything below it) the permissions a plain
    ``open()``/``mkdir()`` would get under the current umask: for outputs written by libraries that
    choose 0600 themselves (safetensors, ``save_pretrained``, hub downloads) or copied from such files.
    A file with an execute bit keeps execute bits (as far as the umask allows); links are not followed."""
    fmode, dmode = file_mode(), dir_mode()
    path = Path(path)

    def fix(p: Path) -> None:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            return
        if stat.S_ISDIR(st.st_mode):
            want = dmode
        else:
            want = dmode if st.st_mode & 0o111 else fmode
        if stat.S_IMODE(st.st_mode) != want:
            os.chmod(p, want)

    fix(path)
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for n in dirs + files:
                fix(Path(root) / n)


def temp_dir(parent: str | os.PathLike, prefix: str, suffix: str = "") -> Path:
    """A fresh staging folder in ``parent`` (``tempfile.mkdtemp``) with umask permissions instead of
    mkdtemp's 0700, for folders that are filled and then renamed into place (:func:`replace_dir`)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    try:
        os.chmod(tmp, dir_mode())
    except BaseException:
        tmp.rmdir()
        raise
    return tmp


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (``hashlib.file_digest``: read in blocks, never whole into memory)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha256_tree(root: str | os.PathLike) -> str:
    """Order-independent sha256 over every file below ``root`` (relative path + content hash)."""
    root = Path(root)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        rel = p.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0" + sha256_file(p).encode() + b"\n")
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds.

    ``suffix`` keeps the final extension on the temporary name, for writers that infer the format
    from it (soundfile, pyarrow).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp made it 0600; a writer may also have recreated the file: set the mode last
        os.chmod(tmp_path, file_mode())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open()`` that writes to a temporary file and renames it into place on success."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_table(path: str | os.PathLike, df) -> None:
    """Write a pandas DataFrame atomically; format from the extension (.tsv, .csv, .parquet)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif path.suffix == ".tsv":
            df.to_csv(tmp, sep="\t", index=False)
        elif path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            raise ValueError(f"{path}: unknown table format {path.suffix!r} (use .tsv, .csv or .parquet)")


def replace_dir(staging: str | os.PathLike, final: str | os.PathLike) -> None:
    """Replace folder ``final`` by the complete folder ``staging`` (same parent): the old folder is
    renamed aside, the new one renamed in, then the old one removed, so ``final`` is never half
    written."""
    staging, final = Path(staging), Path(final)
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    if old.exists():
        shutil.rmtree(old)


def dataclass_from_dict(cls, d: dict):
    """``cls(**d)`` for a dataclass read back from JSON, refusing keys ``cls`` does not have (a config
    written by other code, or by a newer version, is an error naming the keys, not silently dropped)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}.from_dict: unknown keys {unknown}")
    return cls(**d)
