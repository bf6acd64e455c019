"""listening-results (ssmttm.listen.results) on a hand-built test folder with known ratings, and the
scripted raters (ssmttm.listen.simulate) through the real rating app."""

from __future__ import annotations

import json
import math
import sqlite3
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ssmttm.listen import store
from ssmttm.listen.options import CLIPS_DIR, KEY_FILE, KIT_DIR, PLAN_FILE
from ssmttm.listen.results import ResultsError, holm, main

TEST = "mini"
SYSTEMS = ["sys_a", "sys_b", "ground_truth"]
PROMPTS = ["p0", "p1", "p2", "p3"]
BASE = {"sys_a": 4, "sys_b": 3, "ground_truth": 5}
QUESTIONS = [{"id": "ovl", "text": "Overall quality", "min": 1, "max": 5, "labels": []},
             {"id": "rel", "text": "Relevance", "min": 1, "max": 5, "labels": []}]


def rater_code(i: int) -> str:
    return f"r{i + 1:02d}-{i:04x}"


def make_test(root: Path, n_raters: int = 4, wavs: bool = False) -> Path:
    """results/listening/mini: 3 systems x 4 prompts of test clips, rated by every rater, plus one
    attention clip per rater (its own id), placed third in each rater's list."""
    d = root / "listening" / TEST
    clips, test_ids = {}, []
    for i, (s, p) in enumerate((s, p) for s in SYSTEMS for p in PROMPTS):
        cid = f"{i:010x}"
        clips[cid] = {"system": s, "prompt_id": p, "role": "test", "source": f"{s}/{p}.wav"}
        test_ids.append(cid)
    raters = []
    for r in range(n_raters):
        att = f"a{r:09x}"
        clips[att] = {"system": SYSTEMS[r % 3], "prompt_id": PROMPTS[r % 4], "role": "attention", "source": "x"}
        order = test_ids[r % 12:] + test_ids[:r % 12]
        order.insert(2, att)
        raters.append({"rater": rater_code(r), "items": [{"clip": c, "prompt": f"text of {clips[c]['prompt_id']}"}
                                                         for c in order]})
    (d / KIT_DIR / CLIPS_DIR).mkdir(parents=True)
    (d / KIT_DIR / PLAN_FILE).write_text(json.dumps({"format": "ssmttm-listening-plan/1", "test": TEST,
                                                     "seconds": 0.1, "questions": QUESTIONS, "raters": raters}))
    (d / KEY_FILE).write_text(json.dumps({"format": "ssmttm-listening-key/1", "test": TEST, "clips": clips,
                                          "systems": SYSTEMS, "prompt_ids": PROMPTS,
                                          "attention": {"question": "ovl", "max_score": 2}}))
    if wavs:
        for cid in clips:
            with wave.open(str(d / KIT_DIR / CLIPS_DIR / f"{cid}.wav"), "wb") as w:
                w.setnchannels(2), w.setsampwidth(2), w.setframerate(44100)
                w.writeframes(np.zeros(2 * 441, dtype="<i2").tobytes())
    return d


def known_score(r: int, system: str, prompt: str, q: str) -> int:
    """A score with rater and prompt effects, so intervals have width."""
    v = BASE[system] + ((r + PROMPTS.index(prompt)) % 3 - 1) * (q == "ovl") - (q == "rel" and r % 2)
    return int(min(5, max(1, v)))


def rows_of(d: Path, r: int, fail: bool = False, attention: bool = True, score=known_score) -> list[dict]:
    key = json.loads((d / KEY_FILE).read_text())["clips"]
    plan = json.loads((d / KIT_DIR / PLAN_FILE).read_text())["raters"][r]
    rows = []
    for item in plan["items"]:
        c = key[item["clip"]]
        if c["role"] == "attention" and not attention:
            continue
        for q in ("ovl", "rel"):
            s = (5 if fail else 1) if c["role"] == "attention" else score(r, c["system"], c["prompt_id"], q)
            rows.append({"rater": plan["rater"], "clip": item["clip"], "question": q, "score": s, "played": 1,
                         "time_utc": f"2025-01-01T00:{r:02d}:{len(rows) % 60:02d}Z"})
    return rows


def write_json_files(d: Path, all_rows: list[list[dict]]) -> list[Path]:
    paths = []
    for rows in all_rows:
        p = d / "files" / f"{rows[0]['rater']}.json"
        p.parent.mkdir(exist_ok=True)
        store.write_ratings_json(p, TEST, rows[0]["rater"], rows)
        paths.append(p)
    return paths


