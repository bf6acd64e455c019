"""Verified downloads: one file (``fetch-file``) or one MTG-Jamendo audio tar (``fetch-shard``).

Every download streams into ``<dest>.part`` in the target folder, resumes it with an HTTP Range
request after an interruption, retries with exponential back-off, tries each mirror in turn,
verifies sha256 (hashed in chunks, never the whole file in memory) and only then renames it into
place, so no corrupt file ever sits at a final path (the pattern of MTG-Jamendo's download.py).
A source that is not http(s) is a local path (the offline demo mirror) and goes through the same
temp/verify/rename path. Tars are unpacked member by member (regular files only, no absolute or
``..`` names, no links or devices), and every track is checked against the per-track sha256 list.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import tarfile
import time
from pathlib import Path, PurePosixPath

from ssmttm import io, logs

log = logging.getLogger("ssmttm.fetch")

CHUNK = 1 << 20
_HEX = re.compile(r"^[0-9a-f]{8,64}$")
_MAX_BACKOFF_S = 60.0


class FetchError(RuntimeError):
    """A download failed after every retry and mirror, or its content did not verify."""


class NotFound(FetchError):
    """The source does not exist (HTTP 404/410, or a missing local file): never retried."""


class _Transient(FetchError):
    """One attempt failed in a way worth retrying (reset, timeout, 5xx, short body)."""


class _BadHash(FetchError):
    """The downloaded bytes do not match the expected sha256 (restart from scratch)."""


def is_http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def normalise_sha256(sha256: str | None, what: str = "sha256") -> str | None:
    """Lower-case hex; a full digest (64) or a prefix of >= 8 hex digits, as the config schema allows."""
    if sha256 is None or sha256 == "":
        return None
    s = sha256.strip().lower()
    if not _HEX.match(s):
        raise ValueError(f"{what}: {sha256!r} is not a sha256 (64 hex digits or a prefix of at least 8)")
    return s


def sha256_matches(actual: str, expected: str) -> bool:
    return actual.lower().startswith(expected.lower())


def pin_path(dest: str | os.PathLike) -> Path:
    """``<dest>.sha256``: the hash pinned on the first download (sha256sum format)."""
    return Path(f"{dest}.sha256")


def read_pin(dest: str | os.PathLike) -> str | None:
    p = pin_path(dest)
    if not p.exists():
        return None
    words = p.read_text(encoding="utf-8").split()
    return normalise_sha256(words[0], what=str(p)) if words else None


def _write_pin(dest: Path, digest: str) -> None:
    io.write_text(pin_path(dest), f"{digest}  {dest.name}\n")


def _local_path(url: str) -> Path:
    return Path(url[len("file://"):] if url.startswith("file://") else url)


def _http_attempt(session, url: str, part: Path, timeout: float, chunk: int, desc: str) -> None:
    """One GET into ``part``, resuming from its current size with ``Range: bytes=N-``."""
    import requests

    offset = part.stat().st_size if part.exists() else 0
    # identity: a gzip-encoded body would make Content-Length and Range count compressed bytes
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with session.get(url, headers=headers, stream=True, timeout=(timeout, timeout)) as r:
            if r.status_code in (404, 410):
                raise NotFound(f"{url}: HTTP {r.status_code}")
            if r.status_code == 416 and offset:
                # the .part already holds every byte: a complete candidate, verified by the caller
                return
            if r.status_code >= 500 or r.status_code in (408, 429):
                raise _Transient(f"{url}: HTTP {r.status_code}")
            if r.status_code not in (200, 206):
                raise FetchError(f"{url}: HTTP {r.status_code}")
            mode = "ab"
            if r.status_code == 200 or not offset:
                if offset:
                    log.info("%s: server ignored the Range request; restarting from byte 0", url)
                mode, offset = "wb", 0
            else:
                start = re.match(r"bytes (\d+)-", r.headers.get("Content-Range", ""))
                if not start or int(start.group(1)) != offset:
                    part.unlink(missing_ok=True)
                    raise _Transient(f"{url}: bad Content-Range {r.headers.get('Content-Range')!r}")
            length = r.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            total = offset + expected if expected is not None else None
            got = 0
            with open(part, mode) as f, logs.progress(
                total=total, initial=offset, unit="B", unit_scale=True, desc=desc, leave=False
            ) as bar:
                for block in r.iter_content(chunk_size=chunk):
                    f.write(block)
                    got += len(block)
                    bar.update(len(block))
            if expected is not None and got != expected:
                raise _Transient(f"{url}: short body ({got} of {expected} bytes)")
    except requests.RequestException as exc:
        raise _Transient(f"{url}: {type(exc).__name__}: {exc}") from exc


def _local_attempt(src: Path, part: Path, chunk: int, desc: str) -> None:
    """Copy a local file into ``part`` (no resume: local copies are cheap)."""
    if not src.is_file():
        raise NotFound(f"{src}: no such file")
    try:
        with open(src, "rb") as fin, open(part, "wb") as fout, logs.progress(
            total=src.stat().st_size, unit="B", unit_scale=True, desc=desc, leave=False
        ) as bar:
            while block := fin.read(chunk):
                fout.write(block)
                bar.update(len(block))
    except OSError as exc:
        raise _Transient(f"{src}: {exc}") from exc


def _verify_part(part: Path, expected: str | None, source: str) -> str:
    digest = io.sha256_file(part)
    if expected is not None and not sha256_matches(digest, expected):
        part.unlink(missing_ok=True)  # a bad hash is not resumable: start again from byte 0
        raise _BadHash(f"{source}: sha256 {digest} does not match expected {expected}")
    return digest


def _try_sources(session, sources, part, expected, errors, retries, timeout, backoff, chunk, desc) -> str | None:
    """Attempt each source ``retries`` + 1 times; return the verified digest of ``part`` or None.

    Every failure is appended to ``errors`` (``"not found: ..."`` for a missing source).
    """
    for source in sources:
        for attempt in range(retries + 1):
            try:
                if is_http(source):
                    _http_attempt(session, source, part, timeout, chunk, desc)
                else:
                    _local_attempt(_local_path(source), part, chunk, desc)
                return _verify_part(part, expected, source)
            except NotFound as exc:
                log.warning("%s", exc)
                errors.append(f"not found: {exc}")
                break
            except FetchError as exc:
                errors.append(str(exc))
                permanent = not isinstance(exc, (_Transient, _BadHash))
                # a local file gives the same bytes every time: a bad hash there is final
                if permanent or (isinstance(exc, _BadHash) and not is_http(source)):
                    log.warning("%s (not retried)", exc)
                    break
                if attempt == retries:
                    log.warning("%s (attempt %d/%d, giving up on this source)", exc, attempt + 1, retries + 1)
                    break
                wait = min(backoff * 2**attempt, _MAX_BACKOFF_S)
                log.warning("%s (attempt %d/%d, retrying in %.2f s)", exc, attempt + 1, retries + 1, wait)
                time.sleep(wait)
    return None


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    mirrors=(),
    retries: int = 5,
    timeout: float = 60,
    backoff: float = 1.0,
    chunk: int = CHUNK,
) -> str:
    """Fetch ``url`` (http(s) or a local path) to ``dest``, verified; return its full sha256.

    ``sha256``: 64 hex digits or a prefix of >= 8. None: verify against the pin ``<dest>.sha256``
    if present, else pin the downloaded file's hash there. A ``dest`` that already verifies is
    not fetched again. Each source (``url`` then ``mirrors``, full URLs of the same file) gets
    ``retries`` + 1 attempts with back-off ``backoff * 2**k`` s. Raises :class:`NotFound` when
    every source is missing, :class:`FetchError` otherwise.
    """
    dest = Path(dest)
    expected = normalise_sha256(sha256) or read_pin(dest)
    if dest.exists():
        digest = io.sha256_file(dest)
        if expected is None or sha256_matches(digest, expected):
            log.info("%s: present and verified (sha256 %s); skipping download", dest, digest[:12])
            if read_pin(dest) != digest:
                _write_pin(dest, digest)
            return digest
        log.warning("%s: sha256 %s does not match %s; fetching again", dest, digest[:12], expected)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = Path(f"{dest}.part")
    sources = [str(url), *[str(m) for m in mirrors]]
    for source in sources:
        if source.startswith("hf://"):
            raise ValueError(f"{source}: hf:// sources are fetched by ssmttm.weights, not fetch.download")
    errors: list[str] = []
    session = None
    if any(is_http(s) for s in sources):
        import requests

        session = requests.Session()
    try:
        digest = _try_sources(session, sources, part, expected, errors, retries, timeout, backoff, chunk, dest.name)
    finally:
        if session is not None:
            session.close()
    if digest is not None:
        # pin before the rename: a crash in between leaves a pin that matches the next download
        _write_pin(dest, digest)
        os.replace(part, dest)
        log.info("%s: verified sha256 %s", dest, digest[:12])
        return digest
    part_kept = part.exists()
    summary = "; ".join(errors[-4:])
    if errors and all(e.startswith("not found: ") for e in errors):
        raise NotFound(f"{dest.name}: not found at any source ({summary})")
    raise FetchError(
        f"{dest.name}: failed after {retries + 1} attempt(s) per source over {len(sources)} source(s)"
        f" ({summary})" + (f"; partial data kept in {part} for resume" if part_kept else "")
    )


# --- tar extraction -------------------------------------------------------------------------------


def _member_problem(m: tarfile.TarInfo, allowed_prefix: str | None) -> str | None:
    """Why a tar member must not be written (None: it is safe)."""
    if not m.isreg():
        kind = "symlink" if m.issym() else "hardlink" if m.islnk() else "device/fifo/other"
        return f"not a regular file ({kind})"
    name = m.name
    if not name or "\0" in name or "\\" in name:
        return "bad characters in name"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        return "'..' in path"
    if allowed_prefix is not None and (len(parts) < 2 or parts[0] != allowed_prefix.strip("/")):
        return f"outside {allowed_prefix.strip('/')}/"
    return None


def _clean(name: str) -> str:
    """Member name without empty and ``.`` components (``./07/1.mp3`` -> ``07/1.mp3``)."""
    return "/".join(p for p in PurePosixPath(name).parts if p not in ("", ".", "/"))


def extract_members(tar_path, out_dir, allowed_prefix=None, skip=frozenset()):
    """Unpack the safe regular files of ``tar_path`` under ``out_dir``.

    Returns ``(written, rejected)``: member names written (members in ``skip`` are not rewritten
    and not listed) and ``{name: reason}`` for members refused. Each file is written to a temp name
    and renamed; ``extractall`` is never used.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    rejected: dict[str, str] = {}
    with tarfile.open(tar_path, "r:*") as tf:
        for m in tf:
            if m.isdir():
                continue
            problem = _member_problem(m, allowed_prefix)
            rel = None if problem else _clean(m.name)
            if rel is not None and rel in skip:
                continue
            target = out.joinpath(*rel.split("/")) if rel is not None else None
            if target is not None:
                target.parent.mkdir(parents=True, exist_ok=True)
                # defence in depth: a symlinked folder already inside out_dir must not lead outside it
                if not Path(os.path.realpath(target.parent)).is_relative_to(out):
                    problem = "resolves outside the output folder"
            if problem:
                log.warning("%s: refusing tar member %r: %s", tar_path, m.name, problem)
                rejected[m.name] = problem
                continue
            src = tf.extractfile(m)
            with io.atomic_path(target) as tmp, open(tmp, "wb") as f:
                shutil.copyfileobj(src, f, CHUNK)
            written.append(rel)
    return written, rejected


