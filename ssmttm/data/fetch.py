"""Verified downloads: one file (``fetch-file``) or one shard's audio archive (``fetch-shard``).

Every download streams into ``<dest>.part`` in the target folder, resumes it with an HTTP Range
request after an interruption, retries with exponential back-off, tries each mirror in turn,
verifies sha256 (hashed in chunks, never the whole file in memory) and only then renames it into
place, so no corrupt file ever sits at a final path (the pattern of MTG-Jamendo's download.py).
A source that is not http(s) is a local path (the offline demo mirror) and goes through the same
temp/verify/rename path. Tars are unpacked member by member (regular files only, no absolute or
``..`` names, no links or devices, no file that a folder of the same name or a member below it
contradicts), and every track is checked against its source's per-track sha256 list. Which archive,
at which URL, checked against which lists, is the dataset source's to say (``ssmttm.data.sources``,
config key ``source.kind``): ``fetch-shard`` asks it, and it calls :func:`fetch_archive` here.

A file with no sha256 given is pinned on its first download (``<dest>.sha256``). What gets pinned must
be the real file, not a server's error or login page sent with HTTP 200: before pinning, the content
is checked against the known format of its name (:func:`content_problem`: the metadata files every
dataset source declares, and the MusicCaps csv; any other file only must not be an HTML page).
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

from ssmttm import io, logs, settings
from ssmttm.data.sources import SourceFormatError, add_metadata_argument, get_source, metadata_from_args
from ssmttm.errors import SsmttmError

log = logging.getLogger("ssmttm.fetch")

CHUNK = 1 << 20
_HEX = re.compile(r"^[0-9a-f]{8,64}$")
_MAX_BACKOFF_S = 60.0


class FetchError(SsmttmError, RuntimeError):
    """A download failed after every retry and mirror, or its content did not verify.

    ``kind``: ``"network"`` (connection, timeout, server error: worth checking the network and
    retrying), ``"mismatch"`` (the bytes did not match the expected sha256), ``"format"`` (not the
    file its name says, e.g. an HTML error page), ``"not_found"`` or ``"http"`` (another HTTP status).
    """

    kind = "http"
    attempts: tuple | list = ()  # download(): the FetchError of every failed attempt, oldest first


class NotFound(FetchError):
    """The source does not exist (HTTP 404/410, or a missing local file): never retried."""

    kind = "not_found"


class _Transient(FetchError):
    """One attempt failed in a way worth retrying (reset, timeout, 5xx, short body)."""

    kind = "network"


class _BadHash(FetchError):
    """The downloaded bytes do not match the expected sha256 (restart from scratch)."""

    kind = "mismatch"

    def __init__(self, message: str, actual: str) -> None:
        super().__init__(message)
        self.actual = actual


class BadContent(FetchError):
    """The download is not the file its name says (an HTML error page, a wrong header): not pinned."""

    kind = "format"


def describe_error(exc: BaseException) -> str:
    """``"<type>: <innermost cause>"``: HTTP libraries wrap a refused connection three or four deep
    (requests -> urllib3 -> socket); the innermost message is the one that says what happened."""
    root, seen = exc, {id(exc)}
    while True:
        nxt = root.__cause__ or root.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        root = nxt
    text = " ".join(str(root).split()) or type(root).__name__  # one line: hub messages carry newlines
    return f"{type(exc).__name__}: {text}"


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
        raise _Transient(f"{url}: {describe_error(exc)}") from exc


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


def _verify_part(part: Path, expected: str | None, source: str, name: str) -> str:
    """Full sha256 of ``part``, checked against ``expected``, or, with none (about to be pinned),
    checked to look like the file called ``name`` (:func:`content_problem`)."""
    digest = io.sha256_file(part)
    if expected is not None and not sha256_matches(digest, expected):
        part.unlink(missing_ok=True)  # a bad hash is not resumable: start again from byte 0
        raise _BadHash(f"{source}: sha256 {digest} does not match expected {expected}", digest)
    if expected is None:
        # about to be pinned: an error page pinned now would be "verified" on every later run
        problem = content_problem(part, name)
        if problem is not None:
            part.unlink(missing_ok=True)  # never resume (append to) an error page
            raise BadContent(f"{source}: {problem}")
    return digest


def _try_sources(session, sources, part, expected, errors, retries, timeout, backoff, chunk, name) -> str | None:
    """Attempt each source ``retries`` + 1 times; return the verified digest of ``part`` or None.

    ``name``: the destination's file name (progress label, and the format checked before pinning).

    Every failure is appended to ``errors`` (the FetchError of each failed attempt).
    """
    for source in sources:
        for attempt in range(retries + 1):
            try:
                if is_http(source):
                    _http_attempt(session, source, part, timeout, chunk, name)
                else:
                    _local_attempt(_local_path(source), part, chunk, name)
                return _verify_part(part, expected, source, name)
            except NotFound as exc:
                log.warning("%s", exc)
                errors.append(exc)
                break
            except FetchError as exc:
                errors.append(exc)
                # an error page is what this source serves now: try the next mirror, not the same URL
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


# --- what a file must look like before its hash is pinned ------------------------------------------

_HEAD_BYTES = 64 << 10  # enough for a header and the first records; the parsers read the rest
_HTML_START = re.compile(r"^\s*(?:<!doctype\s+html|<html|<head|<body|<\?xml|<!--|<script|<meta|<title)", re.I)
_HTML_SUFFIXES = (".html", ".htm", ".xhtml", ".xml", ".svg")


def _head_text(path: Path) -> tuple[str | None, str | None]:
    """(text of the first ``_HEAD_BYTES`` bytes, None) or (None, reason): a metadata file is UTF-8
    text; a multi-byte character cut at the end of the sample is not an error."""
    import codecs

    with open(path, "rb") as f:
        raw = f.read(_HEAD_BYTES)
    if not raw:
        return None, "the file is empty"
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(raw, final=len(raw) < _HEAD_BYTES)
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})"
    return text.lstrip("\ufeff"), None


def _looks_like_html(text: str, anywhere: bool = True) -> bool:
    """An HTML document starts like one; ``anywhere``: also an ``<html`` tag after a preamble (for
    text files only: a binary file may hold those bytes by chance)."""
    return bool(_HTML_START.match(text)) or (anywhere and "<html" in text[:2048].lower())


def _first_lines(text: str, n: int) -> list[str]:
    """The first ``n`` non-blank lines, line endings removed (the sample's last line may be cut)."""
    return [ln.rstrip("\r") for ln in text.split("\n") if ln.strip()][:n]


def tsv_header_problem(lines: list[str], want: tuple[str, ...]) -> str | None:
    """Why the first line is not the tab-separated header ``want`` (None: it is)."""
    got = tuple(f.strip() for f in lines[0].split("\t"))
    if got != want:
        return f"header {list(got)[:10]} is not the expected {list(want)}"
    return None


def csv_columns(lines: list[str]) -> list[str]:
    """The column names of a csv file's first line."""
    import csv

    return [c.strip() for c in next(csv.reader([lines[0]]), [])]


def _check_musiccaps(lines):
    from ssmttm.constants import MUSICCAPS_COLUMNS

    cols = csv_columns(lines)
    if tuple(cols) != MUSICCAPS_COLUMNS:
        return f"csv header {cols[:10]} is not the expected {list(MUSICCAPS_COLUMNS)}"
    return None


# file name -> (what it is, light check of its first lines), for the files no dataset source declares
_FORMATS = {
    "musiccaps-public.csv": ("the MusicCaps csv", _check_musiccaps),
}


def metadata_formats() -> dict:
    """File name -> (what it is, check): every dataset source's metadata files
    (:meth:`~ssmttm.data.sources.DatasetSource.metadata_checks`) and the shared ones above."""
    from ssmttm.data.sources import metadata_checks

    return {**metadata_checks(), **_FORMATS}


def content_problem(path: str | os.PathLike, name: str | None = None) -> str | None:
    """Why ``path`` is not the file called ``name`` (default: its own name), or None if it looks right.

    A light check of the start of the file, made before its sha256 is pinned: the metadata files of
    :func:`metadata_formats` must be UTF-8 text, not HTML, and start with their known header or
    first record; any other file only must not be an HTML page (unless its name says HTML). The
    source's full parsers still check every row.
    """
    path = Path(path)
    name = name or path.name
    fmt = metadata_formats().get(name)
    if fmt is None:
        if name.lower().endswith(_HTML_SUFFIXES):
            return None
        with open(path, "rb") as f:
            head = f.read(4096)
        text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
        if _looks_like_html(text, anywhere=False):
            return "the body is an HTML page, not the file (an error or login page?)"
        return None
    what, check = fmt
    text, problem = _head_text(path)
    if problem is None and _looks_like_html(text):
        problem = "the body is an HTML page (an error or login page?)"
    if problem is None:
        lines = _first_lines(text, 25)
        problem = check(lines) if lines else "the file holds only blank lines"
    return None if problem is None else f"not {what} as {name} should be: {problem}"


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    mirrors=(),
    retries: int = 5,
    timeout: float = 60,
    backoff: float = 1.0,
    chunk: int = CHUNK,
    sha256_key: str | None = None,
) -> str:
    """Fetch ``url`` (http(s) or a local path) to ``dest``, verified; return its full sha256.

    ``sha256``: 64 hex digits or a prefix of >= 8. None: verify against the pin ``<dest>.sha256``
    if present, else pin the downloaded file's hash there, once :func:`content_problem` has found
    nothing wrong with it. A ``dest`` that already verifies is not
    fetched again. Each source (``url`` then ``mirrors``, full URLs of the same file) gets
    ``retries`` + 1 attempts with back-off ``backoff * 2**k`` s. ``sha256_key``: where ``sha256``
    came from (e.g. ``source.metadata.meta.sha256``), named in a mismatch message. Raises
    :class:`NotFound` when every source is missing, :class:`FetchError` otherwise (its ``kind`` says
    why).
    """
    dest = Path(dest)
    given = normalise_sha256(sha256)
    pinned = read_pin(dest)
    expected = given or pinned
    if dest.exists():
        digest = io.sha256_file(dest)
        problem = content_problem(dest, dest.name) if expected is None else None
        if problem is not None:
            # a file left by an older run (or by hand) that was never pinned: do not pin it now
            log.warning("%s: not pinned, fetching again: %s", dest, problem)
            dest.unlink()
        elif expected is None or sha256_matches(digest, expected):
            log.info("%s: present and verified (sha256 %s); skipping download", dest, digest[:12])
            if read_pin(dest) != digest:
                _write_pin(dest, digest)
            return digest
        else:
            log.warning("%s: sha256 %s does not match %s; fetching again", dest, digest[:12], expected)
            dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = Path(f"{dest}.part")
    sources = [str(url), *[str(m) for m in mirrors]]
    for source in sources:
        if source.startswith("hf://"):
            raise ValueError(f"{source}: hf:// sources are fetched by ssmttm.weights, not fetch.download")
    errors: list[FetchError] = []
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
    summary = "; ".join(str(e) for e in errors[-4:])
    if errors and all(isinstance(e, NotFound) for e in errors):
        raise NotFound(f"{dest.name}: not found at any source ({summary})")
    kinds = {e.kind for e in errors}
    if "format" in kinds and kinds <= {"format", "not_found"}:
        raise BadContent(
            f"{dest.name}: the download from {', '.join(sources)} is not the expected file ({summary}). A server "
            f"that answers with an error, rate-limit or login page (often with HTTP 200) does this; check the URL "
            f"in a browser and the network or proxy, then rerun. Nothing was pinned and nothing was written to "
            f"{dest}."
        )
    message = (f"{dest.name}: failed after {retries + 1} attempt(s) per source over {len(sources)} source(s)"
               f" ({summary})" + (f"; partial data kept in {part} for resume" if part_kept else ""))
    mismatches = [e for e in errors if isinstance(e, _BadHash)]
    if mismatches:
        err = FetchError(message + ". " + _repin_hint(dest, mismatches[-1].actual, given, sha256_key))
        err.kind, err.attempts = "mismatch", errors
        raise err
    err = FetchError(message)
    err.kind, err.attempts = ("network" if "network" in kinds else "http"), errors
    raise err


