"""``python -m ssmttm listen simulate``: scripted raters for the offline demo, through the real rating app.

The first ``n_raters`` rater slots of ``kit/plan.json`` go through the app's HTTP API with Flask's test
client, as a browser would: for every item of the rater's list, in order, GET ``/clips/<id>.wav``, then
POST ``/api/ratings`` with one score per question and ``played: true``. Every response must be the
success code (200 for the clip, 201 for the rating); anything else is an error naming the rater and
clip, so the demo exercises the app's validation and storage path end to end.

Scores come from a seeded model of a scripted experimenter who knows the key (``key.json``): each
system has a latent quality z ~ N(0, 1), each (system, question) a small offset, each rater a bias;
a score is ``clip(round(mid + spread * (z + offset + bias) + noise), min, max)`` with ``mid`` the
scale's middle and ``spread`` a quarter of its range. Attention clips get the scale minimum on the
checked question (``key.attention.question``), except from the last simulated rater, who gives them
the maximum, so the results show one rater dropped by the attention check (with a single simulated
rater no one fails: the results would have no rater left). The database is written in a staging
folder and copied into place (``--db``) only when every submission has succeeded.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sqlite3
from pathlib import Path

import numpy as np

from ssmttm import io, logs
from ssmttm.errors import SsmttmError
from ssmttm.listen import options as lo
from ssmttm.listen.results import load_kit

log = logging.getLogger("ssmttm.listen.simulate")

NOISE = 0.8  # per-rating noise sd, in units of `spread` (a quarter of the scale's range)
SYSTEM_OFFSET = 0.3  # sd of the (system, question) offset, same units
RATER_BIAS = 0.3  # sd of a rater's bias, same units


class SimulateError(SsmttmError, RuntimeError):
    """The rating app refused a scripted submission, or the kit cannot be simulated; names rater and clip."""


def _scores(rng: np.random.Generator, questions: list[dict], quality: dict, bias: float, system: str,
            attention: str | None, fail: bool) -> dict[str, int]:
    out = {}
    for q in questions:
        lo_, hi = int(q["min"]), int(q["max"])
        if attention == q["id"]:
            out[q["id"]] = hi if fail else lo_
            continue
        mid, spread = (lo_ + hi) / 2, (hi - lo_) / 4
        v = mid + spread * (quality[system, q["id"]] + bias + rng.normal(0.0, NOISE))
        out[q["id"]] = int(np.clip(np.round(v), lo_, hi))
    return out


def _save_db(src: Path, dst: Path) -> None:
    """Copy the finished database ``src`` to ``dst`` atomically, in rollback-journal mode (one file, no
    -wal beside it), through SQLite's backup API (a consistent copy whatever the source's journal)."""
    with io.atomic_path(dst) as tmp:
        s, d = sqlite3.connect(str(src)), sqlite3.connect(str(tmp))
        try:
            s.backup(d)
            d.execute("PRAGMA journal_mode=DELETE")
            d.commit()
        finally:
            d.close()
            s.close()


def simulate(test_dir: Path, n_raters: int, seed: int, db_path: Path) -> dict:
    """Rate the plans of the first ``n_raters`` raters of ``test_dir/kit/plan.json`` through the rating
    app into a new database at ``db_path`` (replaced if present). Returns ``{"raters", "items",
    "ratings", "clips_fetched", "failing_rater", "db"}``."""
    from ssmttm.listen.app import create_app

    test_dir, db_path = Path(test_dir), Path(db_path)
    plan_path = test_dir / lo.KIT_DIR / lo.PLAN_FILE
    try:
        plan = io.read_json(plan_path)
        test, questions, raters = str(plan["test"]), list(plan["questions"]), list(plan["raters"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SimulateError(f"{plan_path}: not a listening plan ({exc!r})") from exc
    if not 1 <= n_raters <= len(raters):
        raise SimulateError(f"{plan_path}: {n_raters} scripted raters asked for, the kit has {len(raters)} slots")
    kit = load_kit(test_dir, test)
    rng = np.random.default_rng(seed)
    z = {s: rng.normal() for s in kit.systems}
    quality = {(s, q["id"]): z[s] + rng.normal(0.0, SYSTEM_OFFSET) for s in kit.systems for q in questions}
    failing = raters[n_raters - 1]["rater"] if n_raters >= 2 else None

    db_path.parent.mkdir(parents=True, exist_ok=True)
    staging = io.temp_dir(db_path.parent, f".{db_path.name}.")
    try:
        app = create_app(test_dir, db_path=staging / lo.DB_FILE)
        client = app.test_client()
        n_items = n_ratings = fetched = 0
        for slot in raters[:n_raters]:
            code = slot["rater"]
            bias = rng.normal(0.0, RATER_BIAS)
            for item in slot["items"]:
                clip = item["clip"]
                resp = client.get(f"/clips/{clip}.wav")
                if resp.status_code != 200:
                    raise SimulateError(f"rater {code} clip {clip}: GET /clips/{clip}.wav answered "
                                        f"{resp.status_code} {resp.get_data(as_text=True)[:200]}")
                fetched += 1
                c = kit.clips[clip]
                att = kit.attention_question if c["role"] == "attention" else None
                scores = _scores(rng, questions, quality, bias, c["system"], att, code == failing)
                body = {"rater": code, "clip": clip, "scores": scores, "played": True,
                        "submission": rng.bytes(16).hex()}
                resp = client.post("/api/ratings", json=body)
                if resp.status_code != 201:
                    raise SimulateError(f"rater {code} clip {clip}: POST /api/ratings answered {resp.status_code} "
                                        f"{resp.get_data(as_text=True)[:200]}")
                n_items += 1
                n_ratings += len(scores)
        conn = app.extensions.get("ssmttm_listen", {}).get("db")
        if conn is not None:
            conn.close()  # the last connection closing folds the WAL into the database file
        _save_db(staging / lo.DB_FILE, db_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    counts = {"raters": n_raters, "items": n_items, "ratings": n_ratings, "clips_fetched": fetched,
              "failing_rater": failing, "db": str(db_path)}
    log.info("scripted raters: %d raters, %d items, %d ratings into %s (%s fails the attention check)",
             n_raters, n_items, n_ratings, db_path, failing or "no one")
    return counts


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ssmttm listen simulate", description=__doc__.split("\n\n")[0])
    p.add_argument("--test-dir", required=True, type=Path, help="results/listening/<test> (kit/, key.json)")
    p.add_argument("--raters", required=True, type=int, help="scripted raters (the first slots of the plan)")
    p.add_argument("--seed", type=int, default=0, help="seeds the qualities, the scores and the submission ids")
    p.add_argument("--db", required=True, type=Path, help="the ratings database to write (replaced)")
    a = p.parse_args(argv)
    if a.raters < 1:
        p.error("--raters must be >= 1")
    if not (a.test_dir / lo.KIT_DIR / lo.PLAN_FILE).is_file():
        p.error(f"--test-dir {a.test_dir}: no {lo.KIT_DIR}/{lo.PLAN_FILE} (build the kit first)")
    logs.setup("ssmttm.listen")
    simulate(a.test_dir, a.raters, a.seed, a.db)
    return 0
