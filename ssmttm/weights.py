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


class _Mismatch(WeightError):
    """The fetched weight's sha256 is not the expected one; :func:`fetch` adds how to re-pin."""

    def __init__(self, message: str, actual: str) -> None:
        super().__init__(message)
        self.actual = actual


def _check(name: str, path: Path, expected: str | None) -> str:
    digest = _hash(path)
    if expected is not None and not _fetch.sha256_matches(digest, expected):
        raise _Mismatch(f"weight {name!r}: sha256 of {path} is {digest}, expected {expected}", digest)
    return digest


def _repin_hint(name: str, actual: str, receipt_path: Path, from_receipt: bool) -> str:
    """How to accept a weight whose upstream bytes changed (sha256 ``actual``)."""
    if from_receipt:
        return (f"The expected sha256 was pinned in the receipt {_display(receipt_path)} by the first fetch. If "
                f"the weight changed upstream on purpose, delete {_display(receipt_path)} and rerun to pin the new "
                f"version (or set weights.models.{name}.sha256 to {actual}); otherwise the source now serves "
                f"something else: check it.")
    return (f"The expected sha256 is weights.models.{name}.sha256 in the config (--sha256). If the weight changed "
            f"upstream on purpose, set it to {actual} (or to null to pin the first fetch) and rerun; otherwise "
            f"the source now serves something else: check it.")


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
    staging = _staging(final)
    staging.mkdir(parents=True, exist_ok=True)
    if filename is None:
        snapshot_download(repo_id=repo_id, revision=revision, local_dir=staging)
    else:
        hf_hub_download(repo_id=repo_id, filename=filename, revision=revision, local_dir=staging)
    # local_dir bookkeeping (timestamps, etags) must not enter the folder hash
    shutil.rmtree(staging / ".cache", ignore_errors=True)
    target = staging if filename is None else staging.joinpath(*filename.split("/"))
    _check(name, target, expected)
    io.apply_umask_modes(staging)  # hub downloads may come 0600
    io.replace_dir(staging, final)
    return final if filename is None else final.joinpath(*filename.split("/"))


def _fetch_local_folder(name: str, src: Path, final: Path, expected: str | None) -> Path:
    staging = _staging(final)
    if staging.exists():
        shutil.rmtree(staging)
    # a folder made by `hf download --local-dir` carries the hub's bookkeeping in .cache/: not weights
    shutil.copytree(src, staging, symlinks=False,
                    ignore=lambda d, names: [".cache"] if Path(d) == src and ".cache" in names else [])
    try:
        _check(name, staging, expected)
    except WeightError:
        shutil.rmtree(staging)
        raise
    io.apply_umask_modes(staging)  # copytree keeps the source's modes (save_pretrained writes 0600)
    io.replace_dir(staging, final)
    return final


def _staging(final: Path) -> Path:
    """The fixed staging folder beside ``final``: a rerun resumes the partial downloads left there."""
    return final.with_name(f".{final.name}.partdir")


def _drop_empty_staging(final: Path) -> None:
    """Remove the staging folder of a failed fetch unless it holds downloaded bytes worth resuming
    (hub bookkeeping, locks and empty files are not)."""
    staging = _staging(final)
    if not staging.is_dir():
        return
    for p in staging.rglob("*"):
        if p.is_file() and p.stat().st_size > 0 and not p.name.endswith((".metadata", ".lock")):
            return
    shutil.rmtree(staging, ignore_errors=True)