def _repin_hint(dest: Path, actual: str, given: str | None, sha256_key: str | None) -> str:
    """How to accept a new upstream version of ``dest`` whose sha256 is ``actual``."""
    pin = pin_path(dest)
    if given is None:
        where = f" (or set {sha256_key} to it)" if sha256_key else ""
        return (f"The expected sha256 was pinned in {pin} by the first download. If the file changed upstream "
                f"on purpose, delete {pin} and rerun to pin the new version (sha256 {actual}){where}; otherwise "
                f"the source serves something else than before: check the URL.")
    key = sha256_key or "--sha256"
    return (f"The expected sha256 comes from {key}. If the file changed upstream on purpose, set {key} to the "
            f"new sha256 {actual} (or leave it empty/null to pin the next download in {pin}) and rerun.")


# --- tar extraction -------------------------------------------------------------------------------


def _name_problem(name: str, allowed_prefix: str | None) -> str | None:
    """Why a tar member name must not be written below the output folder (None: it is safe)."""
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


def _member_problem(m: tarfile.TarInfo, allowed_prefix: str | None) -> str | None:
    """Why a tar member must not be written (None: it is safe)."""
    if not m.isreg():
        kind = "symlink" if m.issym() else "hardlink" if m.islnk() else "device/fifo/other"
        return f"not a regular file ({kind})"
    return _name_problem(m.name, allowed_prefix)


