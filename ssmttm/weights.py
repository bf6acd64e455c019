"""The weights manifest: fetch every third-party checkpoint once, pin its sha256, run offline after.

Config ``weights.models.<name>: {source, revision, sha256, licence, used_by, notes}``; one rule
per name calls ``python -m ssmttm weights ...``, which puts the weight in ``<dir>/<name>/`` and
writes a receipt ``<dir>/<name>.json``. Loaders never download and never import this module: they
read the cache through :mod:`ssmttm.weight_cache` (:func:`~ssmttm.weight_cache.local_path`, which
returns the local path from the receipt or raises ``MissingWeightError`` saying how to fetch it,
and :func:`~ssmttm.weight_cache.offline_env`, so no hub library reaches the network).

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
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ssmttm import io, logs, settings
from ssmttm.data import fetch as _fetch
from ssmttm.errors import SsmttmError
from ssmttm.weight_cache import OFFLINE_VARS, receipt_for
# The loaders' side of the cache lives in ssmttm.weight_cache; re-exported for callers of this module.
from ssmttm.weight_cache import MissingWeightError, load_torch_file, local_path, offline_env, resolve  # noqa: F401

log = logging.getLogger("ssmttm.weights")


class WeightError(SsmttmError, RuntimeError):
    """A weight could not be fetched or does not verify; the message names the weight."""


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
        offline = any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARS)
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


@dataclass(frozen=True, kw_only=True)
class WeightSettings:
    """One weight's entry (``weights.models.<name>``) and the cache's settings (``weights``); defaults
    in the config schema only (ssmttm.settings). ``used_by``, ``notes`` (for people) and ``random_init``
    (read by the evaluation rule) are not settings of the fetch."""

    SCHEMA_NODES = ("weights", "weights.models.*")

    dir: str
    retries: int
    timeout_s: float
    source: str
    revision: str | None
    sha256: str | None
    licence: str


def main(argv: list[str]) -> int:
    """``weights``: fetch one third-party checkpoint into the weights cache and write its receipt."""
    p = argparse.ArgumentParser(prog="ssmttm weights", description=main.__doc__)
    p.add_argument("--name", required=True, help="key of weights.models")
    p.add_argument("--receipt", default=None, help="receipt JSON (default <dir>/<name>.json)")
    settings.add_arguments(p, WeightSettings)
    args = p.parse_args(argv)
    cfg = settings.from_args(p, WeightSettings, args)
    logs.setup()
    for chatty in ("httpx", "httpx2"):  # one INFO line per hub request would bury the outcome
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        if cfg.source.startswith("hf://"):
            parse_hf(cfg.source)
        fetch(args.name, cfg.source, cfg.dir, revision=cfg.revision, sha256=cfg.sha256, licence=cfg.licence,
              receipt_path=args.receipt, retries=cfg.retries, timeout=cfg.timeout_s)
    except ValueError as exc:
        p.error(str(exc))
    except WeightError as exc:  # named failures (network, hub, sha256): one message, no traceback
        log.error("%s", exc)
        return 2
    return 0
