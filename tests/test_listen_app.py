"""The rating app (ssmttm.listen.app): its HTTP API through Flask's test client, the clip route's
refusals, resume, the static export, and that nothing it serves can name a system.

The kit is built by hand in tmp_path: 2 raters x 3 items over 4 clips (so each rater has a clip the
other lacks), questions ovl/rel 1-5, tiny WAV files, and a key.json next to kit/ naming systems that
must never appear in a response.
"""

from __future__ import annotations

import json
import re
import sqlite3
import wave
from datetime import datetime
from pathlib import Path

import pytest

from ssmttm.listen import app as listen_app
from ssmttm.listen.app import PlanError, create_app, export, load_kit

CLIPS = ["0a1b2c3d4e", "1b2c3d4e5f", "2c3d4e5f60", "3d4e5f6071"]
R1, R2 = "r01-3fa2", "r02-9c1e"
SYSTEMS = ["simba_k1", "transformer_k1", "ground_truth"]
QUESTIONS = [
    {"id": "ovl", "text": "Overall quality", "min": 1, "max": 5,
     "labels": ["Bad", "Poor", "Fair", "Good", "Excellent"]},
    {"id": "rel", "text": "Relevance to the text", "min": 1, "max": 5, "labels": []},
]


def _wav(path: Path, frames: int = 64) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(bytes(4 * frames))