def _clean(name: str) -> str:
    """Member name without empty and ``.`` components (``./07/1.mp3`` -> ``07/1.mp3``)."""
    return "/".join(p for p in PurePosixPath(name).parts if p not in ("", ".", "/"))


def _name_conflicts(members: list[tarfile.TarInfo], tar_name: str) -> dict[str, str]:
    """``{member name: reason}`` for members that cannot both exist on disk.

    A non-folder member ``NN/x.mp3`` conflicts with a folder member of the same name and with any
    member below it (``NN/x.mp3/...``): one path cannot be a file and a folder at once. Both sides
    are refused, whatever their order in the tar, so no guess is made which one is the track.
    """
    named = [(m, _clean(m.name)) for m in members if _name_problem(m.name, None) is None]
    files: dict[str, tarfile.TarInfo] = {}
    for m, rel in named:
        if not m.isdir():
            files.setdefault(rel, m)
    out: dict[str, str] = {}
    for m, rel in named:
        parts = rel.split("/")
        # a folder member clashes with a file of its own name; any member with a file among its parents
        for i in range(1, len(parts) + (1 if m.isdir() else 0)):
            f = files.get("/".join(parts[:i]))
            if f is None or f is m:
                continue
            other = (f"a folder member {m.name!r} of the same name" if i == len(parts)
                     else f"the member {m.name!r} below it")
            reason = (f"tar {tar_name} holds both the file {f.name!r} and {other} (track {_clean(f.name)}): "
                      f"one path cannot be a file and a folder, so neither is extracted")
            out.setdefault(f.name, reason)
            out.setdefault(m.name, reason)
            break
    return out