def write_db(path: Path, all_rows: list[list[dict]]) -> Path:
    conn = store.open_db(path)
    with conn:
        for i, rows in enumerate(all_rows):
            conn.executemany("INSERT INTO ratings VALUES (?, ?, ?, ?, ?, ?, ?)",
                             [(r["rater"], r["clip"], r["question"], r["score"], r["played"], r["time_utc"], f"s{i}")
                              for r in rows])
    conn.close()
    return path


def run(d: Path, out: Path, db: Path | None = None, files: list[Path] = (), bootstrap: int = 200, seed: int = 0) -> dict:
    argv = ["--test", TEST, "--test-dir", str(d), "--out-dir", str(out),
            "--settings", json.dumps({"systems": SYSTEMS, "bootstrap": bootstrap, "seed": seed})]
    if db is not None:
        argv += ["--db", str(db)]
    if files:
        argv += ["--ratings-json", *map(str, files)]
    assert main(argv) == 0
    return json.loads((out / "summary.json").read_text())


def hand_mean(all_rows: list[list[dict]], d: Path, system: str, q: str) -> float:
    key = json.loads((d / KEY_FILE).read_text())["clips"]
    s = [r["score"] for rows in all_rows for r in rows
         if r["question"] == q and key[r["clip"]]["system"] == system and key[r["clip"]]["role"] == "test"]
    return sum(s) / len(s)


def test_mos_is_the_mean_and_inside_its_interval(tmp_path):
    d = make_test(tmp_path)
    rows = [rows_of(d, r) for r in range(4)]
    summary = run(d, tmp_path / "out", files=write_json_files(d, rows))
    mos = pd.read_csv(tmp_path / "out" / "mos.csv")
    assert len(mos) == 6
    for m in mos.itertuples():
        assert m.mos == pytest.approx(hand_mean(rows, d, m.system, m.question))
        assert m.ci_low <= m.mos <= m.ci_high
        assert (m.n_ratings, m.n_raters, m.n_prompts) == (16, 4, 4)
    gt = mos[(mos.system == "ground_truth") & (mos.question == "ovl")].iloc[0]
    assert gt.mos == 5.0 or gt.ci_high > gt.ci_low  # clipped at 5: a constant system has a zero-width interval
    assert summary["raters"] == {"slots": 4, "total": 4, "kept": 4, "failed": 0, "unchecked": 0, "passed": 4,
                                 "failed_codes": [], "unchecked_codes": []}
    assert summary["ratings"]["used"] == 4 * 12 * 2 and summary["ratings"]["attention_used"] == 4 * 2
    assert summary["ratings"]["dropped_total"] == 0
    assert summary["per_system"]["sys_a"] == {"ovl": 16, "rel": 16}


def test_interval_narrows_with_more_raters(tmp_path):
    def noisy(r, system, prompt, q):
        rng = np.random.default_rng([r, SYSTEMS.index(system), PROMPTS.index(prompt), q == "ovl"])
        return int(np.clip(np.round(3 + rng.normal(0, 1.2)), 1, 5))

    widths = []
    for n in (4, 16):
        d = make_test(tmp_path / str(n), n_raters=n)
        run(d, tmp_path / f"out{n}", files=write_json_files(d, [rows_of(d, r, score=noisy) for r in range(n)]))
        mos = pd.read_csv(tmp_path / f"out{n}" / "mos.csv")
        widths.append(float((mos.ci_high - mos.ci_low).mean()))
    assert widths[1] < 0.75 * widths[0]


def test_failing_and_unchecked_raters(tmp_path):
    d = make_test(tmp_path)
    rows = [rows_of(d, 0), rows_of(d, 1), rows_of(d, 2, attention=False), rows_of(d, 3, fail=True)]
    summary = run(d, tmp_path / "out", files=write_json_files(d, rows))
    r = summary["raters"]
    assert (r["total"], r["kept"], r["failed"], r["unchecked"], r["passed"]) == (4, 3, 1, 1, 2)
    assert r["failed_codes"] == [rater_code(3)] and r["unchecked_codes"] == [rater_code(2)]
    assert summary["ratings"]["dropped"]["from raters who failed the attention check"] == 13 * 2
    mos = pd.read_csv(tmp_path / "out" / "mos.csv")
    for m in mos.itertuples():
        assert m.mos == pytest.approx(hand_mean(rows[:3], d, m.system, m.question))
        assert (m.n_raters, m.raters_kept, m.raters_failed) == (3, 3, 1)
    md = (tmp_path / "out" / "mos.md").read_text()
    assert rater_code(3) in md and "Failed: 1" in md and "Unchecked" in md and rater_code(2) in md