def safe_extract(tar_path, out_dir, allowed_prefix: str | None = None) -> list[str]:
    """Extract regular files only (see :func:`extract_members`); return the member names written.

    Refused members (absolute, ``..``, links, devices, outside ``allowed_prefix/``) are logged and
    never written.
    """
    return extract_members(tar_path, out_dir, allowed_prefix)[0]


# --- one MTG-Jamendo shard ------------------------------------------------------------------------


def read_sha256_list(path: str | os.PathLike) -> dict[str, str]:
    """``<sha256> <name>`` lines (MTG-Jamendo's *_sha256_tars.txt / *_sha256_tracks.txt) -> {name: sha}."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            words = line.split()
            if not words:
                continue
            if len(words) != 2 or not re.fullmatch(r"[0-9a-fA-F]{64}", words[0]):
                log.warning("%s:%d: unparsable sha256 line %r (skipped)", path, n, line.rstrip())
                continue
            out[words[1].lstrip("*")] = words[0].lower()
    return out


def _join(base: str, *parts: str) -> str:
    if is_http(base):
        return "/".join([base.rstrip("/"), *parts])
    return str(_local_path(base).joinpath(*parts))


def _exists(url: str, timeout: float) -> bool:
    """Cheap existence probe (HEAD for http, stat for local paths)."""
    if not is_http(url):
        return _local_path(url).is_file()
    import requests

    try:
        r = requests.head(url, timeout=timeout, allow_redirects=True)
    except requests.RequestException:
        return True  # unknown: assume it exists (the caller then refuses to fetch it unverified)
    return r.status_code not in (404, 410)


def _verify_shard(shard_dir: Path, shard: str, listed, tracks, rejected, tar_missing: bool, list_name: str) -> None:
    """Check every file of ``shard_dir`` against ``listed``; fill ``tracks`` {"NN/num.mp3": "ok" | reason}.

    Nothing unverified may reach later stages: mismatching, unlisted and nested files are deleted.
    Listed tracks with no file get "tar missing", "rejected tar member: ..." or "missing from tar".
    """
    for p in sorted(shard_dir.iterdir()):
        rel = f"{shard}/{p.name}"
        if rel in tracks:
            continue
        if p.is_dir() and not p.is_symlink():  # MTG-Jamendo tars are flat: NN/<num>.mp3
            log.warning("%s: unexpected folder in tar; deleted", rel)
            shutil.rmtree(p)
        elif p.name.startswith(".") and ".tmp" in p.name:  # leftover temp file of an interrupted write
            p.unlink()
        elif rel not in listed:
            tracks[rel] = f"not in track sha256 list {list_name}; deleted"
        else:
            digest = io.sha256_file(p)
            if sha256_matches(digest, listed[rel]):
                tracks[rel] = "ok"
                continue
            tracks[rel] = f"sha256 mismatch: expected {listed[rel][:12]}, got {digest[:12]}; deleted"
        if p.exists() or p.is_symlink():
            log.warning("%s: %s", rel, tracks.get(rel, "deleted"))
            p.unlink()
    by_member = {_clean(k): v for k, v in rejected.items()}
    for rel in listed:
        if rel not in tracks:
            if tar_missing:
                tracks[rel] = "tar missing"
            elif rel in by_member:
                tracks[rel] = f"rejected tar member: {by_member[rel]}"
            else:
                tracks[rel] = "missing from tar"


def fetch_shard(
    shard: str,
    base_url: str,
    dataset: str,
    audio_type: str,
    tar_sums_path,
    track_sums_path,
    out_dir,
    receipt_path,
    keep_tars: bool = False,
    mirrors=(),
    retries: int = 5,
    timeout: float = 60,
    backoff: float = 1.0,
) -> dict:
    """Download, verify and unpack tar ``<dataset>_<audio_type>-<shard>.tar`` into ``out_dir/<shard>/``.

    Tracks are checked against the track sha256 list; a mismatching or unlisted file is deleted and
    its reason recorded. A tar that does not exist gives ``status: "missing"`` (the job succeeds,
    ``out_dir/<shard>/`` stays empty); other failures raise. Returns the receipt written to
    ``receipt_path``.
    """
    if not re.fullmatch(r"\d{2}", shard):
        raise ValueError(f"--shard: {shard!r} is not a two-digit shard id (00..99)")
    tar_name = f"{dataset}_{audio_type}-{shard}.tar"
    url = _join(base_url, dataset, audio_type, tar_name)
    mirror_urls = [_join(m, dataset, audio_type, tar_name) for m in mirrors]
    out_dir = Path(out_dir)
    shard_dir = out_dir / shard
    shard_dir.mkdir(parents=True, exist_ok=True)
    tar_sha = read_sha256_list(tar_sums_path).get(tar_name)
    listed = {k: v for k, v in read_sha256_list(track_sums_path).items() if k.startswith(f"{shard}/")}
    receipt = {"shard": shard, "tar": tar_name, "url": url, "status": "ok", "reason": "", "tar_sha256": tar_sha}

    tracks: dict[str, str] = {}
    for rel, sha in listed.items():  # rerun: tracks already unpacked and verified are kept
        p = out_dir / rel
        if p.is_file() and sha256_matches(io.sha256_file(p), sha):
            tracks[rel] = "ok"
    rejected: dict[str, str] = {}
    if listed and len(tracks) == len(listed):
        receipt["reason"] = "every listed track already present and verified; tar not fetched"
    elif tar_sha is None:
        if _exists(url, timeout) or any(_exists(m, timeout) for m in mirror_urls):
            raise FetchError(f"{tar_name} is not listed in {tar_sums_path}: refusing to unpack unverified audio")
        receipt.update(status="missing", reason=f"{url}: not found (and not listed in {tar_sums_path})")
    else:
        tar_path = out_dir / tar_name
        try:
            download(url, tar_path, sha256=tar_sha, mirrors=mirror_urls, retries=retries, timeout=timeout,
                     backoff=backoff)
        except NotFound as exc:
            receipt.update(status="missing", reason=str(exc))
        else:
            _, rejected = extract_members(tar_path, out_dir, allowed_prefix=shard, skip=set(tracks))
            if not keep_tars:
                tar_path.unlink()
                pin_path(tar_path).unlink(missing_ok=True)
    if receipt["status"] == "missing":
        log.warning("shard %s: %s", shard, receipt["reason"])

    missing = receipt["status"] == "missing"
    _verify_shard(shard_dir, shard, listed, tracks, rejected, missing, Path(track_sums_path).name)
    receipt["tracks"] = dict(sorted(tracks.items()))
    receipt["n_ok"] = sum(v == "ok" for v in tracks.values())
    receipt["n_bad"] = len(tracks) - receipt["n_ok"]
    io.write_json(receipt_path, receipt)
    log.info("shard %s: %s, %d tracks ok, %d rejected", shard, receipt["status"], receipt["n_ok"], receipt["n_bad"])
    return receipt


# --- command lines --------------------------------------------------------------------------------


def _common_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--retries", type=int, default=5, help="extra attempts per source (default 5)")
    p.add_argument("--timeout", type=float, default=60.0, help="connect/read timeout in seconds (default 60)")
    p.add_argument("--backoff", type=float, default=1.0, help="first back-off in seconds, doubled per retry")


def main_file(argv: list[str]) -> int:
    """``fetch-file``: one file (metadata list, checksum list), sha256-verified or pinned."""
    p = argparse.ArgumentParser(prog="ssmttm fetch-file", description=main_file.__doc__)
    p.add_argument("--url", required=True, help="http(s) URL or local path")
    p.add_argument("--mirror", action="append", default=[], help="full URL of the same file elsewhere (repeatable)")
    p.add_argument("--sha256", default="", help="64 hex or a >= 8-hex prefix; empty = pin on first download")
    p.add_argument("--out", required=True, help="destination file")
    _common_flags(p)
    args = p.parse_args(argv)
    logs.setup()
    try:
        sha = normalise_sha256(args.sha256, what="--sha256")
        download(args.url, args.out, sha256=sha, mirrors=args.mirror, retries=args.retries, timeout=args.timeout,
                 backoff=args.backoff)
    except ValueError as exc:
        p.error(str(exc))
    except FetchError as exc:
        log.error("%s", exc)
        return 1
    return 0


def main_shard(argv: list[str]) -> int:
    """``fetch-shard``: download, verify and unpack one MTG-Jamendo audio tar."""
    p = argparse.ArgumentParser(prog="ssmttm fetch-shard", description=main_shard.__doc__)
    p.add_argument("--shard", required=True, help="two-digit shard id, e.g. 07")
    p.add_argument("--base-url", required=True, help="CDN root (http/https) or a local mirror folder")
    p.add_argument("--mirror", action="append", default=[], help="another CDN root (repeatable)")
    p.add_argument("--dataset", default="raw_30s")
    p.add_argument("--audio-type", default="audio")
    p.add_argument("--tar-sha256", required=True, help="tar checksum list (<sha256> <tar name> lines)")
    p.add_argument("--track-sha256", required=True, help="track checksum list (<sha256> NN/<num>.mp3 lines)")
    p.add_argument("--out-dir", required=True, help="audio root; tracks land in <out-dir>/<shard>/")
    p.add_argument("--receipt", required=True, help="receipt JSON path")
    p.add_argument("--keep-tars", action="store_true", help="keep the tar after unpacking")
    _common_flags(p)
    args = p.parse_args(argv)
    logs.setup()
    for flag, path in (("--tar-sha256", args.tar_sha256), ("--track-sha256", args.track_sha256)):
        if not Path(path).is_file():
            p.error(f"{flag}: {path} does not exist")
    try:
        fetch_shard(args.shard, args.base_url, args.dataset, args.audio_type, args.tar_sha256, args.track_sha256,
                    args.out_dir, args.receipt, keep_tars=args.keep_tars, mirrors=args.mirror,
                    retries=args.retries, timeout=args.timeout, backoff=args.backoff)
    except ValueError as exc:
        p.error(str(exc))
    except FetchError as exc:
        log.error("shard %s: %s", args.shard, exc)
        return 1
    return 0
