"""The weights manifest: fetch every third-party checkpoint once, pin its sha256, run offline after.

Config ``weights.models.<name>: {source, revision, sha256, licence, used_by, notes}``; one rule
per name calls ``python -m ssmttm weights ...``, which puts the weight in ``<dir>/<name>/`` and
writes a receipt ``<dir>/<name>.json``. Loaders never download: they call :func:`resolve`, which
returns the local path from the receipt or raises :class:`MissingWeightError` saying how to fetch
it, and they run inside :func:`offline_env` so no hub library reaches the network.

Sources:
- ``https://...``: one file, via :func:`ssmttm.data.fetch.download` (resume, retries, sha256);
- ``hf://owner/repo``: the whole repository snapshot at ``revision``;
  ``hf://owner/repo/path/in/repo``: one file of it (huggingface_hub; needs internet);
- anything else: a local file or folder, copied.

A folder's sha256 is :func:`ssmttm.io.sha256_tree` (relative paths + file hashes). With no sha256
given, the first fetch pins the hash in the receipt and later fetches must match it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

from ssmttm import io, logs
from ssmttm.data import fetch as _fetch

log = logging.getLogger("ssmttm.weights")

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


class WeightError(RuntimeError):
    """A weight could not be fetched or does not verify; the message names the weight."""


class MissingWeightError(FileNotFoundError):
    """A loader asked for a weight that has not been fetched; the message says how to fetch it."""


def receipt_for(weights_dir: str | os.PathLike, name: str) -> Path:
    return Path(weights_dir) / f"{name}.json"


def _display(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (receipts stay portable)."""
    p = Path(os.path.abspath(path))
    try:
        return p.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(p)


def _hash(path: Path) -> str:
    return io.sha256_tree(path) if path.is_dir() else io.sha256_file(path)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def parse_hf(source: str) -> tuple[str, str | None]:
    """``hf://owner/repo[/path/in/repo]`` -> (``owner/repo``, ``path/in/repo`` or None)."""
    parts = [p for p in source[len("hf://"):].split("/") if p]
    if len(parts) < 2:
        raise ValueError(f"{source!r}: an hf:// source is hf://owner/repo or hf://owner/repo/path/in/repo")
    return "/".join(parts[:2]), ("/".join(parts[2:]) or None)


def _check(name: str, path: Path, expected: str | None) -> str:
    digest = _hash(path)
    if expected is not None and not _fetch.sha256_matches(digest, expected):
        raise WeightError(
            f"weight {name!r}: sha256 of {path} is {digest}, expected {expected} "
            f"(a changed upstream file, or a wrong weights.models.{name}.sha256 in the config)"
        )
    return digest


def resolve_hf_revision(source: str, revision: str | None) -> str | None:
    """The commit a hub download will use: ``revision`` as given, or the current head's commit sha
    (asked once, then pinned in the receipt as ``resolved_revision`` so the run is reproducible)."""
    if revision:
        return revision
    import huggingface_hub

    repo_id, _ = parse_hf(source)
    return huggingface_hub.HfApi().model_info(repo_id).sha


def _fetch_hf(name: str, source: str, revision: str | None, final: Path, expected: str | None) -> Path:
    """Hugging Face hub download into ``final`` via a staging folder (resumable across runs)."""
    from huggingface_hub import hf_hub_download, snapshot_download

    repo_id, filename = parse_hf(source)
    # a fixed staging name: huggingface_hub resumes its own partial files there after a crash
    staging = final.with_name(f".{final.name}.partdir")
    staging.mkdir(parents=True, exist_ok=True)
    if filename is None:
        snapshot_download(repo_id=repo_id, revision=revision, local_dir=staging)
    else:
        hf_hub_download(repo_id=repo_id, filename=filename, revision=revision, local_dir=staging)
    # local_dir bookkeeping (timestamps, etags) must not enter the folder hash
    shutil.rmtree(staging / ".cache", ignore_errors=True)
    target = staging if filename is None else staging.joinpath(*filename.split("/"))
    _check(name, target, expected)
    io.replace_dir(staging, final)
    return final if filename is None else final.joinpath(*filename.split("/"))


def _fetch_local_folder(name: str, src: Path, final: Path, expected: str | None) -> Path:
    staging = final.with_name(f".{final.name}.partdir")
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(src, staging, symlinks=False)
    try:
        _check(name, staging, expected)
    except WeightError:
        shutil.rmtree(staging)
        raise
    io.replace_dir(staging, final)
    return final


