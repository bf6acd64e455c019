"""Dataset sources: the extension point that says where tracks, their licences and their audio come from.

A source is one module with one :class:`DatasetSource` subclass. The pipeline asks it four things and
does everything else itself (docs/ARCHITECTURE.md, "Adding a dataset source"):

- :meth:`~DatasetSource.list_tracks`: the track table (ids, audio path, shard, duration, tags);
- :meth:`~DatasetSource.licence_records`: one row per licence record (track, CC licence URL, names);
  the generic audit (``ssmttm.data.licenses``) maps URLs to CC codes, settles duplicate records,
  applies the allow-list and writes the attribution;
- :meth:`~DatasetSource.held_out`: evaluation tracks that must never be trained on;
- :meth:`~DatasetSource.fetch_shard` / :meth:`~DatasetSource.shard_audio`: one shard's audio on disk,
  verified, and the receipt saying what arrived (the download, sha256 and safe-unpacking machinery is
  ``ssmttm.data.fetch``'s).

Each source names the metadata files it reads (config keys under ``source.metadata``) and which ones
each operation needs (:attr:`~DatasetSource.reads`); the rules hand a stage exactly those files as
``--metadata KEY=PATH`` and the stage calls the source named by config key ``source.kind``.

The registry maps that name to ``"module:Class"``, imported on use: reading it imports no source and
no heavy library.
"""

from __future__ import annotations

import abc
import argparse
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Mapping

from ssmttm.errors import SsmttmError
from ssmttm.schema import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from ssmttm.data.options import FetchShardSettings

# config name (source.kind; the schema's enum lists the same names) -> "module:Class", imported on use
SOURCES: dict[str, str] = {
    "mtg-jamendo": "ssmttm.data.sources.jamendo:MtgJamendo",
}

# What the pipeline asks a source for; DatasetSource.reads maps each to the metadata keys it reads.
OPERATIONS = ("tracks", "licences", "held_out", "shard")

# list_tracks(): columns every source returns (it may add others; select carries genres, instruments,
# moods and tags into candidates.tsv, and the captions stage reads them from there).
TRACK_COLUMNS = ("track_id", "track_num", "path", "shard", "seconds", "genres", "instruments", "moods", "tags")
# licence_records(): one row per licence record, in file order.
LICENCE_RECORD_COLUMNS = (
    "track_id", "licence_url", "licence_words", "title", "artist", "track_url", "file", "record", "line", "raw",
)
PROBLEM_COLUMNS = ("file", "record", "line", "raw", "reason")


class SourceFormatError(SsmttmError, ValueError):
    """A metadata file is not the file it claims to be (wrong header, unreadable, a checksum list with
    a malformed line): the message names the file and, where there is one, the line."""


@dataclass(frozen=True)
class Problem:
    """One row or record that could not be used: where it is, what it said, and why.

    ``track_id``, ``path`` and ``shard``: what the rejected row still shows of its track ("" when
    nothing), so a stage can name the track it rejects.
    """

    line: int
    raw: str
    reason: str
    record: int | None = None
    file: str = ""
    track_id: str = ""
    path: str = ""
    shard: str = ""

    def as_dict(self) -> dict:
        return {"file": self.file, "record": self.record, "line": self.line, "raw": self.raw,
                "reason": self.reason}


def problems_frame(problems: list[Problem]) -> pd.DataFrame:
    """Problems as a table with columns PROBLEM_COLUMNS (empty table when there are none)."""
    import pandas as pd

    return pd.DataFrame([p.as_dict() for p in problems], columns=list(PROBLEM_COLUMNS))


# light check of a metadata file's first non-blank lines before its sha256 is pinned: None or the reason
FormatCheck = Callable[[list[str]], "str | None"]


