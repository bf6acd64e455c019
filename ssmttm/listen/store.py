"""Where ratings live: the rating app's SQLite database and the ratings JSON files of a static export
(or of scripted raters), read back as one table.

One row per (rater, clip, question): the score, whether the clip had played to its end before the
rating was sent, and when the rating arrived (UTC, ISO 8601). In the database (:data:`SCHEMA`) that
triple is the primary key, and every submission carries a client-made id that may be used once, so a
resent or replayed submission changes nothing. No heavy import: sqlite3 and json only (pandas only in
:func:`read_ratings`).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from ssmttm.errors import SsmttmError
from ssmttm.listen.options import RATINGS_FORMAT

COLUMNS = ("rater", "clip", "question", "score", "played", "time_utc")

SCHEMA = """
CREATE TABLE IF NOT EXISTS ratings (
    rater TEXT NOT NULL,
    clip TEXT NOT NULL,
    question TEXT NOT NULL,
    score INTEGER NOT NULL,
    played INTEGER NOT NULL CHECK (played IN (0, 1)),
    time_utc TEXT NOT NULL,
    submission TEXT NOT NULL,
    PRIMARY KEY (rater, clip, question)
);
CREATE TABLE IF NOT EXISTS kit (
    plan_sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS submissions (
    submission TEXT PRIMARY KEY,
    rater TEXT NOT NULL,
    clip TEXT NOT NULL,
    time_utc TEXT NOT NULL
);
"""


class RatingsError(SsmttmError):
    """A ratings database or file that cannot be read (names the file)."""


def open_db(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) the ratings database at ``path``. Writes go through ``with conn:``
    blocks (one transaction each); WAL journaling so a reader never blocks the app."""
    conn = sqlite3.connect(str(path), isolation_level="DEFERRED", check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # a submitted rating is on disk when the app answers
    conn.executescript(SCHEMA)
    return conn


def bind_kit(conn: sqlite3.Connection, plan_sha256: str, where: str | Path) -> None:
    """Record which kit (the sha256 of its plan.json) the ratings of this database are given with. A database
    that already holds ratings of another kit is refused: its clip ids would name other clips (the kit
    rule keeps every kit's key in results/listening/<test>/history/<sha256[:16]>/)."""
    with conn:
        row = conn.execute("SELECT plan_sha256 FROM kit").fetchone()
        n = conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0]
        if row is not None and row[0] != plan_sha256 and n:
            raise RatingsError(f"{where}: holds {n} ratings given with the kit whose plan.json has sha256 {row[0]}, "
                               f"not the current kit ({plan_sha256}); that kit's key is in "
                               f"history/{row[0][:16]}/ beside the kit. Rate the new kit into another database "
                               f"(--db), or rebuild the kit that was rated")
        conn.execute("DELETE FROM kit")
        conn.execute("INSERT INTO kit (plan_sha256) VALUES (?)", (plan_sha256,))


def db_kit(path: str | Path) -> str | None:
    """The plan sha256 the database at ``path`` was bound to (None: none recorded)."""
    conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT plan_sha256 FROM kit").fetchone()
    except sqlite3.DatabaseError:
        return None
    finally:
        conn.close()
    return row[0] if row else None


def db_rows(path: str | Path) -> list[dict]:
    """Every rating row of the database at ``path`` (read-only; the file must exist)."""
    path = Path(path)
    if not path.is_file():
        raise RatingsError(f"{path}: no ratings database")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            cur = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM ratings ORDER BY time_utc, rater, clip, question")
            return [dict(zip(COLUMNS, row)) for row in cur.fetchall()]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise RatingsError(f"{path}: not a ratings database ({exc})") from exc


def write_ratings_json(path: str | Path, test: str, rater: str, rows: list[dict], kit_id: str | None = None) -> None:
    """One rater's ratings as a JSON file (the static export's download, scripted raters), atomically."""
    from ssmttm.io import write_json

    write_json(path, {"format": RATINGS_FORMAT, "test": test, "kit_id": kit_id, "rater": rater,
                      "ratings": [{k: r[k] for k in COLUMNS if k != "rater"} for r in rows]})


def json_rows(path: str | Path, test: str, kit_id: str | None = None) -> list[dict]:
    """The rows of one ratings JSON file; raises :class:`RatingsError` naming the file when it is not one
    of this test's ratings files, or (``kit_id``: the current plan's) when it rates another kit."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RatingsError(f"{path}: not a ratings JSON file ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != RATINGS_FORMAT:
        raise RatingsError(f"{path}: 'format' is not {RATINGS_FORMAT!r}")
    if doc.get("test") != test:
        raise RatingsError(f"{path}: ratings of test {doc.get('test')!r}, not {test!r}")
    if kit_id and doc.get("kit_id") and doc["kit_id"] != kit_id:
        raise RatingsError(f"{path}: ratings of the kit {doc['kit_id']}, not of the current kit {kit_id} (its clips "
                           f"changed since this file was rated; the rated kit's key is in the test's history/)")
    rater, ratings = doc.get("rater"), doc.get("ratings")
    if not isinstance(rater, str) or not isinstance(ratings, list):
        raise RatingsError(f"{path}: needs 'rater' (text) and 'ratings' (a list)")
    rows = []
    for i, r in enumerate(ratings):
        if not isinstance(r, dict) or any(k not in r for k in COLUMNS if k != "rater"):
            raise RatingsError(f"{path}: rating {i} needs {', '.join(k for k in COLUMNS if k != 'rater')}")
        rows.append({"rater": rater, **{k: r[k] for k in COLUMNS if k != "rater"}})
    return rows


def read_ratings(test: str, db: str | Path | None = None, json_files: list[str | Path] = (), kit_id: str | None = None):
    """All rows of the database and the JSON files as one DataFrame (:data:`COLUMNS` + ``source``, the
    file each row came from). Rows are not validated here (see ssmttm.listen.results)."""
    import pandas as pd

    rows = []
    if db is not None:
        rows += [{**r, "source": str(db)} for r in db_rows(db)]
    for f in json_files:
        rows += [{**r, "source": str(f)} for r in json_rows(f, test, kit_id)]
    return pd.DataFrame(rows, columns=[*COLUMNS, "source"])