def _fetch_file(name: str, source: str, final: Path, receipt_path: Path, expected: str | None, retries: int,
                timeout: float) -> tuple[Path, str]:
    """One file (https or local) into ``final/<file name>`` via the staging folder: ``final`` appears
    only complete and verified. Returns (path, sha256)."""
    staging = _staging(final)
    fname = _file_name(source)
    if staging.is_dir():  # keep this file's partial download; anything else is from another source
        for p in staging.iterdir():
            if p.name not in (fname, f"{fname}.part", f"{fname}.sha256"):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    try:
        digest = _fetch.download(source, staging / fname, sha256=expected, retries=retries, timeout=timeout)
    except _fetch.NotFound as exc:
        _drop_empty_staging(final)
        raise WeightError(f"weight {name!r}: source {source} not found ({exc})") from exc
    except _fetch.FetchError as exc:
        _drop_empty_staging(final)
        if exc.kind == "network" and _fetch.is_http(source):
            raise _unreachable(name, source, None, final, receipt_path, exc) from exc
        bad = [e for e in exc.attempts if getattr(e, "actual", None)]
        if bad:  # the download's own re-pin advice is about its .sha256 file; the receipt is the pin here
            raise _Mismatch(f"weight {name!r}: {source} has sha256 {bad[-1].actual}, expected {expected}",
                            bad[-1].actual) from exc
        raise WeightError(f"weight {name!r}: {exc}") from exc
    _fetch.pin_path(staging / fname).unlink(missing_ok=True)  # the receipt is this weight's pin
    io.replace_dir(staging, final)
    return final / fname, digest


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exception classes that mean "the server or hub could not be reached or refused": sockets,
    timeouts, TLS, urllib, and whichever HTTP and hub libraries are installed (huggingface_hub has
    used requests, httpx and httpx2). Programming errors (TypeError, KeyError, ...) are not here.
    Imported only when an exception is already on its way, so the stage imports nothing extra."""
    import socket
    import ssl
    import urllib.error

    classes: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror, socket.herror,
                                          ssl.SSLError, urllib.error.URLError]
    for module, names in (
        ("huggingface_hub.errors", ("HfHubHTTPError", "LocalEntryNotFoundError", "OfflineModeIsEnabled")),
        ("requests", ("RequestException",)),
        ("httpx", ("HTTPError", "InvalidURL")),
        ("httpx2", ("HTTPError", "InvalidURL")),
        ("urllib3.exceptions", ("HTTPError",)),
    ):
        try:
            mod = __import__(module, fromlist=["_"])
        except ImportError:
            continue
        classes += [c for c in (getattr(mod, n, None) for n in names)
                    if isinstance(c, type) and issubclass(c, BaseException)]
    return tuple(classes)


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status of a hub error (``exc.response.status_code``), if it carries one."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
        exc = exc.__cause__ or exc.__context__
    return None


def _unreachable(name: str, source: str, revision: str | None, final: Path, receipt_path: Path,
                 exc: BaseException) -> WeightError:
    """One paragraph for a fetch that failed on the network or the hub: what failed, from where, that
    nothing was written, and what to do (fix access, or fetch the files elsewhere and point
    ``--source`` at the local copy)."""
    staging = _staging(final)
    kept = f" Partial data is kept in {_display(staging)} and resumed on the next run." if staging.exists() else ""
    if isinstance(exc, _fetch.FetchError) and exc.attempts:
        # "<url>: <reason>" of the last attempt; the URL is named once, below
        last = str(exc.attempts[-1]).removeprefix(f"{source}: ")
        n = len(exc.attempts)
        cause = f"{last} ({n} attempt{'s' if n > 1 else ''})"
    else:
        cause = _fetch.describe_error(exc)
    status = _http_status(exc)
    if source.startswith("hf://"):
        repo_id, filename = parse_hf(source)
        try:
            from huggingface_hub import constants as hub_constants

            endpoint = hub_constants.ENDPOINT
        except ImportError:  # pragma: no cover - huggingface_hub is a dependency
            endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        where = (f"hub repository {repo_id}" + (f", file {filename}" if filename else "")
                 + f", revision {revision or 'default branch (main)'}, at {endpoint}")
        offline = any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in _OFFLINE_VARS)
        cls = type(exc).__name__
        if offline or cls == "OfflineModeIsEnabled":
            todo = "Hub access is switched off (HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1): unset it and rerun"
        elif status in (401, 403) or cls == "GatedRepoError":
            todo = (f"The repository needs access: accept its terms on the hub page of {repo_id} and give a token "
                    "(HF_TOKEN, or `hf auth login`), then rerun")
        elif status == 404 or cls in ("RepositoryNotFoundError", "RevisionNotFoundError", "RemoteEntryNotFoundError"):
            todo = (f"Check weights.models.{name}.source and .revision in the config (a private or gated repository "
                    "also answers 404 without a token: set HF_TOKEN), then rerun")
        else:
            todo = ("Check the network connection, the proxy settings (HTTPS_PROXY, HTTP_PROXY), HF_ENDPOINT if you "
                    "set it, and for a gated or private repository the token (HF_TOKEN), then rerun")
        rev = f" --revision {revision}" if revision else ""
        target = f" {filename}" if filename else ""
        by_hand = (f"`hf download {repo_id}{target}{rev} --local-dir <folder>` (huggingface-cli download in older "
                   "versions)")
        copy = f"<folder>/{filename}" if filename else "<folder>"
    else:
        where = None
        todo = "Check the network connection and the proxy settings (HTTPS_PROXY, HTTP_PROXY), then rerun"
        by_hand = f"`curl -L -o {_file_name(source)} {source}`"
        copy = f"<path of {_file_name(source)}>"
    return WeightError(
        f"weight {name!r}: could not fetch {source}" + (f" ({where})" if where else "") + f": {cause}. "
        f"Nothing was written to "
        f"{_display(final)}/ or {_display(receipt_path)}.{kept} {todo}; or, without network access, fetch it "
        f"on another machine with {by_hand}, copy the result to this machine and rerun with --source {copy} "
        f"(in the pipeline: set weights.models.{name}.source to that local path; its sha256 is pinned on the first "
        f"fetch)."
    )


def _file_name(source: str) -> str:
    if _fetch.is_http(source):
        base = unquote(urlsplit(source).path.rstrip("/").rsplit("/", 1)[-1])
        return base or "weights.bin"
    return Path(source).name


def _fetch_any(name: str, source: str, revision: str | None, resolved: str | None, final: Path, receipt_path: Path,
               expected: str | None, retries: int, timeout: float) -> tuple[Path, str | None, str | None]:
    """Fetch ``source`` into ``final`` by its kind; returns (path, sha256 if already computed, hub commit)."""
    path, digest = None, None
    if source.startswith("hf://"):
        try:
            resolved = resolve_hf_revision(source, revision)
            path = _fetch_hf(name, source, resolved, final, expected)
        except WeightError:
            raise
        except _network_errors() as exc:
            _drop_empty_staging(final)
            raise _unreachable(name, source, resolved or revision, final, receipt_path, exc) from exc
    elif not _fetch.is_http(source) and Path(source).is_dir():
        path = _fetch_local_folder(name, Path(source), final, expected)
    else:
        path, digest = _fetch_file(name, source, final, receipt_path, expected, retries, timeout)
    return path, digest, resolved


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
    from_receipt = sha256 is None and expected is not None  # pinned by an earlier fetch, not the config
    path, digest = None, None
    resolved = (old or {}).get("resolved_revision") if same else None
    # already present and verified: nothing to fetch (hf:// reruns need no network)
    if same and expected and old.get("path") and Path(old["path"]).exists():
        present, h = Path(old["path"]), _hash(Path(old["path"]))
        if _fetch.sha256_matches(h, expected):
            log.info("weight %s: %s present and verified; not fetched again", name, present)
            path, digest = present, h
    try:
        if path is None:
            path, digest, resolved = _fetch_any(name, source, revision, resolved, final, receipt_path, expected,
                                                retries, timeout)
        if digest is None:
            digest = _check(name, path, expected)
    except _Mismatch as exc:
        raise WeightError(f"{exc}. {_repin_hint(name, exc.actual, receipt_path, from_receipt)}") from exc
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
    for chatty in ("httpx", "httpx2"):  # one INFO line per hub request would bury the outcome
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        if args.source.startswith("hf://"):
            parse_hf(args.source)
        fetch(args.name, args.source, args.dir, revision=args.revision or None, sha256=args.sha256 or None,
              licence=args.licence, receipt_path=args.receipt, retries=args.retries, timeout=args.timeout)
    except ValueError as exc:
        p.error(str(exc))
    except WeightError as exc:  # named failures (network, hub, sha256): one message, no traceback
        log.error("%s", exc)
        return 2
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