class DatasetSource(abc.ABC):
    """One dataset: its tracks, their licences and their audio, behind the four operations above.

    ``files`` arguments map ``source.metadata`` keys to local paths, holding at least the keys
    :attr:`reads` names for the operation. A malformed row is returned as a :class:`Problem` (the
    stages list it); a file that is not what it should be raises :class:`SourceFormatError`.

    Audio layout (what ``segment`` reads): the files of shard ``NN`` land in ``<audio dir>/NN/`` and
    the ``path`` column of :meth:`list_tracks` is relative to ``<audio dir>`` (``NN/<file>``).
    """

    name: ClassVar[str]  # the registry key (config source.kind)
    title: ClassVar[str]  # what attribution files call the dataset ("MTG-Jamendo")
    # source.metadata key -> local file name (results/data/source/metadata/<name>)
    metadata: ClassVar[Mapping[str, str]]
    # operation (OPERATIONS) -> the metadata keys it reads; the rules declare exactly these as inputs
    reads: ClassVar[Mapping[str, tuple[str, ...]]]
    n_shards: ClassVar[int]  # shard ids are "00".."<n_shards - 1>" (config key shards is at most this)
    # select's rejection reason and detail for a held-out track
    held_out_reason: ClassVar[tuple[str, str]] = ("held out", "evaluation track of the dataset")
    # lines under the attribution lists: where the licences come from, the metadata's own licence
    attribution_note: ClassVar[str] = ""

    @abc.abstractmethod
    def list_tracks(self, files: Mapping[str, Path]) -> tuple[pd.DataFrame, list[Problem]]:
        """Every track of the dataset: ``(tracks, problems)``.

        ``tracks``: one row per usable track, with (at least) columns :data:`TRACK_COLUMNS`: ``track_id`` str
        (unique), ``track_num`` int64 (unique; names the clips, ``<track_num>_<k>``), ``path`` str (audio
        file relative to the audio dir, ``<shard>/<file>``), ``shard`` str (``"NN"``), ``seconds``
        float64 (duration), ``genres`` / ``instruments`` / ``moods`` / ``tags`` str (";"-joined, may be
        ""). ``problems``: the rows that could not be read (with track_id/path/shard where they show).
        """

    @abc.abstractmethod
    def licence_records(self, files: Mapping[str, Path]) -> tuple[pd.DataFrame, list[Problem]]:
        """Every licence record: ``(records, problems)``.

        ``records``: one row per readable record, columns :data:`LICENCE_RECORD_COLUMNS`: ``track_id``,
        ``licence_url`` (a creativecommons.org licence URL, as written), ``licence_words`` (the licence
        as the record names it in words, "" if it does not: checked against the URL), ``title``,
        ``artist``, ``track_url`` (what an attribution copies), ``file`` / ``record`` / ``line`` /
        ``raw`` (where the record is, for reports). A track may have several records. ``problems``:
        unreadable records; one with a ``track_id`` excludes that track as unparsable.
        """

    @abc.abstractmethod
    def held_out(self, files: Mapping[str, Path], tracks: pd.DataFrame) -> set[str]:
        """Ids (of ``tracks``, the :meth:`list_tracks` table) of the evaluation tracks that must never
        be trained on (``filter.exclude_song_describer``); an empty set when the dataset has none."""

    @abc.abstractmethod
    def shard_audio(self, shard: str, cfg: FetchShardSettings) -> str:
        """File name of shard ``shard``'s audio archive (the receipt's ``tar``)."""

    @abc.abstractmethod
    def fetch_shard(self, shard: str, files: Mapping[str, Path], out_dir: Path, receipt_path: Path,
                    cfg: FetchShardSettings) -> dict:
        """Bring shard ``shard``'s audio into ``out_dir/<shard>/``, verified, and write the receipt.

        The receipt (also returned) is ``{"shard", "tar", "url", "status": "ok" | "missing", "reason",
        "tracks": {path: "ok" | reason}, "n_ok", "n_bad"}``; ``segment`` trusts only ``"ok"`` tracks.
        :func:`ssmttm.data.fetch.fetch_archive` does the download, sha256 checks and safe unpacking.
        """

    def metadata_checks(self) -> Mapping[str, tuple[str, FormatCheck]]:
        """Local file name -> (what the file is, light check of its first lines), run before a file's
        sha256 is first pinned so an error page is never pinned; a file not listed is only checked
        not to be HTML."""
        return {}

    def keys_for(self, *operations: str) -> tuple[str, ...]:
        """The metadata keys ``operations`` read, in order, each once."""
        unknown = [op for op in operations if op not in OPERATIONS]
        if unknown:
            raise ValueError(f"unknown source operation(s) {unknown} (known: {', '.join(OPERATIONS)})")
        return tuple(dict.fromkeys(k for op in operations for k in self.reads.get(op, ())))


def get_source(name: str) -> DatasetSource:
    """The source called ``name`` (config key ``source.kind``), its module imported now."""
    try:
        target = SOURCES[name]
    except KeyError:
        raise ConfigError(f"config key source.kind: unknown dataset source {name!r} "
                          f"(known: {', '.join(sorted(SOURCES))})") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)()


def metadata_files(kind: str | None = None) -> dict[str, str]:
    """``source.metadata`` key -> local file name: the files every configuration may fetch
    (``ssmttm.constants.METADATA_FILES``) and those of source ``kind`` (of every source when None)."""
    from ssmttm.constants import METADATA_FILES

    out = dict(METADATA_FILES)
    for name in SOURCES if kind is None else (kind,):
        out.update(get_source(name).metadata)
    return out


def metadata_checks() -> dict[str, tuple[str, FormatCheck]]:
    """The :meth:`DatasetSource.metadata_checks` of every registered source, by local file name."""
    out: dict[str, tuple[str, FormatCheck]] = {}
    for name in SOURCES:
        out.update(get_source(name).metadata_checks())
    return out


# --- the --metadata flag of the stages that read a source's files ------------------------------------

def add_metadata_argument(parser: argparse.ArgumentParser, example: str) -> None:
    """``--metadata KEY=PATH ...``: the source's metadata files the stage reads, by config key."""
    parser.add_argument("--metadata", nargs="+", required=True, metavar="KEY=PATH",
                        help="the metadata files the source (--source-kind) reads here, each as "
                             f"<source.metadata key>=<path>; mtg-jamendo: {example}")


def metadata_from_args(parser: argparse.ArgumentParser, source: DatasetSource, values: list[str],
                       *operations: str) -> dict[str, Path]:
    """``--metadata`` values -> {key: path}, or ``parser.error`` naming a missing, unknown or absent file."""
    files: dict[str, Path] = {}
    for value in values:
        key, sep, path = value.partition("=")
        if not sep or not key or not path:
            parser.error(f"--metadata: {value!r} is not KEY=PATH")
        files[key] = Path(path)
    need = source.keys_for(*operations)
    if missing := [k for k in need if k not in files]:
        parser.error(f"--metadata: no file for key(s) {missing}; source {source.name} reads {list(need)} "
                     f"(config keys source.metadata.<key>)")
    if extra := sorted(set(files) - set(need)):
        parser.error(f"--metadata: key(s) {extra} are not read here (source {source.name} reads {list(need)})")
    for key, path in files.items():
        if not path.is_file():
            parser.error(f"--metadata {key}: no such file {path}")
    return files


__all__ = [
    "LICENCE_RECORD_COLUMNS", "OPERATIONS", "PROBLEM_COLUMNS", "SOURCES", "TRACK_COLUMNS", "DatasetSource",
    "FormatCheck", "Problem", "SourceFormatError", "add_metadata_argument", "get_source", "metadata_checks",
    "metadata_files", "metadata_from_args", "problems_frame",
]