def extract_members(tar_path, out_dir, allowed_prefix=None, skip=frozenset()):
    """Unpack the safe regular files of ``tar_path`` under ``out_dir``.

    Returns ``(written, rejected)``: member names written (members in ``skip`` are not rewritten
    and not listed) and ``{name: reason}`` for members refused: not a regular file, an unsafe name
    (absolute, ``..``, outside ``allowed_prefix/``), a file/folder name conflict
    (:func:`_name_conflicts`), or a path that an existing file or folder below ``out_dir`` blocks.
    Each file is written to a temp name and renamed; ``extractall`` is never used.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    rejected: dict[str, str] = {}
    tar_name = Path(tar_path).name
    with tarfile.open(tar_path, "r:*") as tf:
        members = tf.getmembers()  # headers only; the conflict check needs every name first
        conflicts = _name_conflicts(members, tar_name)
        for m in members:
            problem = conflicts.get(m.name)
            if problem is None and m.isdir():
                continue
            problem = problem or _member_problem(m, allowed_prefix)
            rel = None if problem else _clean(m.name)
            if rel is not None and rel in skip:
                continue
            target = out.joinpath(*rel.split("/")) if rel is not None else None
            try:
                if target is not None:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    # defence in depth: a symlinked folder already inside out_dir must not lead outside it
                    if not Path(os.path.realpath(target.parent)).is_relative_to(out):
                        problem = "resolves outside the output folder"
                if not problem:
                    with io.atomic_path(target) as tmp, open(tmp, "wb") as f:
                        shutil.copyfileobj(tf.extractfile(m), f, CHUNK)
            except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
                # a file where a folder must go or the reverse, left by an earlier run: not this tar's fault
                problem = f"cannot be written below {out}: {exc.strerror} ({exc.filename})"
            if problem:
                log.warning("%s: refusing tar member %r: %s", tar_path, m.name, problem)
                rejected[m.name] = problem
                continue
            written.append(rel)
    return written, rejected


# --- one shard's audio archive ---------------------------------------------------------------------


SHARD_RE = re.compile(r"^\d{2}$")


def check_shard(shard: str) -> str:
    """``shard`` if it is a two-digit shard id, else ValueError naming ``--shard``."""
    if not SHARD_RE.fullmatch(shard):
        raise ValueError(f"--shard: {shard!r} is not a two-digit shard id (00..99)")
    return shard


def join_url(base: str, *parts: str) -> str:
    """``base`` (an http(s) URL or a local folder) joined with ``parts``."""
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
    """Check every file of ``shard_dir`` against ``listed``; fill ``tracks`` {"NN/<file>": "ok" | reason}.

    Nothing unverified may reach later stages: mismatching, unlisted, refused and nested files are
    deleted. Listed tracks with no file get "tar missing", "rejected tar member: ..." or "missing
    from tar".
    """
    by_member = {_clean(k): v for k, v in rejected.items()}
    for rel in by_member:  # a refused member is never ok, even where an earlier run left a file of its name
        if tracks.get(rel) == "ok":
            del tracks[rel]
    for p in sorted(shard_dir.iterdir()):
        rel = f"{shard}/{p.name}"
        if rel in tracks:
            continue
        if p.is_dir() and not p.is_symlink():  # archives are flat: NN/<file>
            log.warning("%s: unexpected folder in tar; deleted", rel)
            shutil.rmtree(p)
            continue
        if p.name.startswith(".") and ".tmp" in p.name:  # leftover temp file of an interrupted write
            p.unlink()
            continue
        if rel in by_member:
            tracks[rel] = f"rejected tar member: {by_member[rel]}; deleted"
        elif rel not in listed:
            tracks[rel] = f"not in track sha256 list {list_name}; deleted"
        elif p.is_symlink() or not p.is_file():
            tracks[rel] = "not a regular file; deleted"
        else:
            digest = io.sha256_file(p)
            if sha256_matches(digest, listed[rel]):
                tracks[rel] = "ok"
                continue
            tracks[rel] = f"sha256 mismatch: expected {listed[rel][:12]}, got {digest[:12]}; deleted"
        log.warning("%s: %s", rel, tracks[rel])
        p.unlink()
    for rel in listed:
        if rel not in tracks:
            if tar_missing:
                tracks[rel] = "tar missing"
            elif rel in by_member:
                tracks[rel] = f"rejected tar member: {by_member[rel]}"
            else:
                tracks[rel] = "missing from tar"


def fetch_archive(
    shard: str,
    archive: str,
    urls: list[str],
    archive_sha256: str | None,
    listed: dict[str, str],
    out_dir,
    receipt_path,
    *,
    archive_list: str,
    track_list: str,
    keep_archive: bool = False,
    retries: int = 5,
    timeout: float = 60,
    backoff: float = 1.0,
) -> dict:
    """Download, verify and unpack one shard's tar ``archive`` into ``out_dir/<shard>/``; write the receipt.

    ``urls``: the archive's full URL then its mirrors (http(s) or local paths); ``archive_sha256``:
    its expected hash, None when the archive checksum list (named ``archive_list`` in messages) has
    no line for it; ``listed``: ``{"<shard>/<file>": sha256}``, every file the shard should hold (from
    the list named ``track_list``). Tracks are checked against ``listed``; a mismatching or unlisted
    file is deleted and its reason recorded, and so is a refused tar member (a link, an unsafe name, a
    file that a folder of the same name contradicts): the shard's other tracks are kept. An archive
    that does not exist gives ``status: "missing"`` (the job succeeds, ``out_dir/<shard>/`` stays
    empty); an unlisted one that does exist raises :class:`FetchError`. Returns the receipt.
    """
    check_shard(shard)
    url, mirror_urls = urls[0], list(urls[1:])
    out_dir = Path(out_dir)
    shard_dir = out_dir / shard
    shard_dir.mkdir(parents=True, exist_ok=True)
    receipt = {"shard": shard, "tar": archive, "url": url, "status": "ok", "reason": "", "tar_sha256": archive_sha256}

    tracks: dict[str, str] = {}
    for rel, sha in listed.items():  # rerun: tracks already unpacked and verified are kept
        p = out_dir / rel
        if p.is_file() and sha256_matches(io.sha256_file(p), sha):
            tracks[rel] = "ok"
    rejected: dict[str, str] = {}
    if listed and len(tracks) == len(listed):
        receipt["reason"] = "every listed track already present and verified; tar not fetched"
    elif archive_sha256 is None:
        if _exists(url, timeout) or any(_exists(m, timeout) for m in mirror_urls):
            raise FetchError(f"{archive} is not listed in {archive_list}: refusing to unpack unverified audio")
        receipt.update(status="missing", reason=f"{url}: not found (and not listed in {archive_list})")
    else:
        tar_path = out_dir / archive
        try:
            download(url, tar_path, sha256=archive_sha256, mirrors=mirror_urls, retries=retries, timeout=timeout,
                     backoff=backoff)
        except NotFound as exc:
            receipt.update(status="missing", reason=str(exc))
        else:
            for p in shard_dir.iterdir():  # archives are flat: a folder here is an earlier run's, in a track's way
                if p.is_dir() and not p.is_symlink():
                    log.warning("%s/%s: folder left by an earlier run; deleted", shard, p.name)
                    shutil.rmtree(p)
            _, rejected = extract_members(tar_path, out_dir, allowed_prefix=shard, skip=set(tracks))
            if not keep_archive:
                tar_path.unlink()
                pin_path(tar_path).unlink(missing_ok=True)
    if receipt["status"] == "missing":
        log.warning("shard %s: %s", shard, receipt["reason"])

    missing = receipt["status"] == "missing"
    _verify_shard(shard_dir, shard, listed, tracks, rejected, missing, track_list)
    receipt["tracks"] = dict(sorted(tracks.items()))
    receipt["n_ok"] = sum(v == "ok" for v in tracks.values())
    receipt["n_bad"] = len(tracks) - receipt["n_ok"]
    io.write_json(receipt_path, receipt)
    log.info("shard %s: %s, %d tracks ok, %d rejected", shard, receipt["status"], receipt["n_ok"], receipt["n_bad"])
    return receipt


# --- command lines --------------------------------------------------------------------------------


def main_file(argv: list[str]) -> int:
    """``fetch-file``: one file (metadata list, checksum list), sha256-verified or pinned."""
    from ssmttm.data.options import FetchFileSettings

    p = argparse.ArgumentParser(prog="ssmttm fetch-file", description=main_file.__doc__)
    p.add_argument("--mirror", action="append", default=[], help="full URL of the same file elsewhere (repeatable)")
    p.add_argument("--out", required=True, help="destination file")
    settings.add_arguments(p, FetchFileSettings)
    args = p.parse_args(argv)
    cfg = settings.from_args(p, FetchFileSettings, args)
    logs.setup()
    from ssmttm.data.sources import metadata_files

    # the config key that holds this file's sha256, named when a download does not match it
    key = {v: k for k, v in metadata_files().items()}.get(Path(args.out).name)
    sha256_key = f"source.metadata.{key}.sha256 in the config" if key else None
    try:
        sha = normalise_sha256(cfg.sha256, what="--sha256")
        download(cfg.url, args.out, sha256=sha, mirrors=args.mirror, retries=cfg.retries, timeout=cfg.timeout_s,
                 backoff=cfg.backoff_s, sha256_key=sha256_key)
    except ValueError as exc:
        p.error(str(exc))
    except FetchError as exc:
        log.error("%s", exc)
        return 1
    return 0


def main_shard(argv: list[str]) -> int:
    """``fetch-shard``: download, verify and unpack one shard's audio (from the source ``--source-kind``)."""
    from ssmttm.data.options import FetchShardSettings, SourceSettings

    p = argparse.ArgumentParser(prog="ssmttm fetch-shard", description=main_shard.__doc__)
    p.add_argument("--shard", required=True, help="two-digit shard id, e.g. 07")
    add_metadata_argument(p, "tar_sha256=<tar list> track_sha256=<track list>")
    p.add_argument("--out-dir", required=True, help="audio root; tracks land in <out-dir>/<shard>/")
    p.add_argument("--receipt", required=True, help="receipt JSON path")
    settings.add_arguments(p, FetchShardSettings)
    settings.add_arguments(p, SourceSettings, prefix="source-")
    args = p.parse_args(argv)
    cfg = settings.from_args(p, FetchShardSettings, args)
    source = get_source(settings.from_args(p, SourceSettings, args, prefix="source-").kind)
    logs.setup()
    try:
        shard = check_shard(args.shard)
    except ValueError as exc:
        p.error(str(exc))
    files = metadata_from_args(p, source, args.metadata, "shard")
    try:
        source.fetch_shard(shard, files, Path(args.out_dir), Path(args.receipt), cfg)
    except SourceFormatError as exc:  # a checksum list that cannot be trusted: no usage error, a data error
        log.error("shard %s: %s", shard, exc)
        return 1
    except FetchError as exc:
        log.error("shard %s: %s", shard, exc)
        return 1
    return 0