def test_unusable_rows_are_dropped_and_counted(tmp_path):
    d = make_test(tmp_path)
    rows = [rows_of(d, r) for r in range(4)]
    clean = [list(x) for x in rows]
    bad = dict(rows[0][0])
    rows[0] += [
        {**bad, "clip": "ffffffffff"},                   # no such clip
        {**bad, "clip": "a000000001"},                   # rater 2's attention clip
        {**bad, "question": "mood"},
        {**bad, "clip": rows[0][4]["clip"], "question": "ovl", "score": 7},
        {**bad, "score": 0},
        {**bad, "score": 2.5},
    ]
    # an unplayed rating, and the same rater's rating of that clip again in a second file (duplicate)
    rows[1][0] = {**rows[1][0], "played": 0}
    extra = [{**x, "score": 1} for x in rows[2][:3]]
    files = write_json_files(d, rows)
    dup = d / "files" / "again.json"
    store.write_ratings_json(dup, TEST, rows[2][0]["rater"], extra)
    stranger = d / "files" / "stranger.json"
    store.write_ratings_json(stranger, TEST, "r99-0000", [{**bad, "rater": "r99-0000"}])
    summary = run(d, tmp_path / "out", files=[*files, dup, stranger])
    dropped = summary["ratings"]["dropped"]
    assert dropped["clip not in the rater's plan"] == 2
    assert dropped["unknown question"] == 1
    assert dropped["score out of range"] == 2 and dropped["score not an integer"] == 1
    assert dropped["not played to the end"] == 1
    assert dropped["duplicate"] == 3 and dropped["unknown rater"] == 1
    assert summary["ratings"]["dropped_total"] == 11
    mos = pd.read_csv(tmp_path / "out" / "mos.csv")
    clean[1] = clean[1][1:]  # the unplayed rating is not in the MOS
    for m in mos.itertuples():
        assert m.mos == pytest.approx(hand_mean(clean, d, m.system, m.question))
    md = (tmp_path / "out" / "mos.md").read_text()
    assert "1 not played to the end" in md and "3 duplicate" in md