def _file_name(source: str) -> str:
    if _fetch.is_http(source):
        base = unquote(urlsplit(source).path.rstrip("/").rsplit("/", 1)[-1])
        return base or "weights.bin"
    return Path(source).name


def fetch(
    name: str,
    source: str,
    dest_dir: str | os.PathLike,
    revision: str | None = None,
    sha256: str | None = None,
    licence: str = "",
    receipt_path: str | os.PathLike | None = None,
    retries: int = 5,
    timeout: float = 60,
) -> dict:
    """Fetch weight ``name`` from ``source`` into ``<dest_dir>/<name>/`` and write its receipt.

    Returns the receipt ``{name, source, revision, sha256, path, licence, kind, bytes}``; ``path``
    is the file (``kind: "file"``) or folder (``kind: "folder"``), relative to the working
    directory when possible. ``sha256`` None: the hash pinned in an existing receipt for the same
    source and revision is enforced, else the fetched hash is pinned. A mismatch raises
    :class:`WeightError` naming the weight. A weight already present and verified is not fetched
    again (so reruns work offline).
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"--name: {name!r} is not a valid weight name")
    expected = _fetch.normalise_sha256(sha256, what=f"weights.models.{name}.sha256")
    revision = revision or None
    receipt_path = Path(receipt_path) if receipt_path else receipt_for(dest_dir, name)
    final = Path(dest_dir) / name
    old = io.read_json(receipt_path) if receipt_path.exists() else None
    same = old is not None and old.get("source") == source and old.get("revision") == revision
    if expected is None and same:
        expected = old.get("sha256")
        log.info("weight %s: enforcing the sha256 pinned in %s (%s)", name, receipt_path, str(expected)[:12])
    path, digest = None, None
    resolved = (old or {}).get("resolved_revision") if same else None
    # already present and verified: nothing to fetch (hf:// reruns need no network)
    if same and expected and old.get("path") and Path(old["path"]).exists():
        present, h = Path(old["path"]), _hash(Path(old["path"]))
        if _fetch.sha256_matches(h, expected):
            log.info("weight %s: %s present and verified; not fetched again", name, present)
            path, digest = present, h
    if path is None:
        if source.startswith("hf://"):
            resolved = resolve_hf_revision(source, revision)
            path = _fetch_hf(name, source, resolved, final, expected)
        elif not _fetch.is_http(source) and Path(source).is_dir():
            path = _fetch_local_folder(name, Path(source), final, expected)
        else:
            path = final / _file_name(source)
            try:
                digest = _fetch.download(source, path, sha256=expected, retries=retries, timeout=timeout)
            except _fetch.NotFound as exc:
                raise WeightError(f"weight {name!r}: source {source} not found ({exc})") from exc
            except _fetch.FetchError as exc:
                raise WeightError(f"weight {name!r}: {exc}") from exc
            _fetch.pin_path(path).unlink(missing_ok=True)  # the receipt is this weight's pin
    if digest is None:
        digest = _check(name, path, expected)
    receipt = {
        "name": name,
        "source": source,
        "revision": revision,
        "sha256": digest,
        "path": _display(path),
        "licence": licence,
        "kind": "folder" if path.is_dir() else "file",
        "bytes": _size(path),
    }
    if source.startswith("hf://"):
        receipt["resolved_revision"] = resolved or revision  # the hub commit actually downloaded
    io.write_json(receipt_path, receipt)
    log.info("weight %s: %s (%s, sha256 %s)", name, receipt["path"], receipt["kind"], digest[:12])
    return receipt


def _how_to_fetch(name: str, weights_dir: Path) -> str:
    return (
        f"weight {name!r} is not available: it belongs in {weights_dir.as_posix()}/{name}/ "
        f"(receipt {weights_dir.as_posix()}/{name}.json). Fetch it with\n"
        f"  snakemake --cores 1 results/weights/{name}.json\n"
        f"or\n"
        f"  python -m ssmttm weights --name {name} --source <weights.models.{name}.source> "
        f"--dir {weights_dir.as_posix()} --receipt {weights_dir.as_posix()}/{name}.json"
    )


def resolve(receipt_path_or_dir: str | os.PathLike, name: str) -> Path:
    """Local path of weight ``name`` from its receipt (a receipt file, or the weights folder).

    Checks that the path exists and, for a file, that its size matches the receipt; raises
    :class:`MissingWeightError` (naming the weight, its folder and the fetch command) otherwise.
    """
    arg = Path(receipt_path_or_dir)
    receipt = receipt_for(arg, name) if arg.is_dir() or arg.suffix != ".json" else arg
    weights_dir = receipt.parent

    def missing(why: str) -> MissingWeightError:
        return MissingWeightError(f"{_how_to_fetch(name, weights_dir)}\n({why})")

    if not receipt.is_file():
        raise missing(f"no receipt at {receipt}")
    rec = io.read_json(receipt)
    if rec.get("name") != name:
        raise missing(f"{receipt} is the receipt of {rec.get('name')!r}")
    path = Path(rec.get("path") or "")
    if not rec.get("path") or not path.exists():
        raise missing(f"the receipt points to {path}, which is gone")
    if rec.get("kind") == "file" and "bytes" in rec and path.stat().st_size != rec["bytes"]:
        raise missing(f"{path} has {path.stat().st_size} bytes, the receipt says {rec['bytes']}")
    return path


def local_path(path_or_receipt: str | os.PathLike) -> Path:
    """A loader's model argument: a weights receipt (``results/weights/<name>.json``, resolved and
    checked) or a plain local file/folder (returned as is, for users who bring their own)."""
    arg = Path(path_or_receipt)
    if arg.suffix == ".json":
        if not arg.is_file():
            name = arg.stem
            raise MissingWeightError(f"{_how_to_fetch(name, arg.parent)}\n(no receipt at {arg})")
        return resolve(arg, io.read_json(arg).get("name") or arg.stem)
    if not arg.exists():
        raise MissingWeightError(f"model path {arg} does not exist (give a weights receipt or a local checkpoint)")
    return arg


@contextlib.contextmanager
def offline_env() -> Iterator[None]:
    """Switch Hugging Face hub access off (HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1) for the block.

    huggingface_hub reads the variable once at import, so an already imported module is switched
    too; everything is restored on exit.
    """
    saved = {k: os.environ.get(k) for k in _OFFLINE_VARS}
    hub = sys.modules.get("huggingface_hub.constants")
    saved_hub = getattr(hub, "HF_HUB_OFFLINE", None)
    for k in _OFFLINE_VARS:
        os.environ[k] = "1"
    if hub is not None:
        hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if hub is not None:
            hub.HF_HUB_OFFLINE = saved_hub


def main(argv: list[str]) -> int:
    """``weights``: fetch one third-party checkpoint into the weights cache and write its receipt."""
    p = argparse.ArgumentParser(prog="ssmttm weights", description=main.__doc__)
    p.add_argument("--name", required=True, help="key of weights.models")
    p.add_argument("--source", required=True, help="https URL, hf://owner/repo[/file] or a local file/folder")
    p.add_argument("--revision", default="", help="hub commit for hf:// sources (empty = default branch)")
    p.add_argument("--sha256", default="", help="64 hex or a >= 8-hex prefix; empty = pin on first fetch")
    p.add_argument("--licence", default="", help="licence of the weights (recorded in the receipt)")
    p.add_argument("--dir", required=True, help="weights folder (weights.dir); the weight goes to <dir>/<name>/")
    p.add_argument("--receipt", default=None, help="receipt JSON (default <dir>/<name>.json)")
    p.add_argument("--retries", type=int, default=5)
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    logs.setup()
    try:
        if args.source.startswith("hf://"):
            parse_hf(args.source)
        fetch(args.name, args.source, args.dir, revision=args.revision or None, sha256=args.sha256 or None,
              licence=args.licence, receipt_path=args.receipt, retries=args.retries, timeout=args.timeout)
    except ValueError as exc:
        p.error(str(exc))
    except WeightError as exc:
        log.error("%s", exc)
        return 1
    return 0


def load_torch_file(path: str | os.PathLike, error: type[Exception], label: str, safe_globals: list | None = None):
    """``torch.load(path, weights_only=True)`` on CPU, with errors that name the model and the file.

    A file that pickles anything but tensors and plain containers is refused (``weights_only``);
    ``safe_globals`` admits extra data-only reconstructors for this one load (e.g. numpy scalars in a
    checkpoint's training metadata). Raises ``error`` for a missing, refused or unreadable file.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise error(f"{label}: weights file {path} not found (fetch it with the `weights` stage)")
    try:
        with torch.serialization.safe_globals(safe_globals or []):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise error(f"{label}: {path} refused: it pickles objects other than tensors and plain containers "
                    f"(loaded with weights_only=True): {str(exc)[:300]}") from exc
    except Exception as exc:  # zip/format errors: RuntimeError, EOFError, ...
        raise error(f"{label}: {path} is not a readable PyTorch weights file ({type(exc).__name__}: "
                    f"{str(exc)[:300]})") from exc