@pytest.fixture
def test_dir(tmp_path) -> Path:
    d = tmp_path / "listening" / "demo"
    clips = d / "kit" / "clips"
    clips.mkdir(parents=True)
    for c in CLIPS:
        _wav(clips / f"{c}.wav")
    _wav(clips / "ffffffffff.wav")  # a file in the folder that the plan does not name: never served
    plan = {"format": "ssmttm-listening-plan/1", "test": "demo", "seconds": 5.0, "questions": QUESTIONS,
            "raters": [
                {"rater": R1, "items": [{"clip": c, "prompt": f"calm piano {i}"} for i, c in enumerate(CLIPS[:3])]},
                {"rater": R2, "items": [{"clip": c, "prompt": f"fast drums {i}"} for i, c in enumerate(CLIPS[1:])]}]}
    (d / "kit" / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    key = {"format": "ssmttm-listening-key/1", "test": "demo", "systems": SYSTEMS,
           "clips": {c: {"system": SYSTEMS[i % 3], "prompt_id": f"sdd_{i}", "role": "test",
                         "source": f"results/generate/{SYSTEMS[i % 3]}/x.wav"} for i, c in enumerate(CLIPS)}}
    (d / "key.json").write_text(json.dumps(key), encoding="utf-8")
    return d


@pytest.fixture
def client(test_dir):
    app = create_app(test_dir)
    yield app.test_client()
    app.extensions["ssmttm_listen"]["db"].close()


def _sub(n: int) -> str:
    return f"{n:032x}"


def _body(rater=R1, clip=CLIPS[0], scores=None, played=True, submission=None, n=1) -> dict:
    return {"rater": rater, "clip": clip, "scores": {"ovl": 4, "rel": 3} if scores is None else scores,
            "played": played, "submission": submission or _sub(n)}


def _counts(test_dir: Path) -> tuple[int, int]:
    conn = sqlite3.connect(test_dir / "ratings.sqlite")
    try:
        return tuple(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("ratings", "submissions"))
    finally:
        conn.close()


def test_plan_progress_and_pages(client):
    r = client.get(f"/api/plan/{R1}")
    assert r.status_code == 200
    assert r.json == {"test": "demo", "seconds": 5.0, "questions": QUESTIONS,
                      "items": [{"clip": c, "prompt": f"calm piano {i}"} for i, c in enumerate(CLIPS[:3])]}
    assert client.get(f"/api/progress/{R1}").json == {"rated": {}}
    for url in ("/api/plan/r09-0000", "/api/progress/r09-0000", "/api/plan/nobody", "/rate/r09-0000", "/rate/<b>"):
        r = client.get(url)
        assert r.status_code == 404 and "error" in r.json, url
    page = client.get(f"/rate/{R1}")
    assert page.status_code == 200 and 'data-mode="server"' in page.text and f'data-rater="{R1}"' in page.text
    for needed in ('id="player"', 'id="prompt"', 'id="progress"', 'id="submit"', 'id="done"', 'id="error"'):
        assert needed in page.text
    assert "/static/rate.js" in page.text and "<script>" not in page.text  # no inline script (CSP)
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    landing = client.get("/")
    assert 'id="rater"' in landing.text and 'id="start"' in landing.text and 'data-rater=""' in landing.text
    assert client.get("/static/rate.js").status_code == 200 and client.get("/static/rate.css").status_code == 200


def test_clip_route_and_traversal(client, test_dir):
    r = client.get(f"/clips/{CLIPS[0]}.wav")
    assert r.status_code == 200 and r.mimetype == "audio/wav"
    assert r.data == (test_dir / "kit" / "clips" / f"{CLIPS[0]}.wav").read_bytes()
    r.close()
    bad = ["/clips/ffffffffff.wav",  # present in clips/ but not in the plan
           "/clips/0123456789.wav", f"/clips/{CLIPS[0].upper()}.wav", f"/clips/{CLIPS[0]}", f"/clips/{CLIPS[0]}.mp3",
           "/clips/..%2Fkey.json", "/clips/../../key.json", "/clips/..%2F..%2Fkey.json", "/clips/%2e%2e/plan.json",
           "/clips/..%2Fplan.json", "/clips/", "/key.json", "/kit/plan.json", "/plan.json", "/static/../key.json",
           "/static/..%2F..%2F..%2Fkey.json"]
    for url in bad:
        r = client.get(url)
        assert r.status_code == 404, url
        assert b"simba" not in r.data, url


def test_valid_submission_writes_rows(client, test_dir):
    r = client.post("/api/ratings", json=_body())
    assert r.status_code == 201 and r.json == {"ok": True, "rated": 1, "total": 3}
    conn = sqlite3.connect(test_dir / "ratings.sqlite")
    rows = conn.execute("SELECT rater, clip, question, score, played, time_utc, submission FROM ratings "
                        "ORDER BY question").fetchall()
    conn.close()
    assert [row[:5] for row in rows] == [(R1, CLIPS[0], "ovl", 4, 1), (R1, CLIPS[0], "rel", 3, 1)]
    assert rows[0][5] == rows[1][5] and rows[0][5].endswith("Z")
    datetime.fromisoformat(rows[0][5].replace("Z", "+00:00"))
    assert rows[0][6] == _sub(1)
    r = client.post("/api/ratings", json=_body(clip=CLIPS[1], played=False, n=2))
    assert r.status_code == 201 and r.json["rated"] == 2
    assert client.get(f"/api/progress/{R1}").json == {"rated": {CLIPS[0]: {"ovl": 4, "rel": 3},
                                                                CLIPS[1]: {"ovl": 4, "rel": 3}}}
    from ssmttm.listen import store

    db = store.db_rows(test_dir / "ratings.sqlite")
    assert {(d["clip"], d["played"]) for d in db} == {(CLIPS[0], 1), (CLIPS[1], 0)}


BAD = [
    (400, dict(scores={"ovl": 0, "rel": 3})),
    (400, dict(scores={"ovl": 6, "rel": 3})),
    (400, dict(scores={"ovl": 3.5, "rel": 3})),
    (400, dict(scores={"ovl": "4", "rel": 3})),
    (400, dict(scores={"ovl": True, "rel": 3})),
    (400, dict(scores={"ovl": None, "rel": 3})),
    (400, dict(scores={"ovl": 4})),                         # a question missing
    (400, dict(scores={"ovl": 4, "rel": 3, "xyz": 2})),     # an unknown question
    (400, dict(scores=[4, 3])),
    (400, dict(played="yes")),
    (400, dict(submission="abc")),
    (400, dict(submission="A" * 32)),
    (400, dict(submission="a" * 33)),
    (400, dict(rater=7)),
    (404, dict(rater="r09-0000")),                          # unknown rater
    (404, dict(rater="../etc")),
    (404, dict(clip="9999999999")),                         # unknown clip
    (404, dict(clip="../key.json")),
    (403, dict(clip=CLIPS[3])),                             # in r02's plan, not r01's
]


@pytest.mark.parametrize("status,change", BAD, ids=[f"{s}-{'-'.join(c)}" for s, c in BAD])
def test_bad_submission_changes_nothing(client, test_dir, status, change):
    assert client.post("/api/ratings", json=_body(clip=CLIPS[2], n=99)).status_code == 201
    before = _counts(test_dir)
    r = client.post("/api/ratings", json=_body(**change))
    assert r.status_code == status, r.json
    assert isinstance(r.json["error"], str) and r.json["error"]
    assert _counts(test_dir) == before
    assert CLIPS[0] not in client.get(f"/api/progress/{R1}").json["rated"]


@pytest.mark.parametrize("kind", ["not-json", "text-plain", "list", "missing", "huge"])
def test_malformed_bodies_change_nothing(client, test_dir, kind):
    before = _counts(test_dir)
    body = _body()
    if kind == "not-json":
        r = client.post("/api/ratings", data="{", content_type="application/json")
    elif kind == "text-plain":  # a cross-site form can send text/plain without a preflight: refused
        r = client.post("/api/ratings", data=json.dumps(body), content_type="text/plain")
    elif kind == "list":
        r = client.post("/api/ratings", json=[body])
    elif kind == "missing":
        for k in body:
            r = client.post("/api/ratings", json={kk: v for kk, v in body.items() if kk != k})
            assert r.status_code == 400 and k in r.json["error"]
    else:
        r = client.post("/api/ratings", json={**body, "pad": "x" * (listen_app.MAX_BODY + 10)})
    assert r.status_code == (413 if kind == "huge" else 400)
    assert "error" in r.json
    assert _counts(test_dir) == before == (0, 0)


def test_replay_and_double_rating_are_409(client, test_dir):
    assert client.post("/api/ratings", json=_body(n=5)).status_code == 201
    before = _counts(test_dir)
    assert before == (2, 1)
    replay = client.post("/api/ratings", json=_body(n=5))
    assert replay.status_code == 409 and "already" in replay.json["error"]
    # the same id for another clip is still a replay
    assert client.post("/api/ratings", json=_body(clip=CLIPS[1], n=5)).status_code == 409
    # a fresh id for a clip already rated: the (rater, clip) is taken
    again = client.post("/api/ratings", json=_body(scores={"ovl": 1, "rel": 1}, n=6))
    assert again.status_code == 409
    assert _counts(test_dir) == before
    assert client.get(f"/api/progress/{R1}").json["rated"] == {CLIPS[0]: {"ovl": 4, "rel": 3}}
    # another rater may rate a clip they share
    assert client.post("/api/ratings", json=_body(rater=R2, clip=CLIPS[1], n=7)).status_code == 201


def test_resume_after_restart(test_dir, tmp_path):
    db = tmp_path / "elsewhere.sqlite"
    app = create_app(test_dir, db_path=db)
    c = app.test_client()
    assert c.post("/api/ratings", json=_body(clip=CLIPS[1], n=1)).status_code == 201
    app.extensions["ssmttm_listen"]["db"].close()
    app2 = create_app(test_dir, db_path=db)  # a restarted server: progress comes from the db
    c2 = app2.test_client()
    assert c2.get(f"/api/progress/{R1}").json == {"rated": {CLIPS[1]: {"ovl": 4, "rel": 3}}}
    assert c2.get(f"/api/progress/{R2}").json == {"rated": {}}
    assert c2.post("/api/ratings", json=_body(clip=CLIPS[1], n=2)).status_code == 409
    app2.extensions["ssmttm_listen"]["db"].close()
    assert not (test_dir / "ratings.sqlite").exists()


def _all_text(client, urls) -> str:
    out = []
    for url in urls:
        r = client.get(url)
        out.append(r.get_data(as_text=True) if r.mimetype != "audio/wav" else "")
        r.close()
    return "\n".join(out)


def test_no_response_names_a_system(client, test_dir, tmp_path):
    urls = ["/", f"/rate/{R1}", f"/rate/{R2}", "/static/rate.js", "/static/rate.css", "/static/rate.html",
            f"/api/plan/{R1}", f"/api/plan/{R2}", f"/api/progress/{R1}", "/rate/r09-0000", "/clips/../key.json",
            "/key.json", *(f"/clips/{c}.wav" for c in CLIPS)]
    client.post("/api/ratings", json=_body())
    texts = [_all_text(client, urls), client.post("/api/ratings", json=_body()).get_data(as_text=True)]
    static = create_app(test_dir, static_mode=True).test_client()
    texts.append(_all_text(static, ["/", "/index.html", "/plan.json", "/plan.js", "/rate.js", "/rate.css"]))
    out = tmp_path / "site"
    export(test_dir, out)
    texts += [p.read_text(encoding="utf-8") for p in out.rglob("*") if p.is_file() and p.suffix != ".wav"]
    blob = "\n".join(texts)
    assert "calm piano" in blob  # the texts were read
    for name in [*SYSTEMS, "sdd_", "results/generate"]:
        assert name not in blob, name


def test_static_mode_app(test_dir):
    c = create_app(test_dir, static_mode=True).test_client()
    page = c.get("/")
    assert page.status_code == 200 and 'data-mode="static"' in page.text
    assert c.get("/plan.json").data == (test_dir / "kit" / "plan.json").read_bytes()
    assert c.get(f"/clips/{CLIPS[0]}.wav").status_code == 200
    for url in (f"/api/plan/{R1}", f"/rate/{R1}", "/api/ratings"):
        assert c.get(url).status_code == 404, url
    assert c.post("/api/ratings", json=_body()).status_code in (404, 405)
    assert not (test_dir / "ratings.sqlite").exists()  # static mode opens no database


def test_export(test_dir, tmp_path):
    out = tmp_path / "export" / "site"
    export(test_dir, out)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(["index.html", "rate.js", "rate.css", "plan.json", "plan.js", "README.txt",
                            *(f"clips/{c}.wav" for c in CLIPS)])  # the plan's clips only
    assert (out / "plan.json").read_bytes() == (test_dir / "kit" / "plan.json").read_bytes()
    page = (out / "index.html").read_text(encoding="utf-8")
    assert 'data-mode="static"' in page and 'id="download"' in page and 'id="rater"' in page
    # every reference of the exported page is relative: it works from any folder, host or file://
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(not r.startswith(("/", "http:", "https:", "//")) for r in refs), refs
    assert "/api/" not in page and "/static/" not in page
    js = (out / "rate.js").read_text(encoding="utf-8")
    assert 'dataset.mode === "static"' in js and 'fetch("plan.json"' in js and '"clips/" + clip' in js
    assert "crypto.getRandomValues" in js and '"ended"' in js and ".innerHTML" not in js
    plan = json.loads((out / "plan.js").read_text(encoding="utf-8").split("window.SSMTTM_PLAN = ", 1)[1].rstrip(";\n"))
    assert plan == json.loads((out / "plan.json").read_text(encoding="utf-8"))
    assert (out / "README.txt").read_text(encoding="utf-8").startswith(listen_app.EXPORT_MARKER)
    # a second export replaces the first whole, leaving no staging folder behind
    (out / "stale.txt").write_text("x")
    export(test_dir, out)
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["site"]


def test_export_refuses_unsafe_targets(test_dir, tmp_path):
    foreign = tmp_path / "papers"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    for target in (foreign, test_dir, test_dir / "kit", test_dir.parent, test_dir / "kit" / "site"):
        with pytest.raises(PlanError, match="export folder|not empty"):
            export(test_dir, target)
    assert (foreign / "thesis.tex").read_text() == "keep me"
    assert (test_dir / "key.json").is_file() and (test_dir / "kit" / "plan.json").is_file()


def test_bad_plan_is_an_error_naming_the_file(test_dir):
    plan_path = test_dir / "kit" / "plan.json"
    plan = json.loads(plan_path.read_text())
    (test_dir / "kit" / "clips" / f"{CLIPS[3]}.wav").unlink()
    with pytest.raises(PlanError, match=f"{CLIPS[3]}.wav"):
        create_app(test_dir)
    cases = [
        {**plan, "format": "other/1"},
        {**plan, "questions": [{**QUESTIONS[0], "min": 5, "max": 1}]},
        {**plan, "questions": [{**QUESTIONS[0], "labels": ["a", "b"]}]},
        {**plan, "raters": [{"rater": "bob", "items": plan["raters"][0]["items"]}]},
        {**plan, "raters": [{"rater": R1, "items": [{"clip": "../key.json", "prompt": ""}]}]},
        {**plan, "raters": [plan["raters"][0], plan["raters"][0]]},
    ]
    for bad in cases:
        plan_path.write_text(json.dumps(bad))
        with pytest.raises(PlanError, match=re.escape(str(plan_path))):
            load_kit(test_dir / "kit")
    plan_path.write_text("{not json")
    with pytest.raises(PlanError, match="not a plan JSON"):
        create_app(test_dir)
    plan_path.unlink()
    with pytest.raises(PlanError, match="no plan"):
        export(test_dir, test_dir.parent / "out")


def test_a_database_stays_bound_to_the_kit_it_rated(test_dir, tmp_path):
    """Ratings given with one kit are refused by the app of a rebuilt kit (other clips under the same ids),
    and listening_results refuses to label them with the new key."""
    from ssmttm.listen import results
    from ssmttm.listen.store import RatingsError

    app = create_app(test_dir)
    assert app.test_client().post("/api/ratings", json=_body()).status_code == 201
    app.extensions["ssmttm_listen"]["db"].close()
    plan = json.loads((test_dir / "kit" / "plan.json").read_text())
    plan["seconds"] = 4.0  # a rebuilt kit: another plan.json
    (test_dir / "kit" / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    with pytest.raises(RatingsError, match="holds 2 ratings given with the kit"):
        create_app(test_dir)
    with pytest.raises(results.ResultsError, match="history/"):
        results.check_kit(test_dir / "ratings.sqlite", test_dir)
    fresh = create_app(test_dir, db_path=tmp_path / "new.sqlite")  # the new kit, into another database
    assert fresh.test_client().post("/api/ratings", json=_body()).status_code == 201
    fresh.extensions["ssmttm_listen"]["db"].close()
    results.check_kit(tmp_path / "new.sqlite", test_dir)


def test_a_relative_test_folder_serves_its_clips(test_dir, monkeypatch):
    """The rules pass results/listening/<test> relative to the working directory."""
    monkeypatch.chdir(test_dir.parent.parent)
    app = create_app(Path("listening") / "demo")
    try:
        r = app.test_client().get(f"/clips/{CLIPS[0]}.wav")
        assert r.status_code == 200 and r.data[:4] == b"RIFF"
        r.close()
    finally:
        app.extensions["ssmttm_listen"]["db"].close()