def test_pairwise_and_outputs(tmp_path):
    d = make_test(tmp_path)
    run(d, tmp_path / "out", files=write_json_files(d, [rows_of(d, r) for r in range(4)]))
    out = tmp_path / "out"
    for name in ("mos.csv", "mos.md", "mos.tex", "pairwise.csv", "pairwise.md", "pairwise.tex", "mos.png",
                 "mos.html", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "mos.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "mos.tex").read_text().isascii() and (out / "pairwise.tex").read_text().isascii()
    md = (out / "mos.md").read_text()
    assert "| System | OVL (95 % CI) | REL (95 % CI) | ratings | raters |" in md
    assert "B = 200" in md
    page = (out / "mos.html").read_text()
    assert page.count("<table>") == 2 and "<h2>Listening test mini: pairwise differences</h2>" in page
    pw = pd.read_csv(out / "pairwise.csv")
    assert len(pw) == 2 * 3
    for q in ("ovl", "rel"):
        pairs = {frozenset((r.system_a, r.system_b)) for r in pw[pw.question == q].itertuples()}
        assert pairs == {frozenset(p) for p in (("sys_a", "sys_b"), ("sys_a", "ground_truth"), ("sys_b", "ground_truth"))}
    assert pw.p.between(0, 1).all() and pw.p_holm.between(0, 1).all() and (pw.p_holm >= pw.p - 1e-12).all()
    assert (pw.n_prompts == 4).all()
    ab = pw[(pw.question == "ovl") & (pw.system_a == "sys_a") & (pw.system_b == "sys_b")].iloc[0]
    assert ab["diff"] == pytest.approx(1.0) and ab.ci_low <= 1.0 <= ab.ci_high


def test_a_ratings_file_of_another_kit_is_refused(tmp_path):
    """A ratings file carries its kit's kit_id (the static page writes it): once the kit changed (other clip
    audio under the same ids), the file is refused, naming it, instead of being read with the new key."""
    d = make_test(tmp_path)
    plan_path = d / KIT_DIR / PLAN_FILE
    plan = json.loads(plan_path.read_text())
    plan["kit_id"] = "a" * 64
    plan_path.write_text(json.dumps(plan))
    rows = [rows_of(d, r) for r in range(4)]
    p = d / "files" / "old.json"
    p.parent.mkdir()
    store.write_ratings_json(p, TEST, rows[0][0]["rater"], rows[0], kit_id="b" * 64)
    with pytest.raises(store.RatingsError, match=r"old\.json: ratings of the kit b+, not of the current kit a+"):
        run(d, tmp_path / "out", files=[p])
    store.write_ratings_json(p, TEST, rows[0][0]["rater"], rows[0], kit_id="a" * 64)
    run(d, tmp_path / "out", files=[p])


def test_db_and_json_agree_and_same_seed_same_tables(tmp_path):
    d = make_test(tmp_path)
    rows = [rows_of(d, r) for r in range(4)]
    rows[3] = rows_of(d, 3, fail=True)
    run(d, tmp_path / "a", files=write_json_files(d, rows))
    run(d, tmp_path / "b", db=write_db(tmp_path / "r.sqlite", rows))
    run(d, tmp_path / "c", db=tmp_path / "r.sqlite")
    run(d, tmp_path / "e", db=tmp_path / "r.sqlite", seed=1)
    for name in ("mos.csv", "pairwise.csv", "mos.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "c" / name).read_bytes(), name
    assert (tmp_path / "e" / "mos.csv").read_bytes() != (tmp_path / "c" / "mos.csv").read_bytes()
    # db and the same rows again as JSON: all duplicates, the tables do not change
    summary = run(d, tmp_path / "f", db=tmp_path / "r.sqlite", files=write_json_files(d, rows))
    assert summary["ratings"]["dropped"]["duplicate"] == sum(map(len, rows))
    assert (tmp_path / "f" / "mos.csv").read_bytes() == (tmp_path / "c" / "mos.csv").read_bytes()


def test_no_usable_ratings_is_a_clear_error(tmp_path):
    d = make_test(tmp_path)
    db = write_db(tmp_path / "empty.sqlite", [])
    with pytest.raises(ResultsError, match="empty.sqlite: no ratings"):
        run(d, tmp_path / "out", db=db)
    rows = [[{**r, "played": 0} for r in rows_of(d, 0)]]
    with pytest.raises(ResultsError, match=r"r01-0000\.json: none of the 26 ratings is usable.*26 not played"):
        run(d, tmp_path / "out", files=write_json_files(d, rows))
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        main(["--test", TEST, "--test-dir", str(d), "--out-dir", str(tmp_path / "out"),
              "--settings", json.dumps({"systems": SYSTEMS})])


def test_holm():
    assert holm([0.01, 0.04, math.nan, 0.03]) == pytest.approx([0.03, 0.06, math.nan, 0.06], nan_ok=True)
    assert holm([0.5, 0.9]) == [1.0, 1.0]


def test_simulated_raters_through_the_app(tmp_path):
    from ssmttm.listen.simulate import simulate

    d = make_test(tmp_path, n_raters=5, wavs=True)
    db = d / "scripted.sqlite"
    counts = simulate(d, 3, 7, db)
    assert counts["raters"] == 3 and counts["ratings"] == 3 * 13 * 2
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == 3 * 13 * 2
        assert conn.execute("SELECT COUNT(*) FROM ratings WHERE played = 1").fetchone()[0] == 3 * 13 * 2
    summary = run(d, tmp_path / "out", db=db)
    assert summary["raters"]["failed"] == 1 and summary["raters"]["failed_codes"] == [rater_code(2)]
    assert summary["raters"]["kept"] == 2
    again = tmp_path / "again.sqlite"
    simulate(d, 3, 7, again)

    def scores(path):  # time_utc is the app's clock: everything else is seeded
        return sorted((r["rater"], r["clip"], r["question"], r["score"], r["played"]) for r in store.db_rows(path))

    assert scores(again) == scores(db)
    assert not (again.parent / "again.sqlite-wal").exists()


def test_table_order_and_stale_kit(tmp_path):
    d = make_test(tmp_path)
    files = write_json_files(d, [rows_of(d, r) for r in range(2)])
    order = ["ground_truth", "sys_b", "sys_a"]
    argv = ["--test", TEST, "--test-dir", str(d), "--out-dir", str(tmp_path / "out"), "--ratings-json", *map(str, files)]
    assert main([*argv, "--settings", json.dumps({"systems": order, "bootstrap": 100})]) == 0
    assert list(pd.read_csv(tmp_path / "out" / "mos.csv").system.unique()) == order
    with pytest.raises(ResultsError, match=r"key.json: systems .* \(rebuild the kit\)"):
        main([*argv, "--settings", json.dumps({"systems": ["sys_a", "sys_c"], "bootstrap": 100})])
