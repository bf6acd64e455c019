"""The rating app: one page that plays a rater's clips in their plan's order and posts the scores.

Two ways to run the same page (``static/rate.html`` + ``rate.js`` + ``rate.css``):

- server mode (:func:`create_app`, :func:`serve`): Flask on 127.0.0.1 by default; the page calls the
  JSON API below and every rating lands in the SQLite database (:mod:`ssmttm.listen.store`);
- static mode (:func:`export`, or ``create_app(static_mode=True)`` to preview it): a folder any web
  server can host (or a rater can open from disk); the page reads ``plan.json`` beside it, keeps the
  ratings in the browser's localStorage and saves them as a ratings JSON file (``button#download``).

The page learns its mode from ``<body data-mode>``, which the server writes when it renders the page;
it never guesses from what it can fetch.

The app reads only ``kit/plan.json``, ``kit/clips/`` and the database: never ``key.json``, so no
response can name a system. HTTP API (docs/listening.md):

- ``GET /`` landing page (rater code); ``GET /rate/<rater>`` the rating page;
- ``GET /api/plan/<rater>`` -> ``{"test", "seconds", "questions", "items": [{"clip", "prompt"}]}``;
- ``GET /api/progress/<rater>`` -> ``{"rated": {clip: {question: score}}}`` (resume);
- ``GET /clips/<clip>.wav`` the audio of a clip of the plan;
- ``POST /api/ratings`` ``{"rater", "clip", "scores": {question: int}, "played": bool, "submission":
  32 hex}`` -> 201 ``{"ok": true, "rated": n, "total": m}``; 400 malformed / missing / unknown
  question / score out of range / bad submission id, 404 unknown rater or clip, 403 clip not in the
  rater's plan, 409 clip already rated or submission id already used: nothing written on any error,
  all rows of a submission in one transaction.

Every error is ``{"error": "..."}`` JSON with its status code.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ssmttm.errors import SsmttmError
from ssmttm.listen import store
from ssmttm.listen.options import CLIPS_DIR, DB_FILE, KIT_DIR, PLAN_FILE, PLAN_FORMAT

STATIC = Path(__file__).resolve().parent / "static"
PAGE = "rate.html"                     # the page template (Jinja, autoescaped), both modes
ASSETS = ("rate.js", "rate.css")       # copied unchanged into an export
CLIP_RE = re.compile(r"^[0-9a-f]{10}$")
RATER_RE = re.compile(r"^r[0-9]{2,4}-[0-9a-f]{4}$")
QUESTION_RE = re.compile(r"^[a-z][a-z0-9_]{0,15}$")  # the config schema's pattern for question ids
SUBMISSION_RE = re.compile(r"^[0-9a-f]{32}$")
ERROR_CODES = (400, 403, 404, 405, 409, 413)  # answered as {"error": ...} JSON
MAX_BODY = 16 * 1024  # a submission is ~200 bytes; anything near this is not one
EXPORT_MARKER = "ssmttm listening-test export"  # first line of an export's README.txt

# The page loads only its own files: no inline script (the JS is a file) and no other origin.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; media-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


class PlanError(SsmttmError, ValueError):
    """A kit that cannot be served or exported (bad plan.json, missing clip, unsafe export folder);
    the message names the file."""


@dataclass
class Kit:
    """A validated ``kit/plan.json``: ``items[rater]`` in listening order, ``owners[clip]`` the raters
    whose plan holds it, ``plan_bytes`` the file as read (static mode serves and exports it as is)."""

    kit_dir: Path
    test: str
    seconds: float
    questions: list[dict]
    items: dict[str, list[dict]]
    owners: dict[str, set[str]] = field(default_factory=dict)
    plan_bytes: bytes = b""

    @property
    def clips_dir(self) -> Path:
        return self.kit_dir / CLIPS_DIR


def _need(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise PlanError(f"{path}: {what}")


def load_kit(kit_dir: str | Path) -> Kit:
    """Read and check ``kit_dir/plan.json`` (format, questions, rater codes, clip ids, every clip's WAV
    present); raises :class:`PlanError` naming the file and the first problem."""
    kit_dir = Path(kit_dir)
    path = kit_dir / PLAN_FILE
    try:
        raw = path.read_bytes()
        plan = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise PlanError(f"{path}: no plan (build the kit first: `python -m ssmttm listening-kit`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanError(f"{path}: not a plan JSON file ({exc})") from exc
    _need(isinstance(plan, dict) and plan.get("format") == PLAN_FORMAT, path, f"'format' is not {PLAN_FORMAT!r}")
    test, seconds = plan.get("test"), plan.get("seconds")
    _need(isinstance(test, str) and bool(test), path, "'test' must be a non-empty string")
    _need(isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0, path,
          "'seconds' must be a positive number")
    questions = plan.get("questions")
    _need(isinstance(questions, list) and bool(questions), path, "'questions' must be a non-empty list")
    qids = set()
    for i, q in enumerate(questions):
        where = f"question {i}"
        _need(isinstance(q, dict), path, f"{where} is not an object")
        qid, lo, hi, labels = q.get("id"), q.get("min"), q.get("max"), q.get("labels", [])
        _need(isinstance(qid, str) and bool(QUESTION_RE.match(qid)), path, f"{where}: id {qid!r} must match "
              f"{QUESTION_RE.pattern}")
        _need(qid not in qids, path, f"question id {qid!r} appears twice")
        qids.add(qid)
        _need(isinstance(q.get("text"), str), path, f"question {qid!r}: 'text' must be a string")
        _need(all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) and lo < hi, path,
              f"question {qid!r}: 'min' and 'max' must be integers with min < max")
        _need(isinstance(labels, list) and all(isinstance(x, str) for x in labels)
              and len(labels) in (0, hi - lo + 1), path,
              f"question {qid!r}: 'labels' must be {hi - lo + 1} strings or empty")
    raters = plan.get("raters")
    _need(isinstance(raters, list) and bool(raters), path, "'raters' must be a non-empty list")
    items: dict[str, list[dict]] = {}
    owners: dict[str, set[str]] = {}
    for i, r in enumerate(raters):
        code = r.get("rater") if isinstance(r, dict) else None
        _need(isinstance(code, str) and bool(RATER_RE.match(code)), path,
              f"rater {i}: code {code!r} must match {RATER_RE.pattern}")
        _need(code not in items, path, f"rater {code!r} appears twice")
        its = r.get("items")
        _need(isinstance(its, list) and bool(its), path, f"rater {code!r}: 'items' must be a non-empty list")
        seen = set()
        for j, it in enumerate(its):
            clip = it.get("clip") if isinstance(it, dict) else None
            _need(isinstance(clip, str) and bool(CLIP_RE.match(clip)), path,
                  f"rater {code!r} item {j}: clip {clip!r} must match {CLIP_RE.pattern}")
            _need(clip not in seen, path, f"rater {code!r}: clip {clip} listed twice")
            _need(isinstance(it.get("prompt"), str), path, f"rater {code!r} clip {clip}: 'prompt' must be a string")
            seen.add(clip)
            owners.setdefault(clip, set()).add(code)
        items[code] = [{"clip": it["clip"], "prompt": it["prompt"]} for it in its]
    for clip in sorted(owners):
        wav = kit_dir / CLIPS_DIR / f"{clip}.wav"
        if not wav.is_file():
            raise PlanError(f"{wav}: clip {clip} of {path} is missing")
    return Kit(kit_dir, test, float(seconds), [dict(q) for q in questions], items, owners, raw)


def render_page(app, static: bool, rater: str = "") -> str:
    """The page (``static/rate.html``, the app's Jinja template, autoescaped) for one mode."""
    from flask import render_template

    with app.app_context():
        return render_template(PAGE, static=static, rater=rater, base="" if static else "/static/")


def plan_js(kit: Kit) -> str:
    """``plan.js`` of an export: the plan as a script, for a page opened from disk (file://), where
    browsers refuse ``fetch("plan.json")``. ``<`` is escaped so no text in it can close a script tag."""
    text = kit.plan_bytes.decode("utf-8")
    obj = json.dumps(json.loads(text), ensure_ascii=True).replace("<", "\\u003c")
    return f"// The plan of listening test {json.dumps(kit.test)} (a copy of plan.json).\nwindow.SSMTTM_PLAN = {obj};\n"


def now_utc() -> str:
    """ISO 8601 UTC with milliseconds and a Z: the same form as the page's ``Date.toISOString()``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def create_app(test_dir: str | Path, db_path: str | Path | None = None, static_mode: bool = False):
    """The Flask app of test folder ``test_dir`` (``results/listening/<test>``): kit at ``test_dir/kit``,
    ratings in ``db_path`` (default ``test_dir/ratings.sqlite``). ``static_mode``: serve the export's
    layout instead (``/`` page, ``plan.json``, ``plan.js``, ``clips/``, no API, no database)."""
    from flask import Flask, abort, jsonify, request, send_from_directory

    test_dir = Path(test_dir).resolve()  # Flask resolves a relative folder against the package, not the cwd
    kit = load_kit(test_dir / KIT_DIR)
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static", template_folder=str(STATIC))
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY, DEBUG=False, TESTING=False)
    app.extensions["ssmttm_listen"] = {"kit": kit}

    def _json_error(exc):  # a werkzeug HTTPException (abort(), routing, MAX_CONTENT_LENGTH)
        return jsonify(error=exc.description or exc.name), exc.code

    for code in ERROR_CODES:
        app.register_error_handler(code, _json_error)

    @app.after_request
    def _headers(resp):
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"  # rater codes are in the URLs
        resp.headers["Content-Security-Policy"] = CSP
        if request.path.startswith("/api/") or resp.mimetype == "text/html":
            resp.headers["Cache-Control"] = "no-store"
        return resp

    def clip_file(name: str):
        # The id must be one of the plan's (which only holds ids matching CLIP_RE): no other file of
        # the folder, and no path, can be asked for.
        if not name.endswith(".wav") or not CLIP_RE.match(name[:-4]) or name[:-4] not in kit.owners:
            abort(404, f"no clip {name!r}")
        return send_from_directory(kit.clips_dir, name, mimetype="audio/wav")

    # The clip route takes the whole last segment so a bad name is a 404 from clip_file, not a routing
    # quirk; a '/' (or an encoded %2F) never reaches it (the default converter stops at '/').
    app.add_url_rule("/clips/<name>", "clip", clip_file)

    if static_mode:
        page = render_page(app, static=True)
        app.add_url_rule("/", "index", lambda: page)
        app.add_url_rule("/index.html", "index_html", lambda: page)
        app.add_url_rule("/plan.json", "plan_json",
                         lambda: app.response_class(kit.plan_bytes, mimetype="application/json"))
        app.add_url_rule("/plan.js", "plan_js",
                         lambda: app.response_class(plan_js(kit), mimetype="text/javascript"))
        for asset in ASSETS:
            app.add_url_rule(f"/{asset}", asset, lambda a=asset: send_from_directory(STATIC, a))
        return app

    db_file = db_path if db_path is not None else test_dir / DB_FILE
    conn = store.open_db(db_file)
    store.bind_kit(conn, hashlib.sha256(kit.plan_bytes).hexdigest(), db_file)
    lock = threading.Lock()  # one connection for all request threads: one statement group at a time
    app.extensions["ssmttm_listen"]["db"] = conn

    def known_rater(rater: str) -> list[dict]:
        if not RATER_RE.match(rater) or rater not in kit.items:
            abort(404, "unknown rater code")
        return kit.items[rater]

    def rated_of(rater: str) -> dict[str, dict[str, int]]:
        with lock:
            rows = conn.execute("SELECT clip, question, score FROM ratings WHERE rater = ?", (rater,)).fetchall()
        out: dict[str, dict[str, int]] = {}
        for clip, question, score in rows:
            out.setdefault(clip, {})[question] = score
        return out

    @app.get("/")
    def landing():
        return render_page(app, static=False)

    @app.get("/rate/<rater>")
    def rate(rater: str):
        known_rater(rater)
        return render_page(app, static=False, rater=rater)

    @app.get("/api/plan/<rater>")
    def api_plan(rater: str):
        items = known_rater(rater)
        return jsonify(test=kit.test, seconds=kit.seconds, questions=kit.questions, items=items)

    @app.get("/api/progress/<rater>")
    def api_progress(rater: str):
        known_rater(rater)
        return jsonify(rated=rated_of(rater))

    @app.post("/api/ratings")
    def api_ratings():
        body = request.get_json(silent=True)  # None for a non-JSON body or content type
        if not isinstance(body, dict):
            abort(400, "the body must be a JSON object (Content-Type: application/json)")
        missing = [k for k in ("rater", "clip", "scores", "played", "submission") if k not in body]
        if missing:
            abort(400, f"missing field(s): {', '.join(missing)}")
        rater, clip, scores, played, sub = (body[k] for k in ("rater", "clip", "scores", "played", "submission"))
        if not isinstance(rater, str) or not isinstance(clip, str):
            abort(400, "'rater' and 'clip' must be strings")
        if not isinstance(played, bool):
            abort(400, "'played' must be true or false")
        if not isinstance(sub, str) or not SUBMISSION_RE.match(sub):
            abort(400, "'submission' must be 32 lowercase hex characters")
        if not isinstance(scores, dict):
            abort(400, "'scores' must be an object {question: score}")
        items = known_rater(rater)
        if not CLIP_RE.match(clip) or clip not in kit.owners:
            abort(404, f"unknown clip {clip!r}")
        if all(it["clip"] != clip for it in items):
            abort(403, f"clip {clip} is not in rater {rater}'s plan")
        for q in kit.questions:
            if q["id"] not in scores:
                abort(400, f"question {q['id']!r} has no score")
        qmap = {q["id"]: q for q in kit.questions}
        for qid, score in scores.items():
            if qid not in qmap:
                abort(400, f"unknown question {qid!r}")
            q = qmap[qid]
            if isinstance(score, bool) or not isinstance(score, int) or not q["min"] <= score <= q["max"]:
                abort(400, f"question {qid!r}: score {score!r} is not an integer in {q['min']}..{q['max']}")
        t = now_utc()
        with lock:
            try:
                with conn:  # one transaction: the submission id and every row, or nothing
                    if conn.execute("SELECT 1 FROM submissions WHERE submission = ?", (sub,)).fetchone():
                        abort(409, "this submission was already received")
                    if conn.execute("SELECT 1 FROM ratings WHERE rater = ? AND clip = ? LIMIT 1",
                                    (rater, clip)).fetchone():
                        abort(409, f"clip {clip} is already rated by {rater}")
                    conn.execute("INSERT INTO submissions (submission, rater, clip, time_utc) VALUES (?, ?, ?, ?)",
                                 (sub, rater, clip, t))
                    conn.executemany(
                        "INSERT INTO ratings (rater, clip, question, score, played, time_utc, submission) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [(rater, clip, q["id"], scores[q["id"]], int(played), t, sub) for q in kit.questions])
            except sqlite3.IntegrityError:  # a race the checks above did not see: still nothing written
                abort(409, f"clip {clip} is already rated by {rater}, or this submission was already received")
            n = conn.execute("SELECT COUNT(DISTINCT clip) FROM ratings WHERE rater = ?", (rater,)).fetchone()[0]
        return jsonify(ok=True, rated=n, total=len(items)), 201

    return app


def serve(test_dir: str | Path, host: str, port: int, db_path: str | Path | None = None) -> None:
    """Run the rating app until interrupted (Werkzeug's threaded server: no debugger, no reloader; a
    listening test's few dozen raters are far within it). ``host`` 127.0.0.1 keeps it to this machine."""
    test_dir = Path(test_dir)
    app = create_app(test_dir, db_path)
    state = app.extensions["ssmttm_listen"]
    db = Path(db_path) if db_path is not None else test_dir / DB_FILE
    print(f"listening test {state['kit'].test!r}: {len(state['kit'].items)} raters "
          f"(codes in {test_dir / KIT_DIR / PLAN_FILE}), ratings -> {db}")
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: bound to {host}: other machines can reach this app (plain HTTP, no login)")
    try:
        app.run(host=host, port=port, debug=False, use_reloader=False, threaded=True)
    finally:
        state["db"].close()


README = """{marker}: {test}

A blind listening test that runs in the browser with no server-side code. Host this folder with any
static web server (HTTPS where raters are outside your network), e.g. for a quick local check:

    python3 -m http.server --directory . 8000     # then open http://127.0.0.1:8000/

A rater can also open index.html straight from disk (plan.js carries the plan for that case).

Raters: open index.html, enter your rater code, listen to each clip to its end, answer, submit.
Ratings stay in your browser until you press "Download my ratings": send that JSON file back.
Reloading the page resumes where you stopped (same browser, same rater code).

For the organiser: hand each rater one code from plan.json ("raters"); every code can be read by
anyone who can read this folder, so share the folder's address only with your raters. Put the
returned files in one folder and set the test's ratings to {{source: files, dir: <that folder>}}.
Nothing in this folder names a system: the key to the clips stays in key.json, which is not here.

Files: index.html, rate.js, rate.css (the page), plan.json + plan.js (questions and every rater's
order), clips/<id>.wav ({n} clips).
"""


def _check_export_target(out_dir: Path, test_dir: Path) -> None:
    """Refuse a destination whose replacement would destroy something that is not an earlier export."""
    out, test = out_dir.resolve(), test_dir.resolve()
    if out == test or out in test.parents or test in out.parents:
        raise PlanError(f"{out_dir}: the export folder must lie outside the test folder {test_dir} "
                       f"(and not contain it)")
    if out.exists():
        if not out.is_dir():
            raise PlanError(f"{out_dir}: exists and is not a folder")
        readme = out / "README.txt"
        earlier = readme.is_file() and readme.read_text(encoding="utf-8", errors="replace").startswith(EXPORT_MARKER)
        if any(out.iterdir()) and not earlier:
            raise PlanError(f"{out_dir}: not empty and not an earlier listening-test export; choose another folder")


def export(test_dir: str | Path, out_dir: str | Path) -> None:
    """Write the static rating site of ``test_dir``'s kit into ``out_dir``: index.html (static mode),
    rate.js, rate.css, plan.json, plan.js, clips/<id>.wav (the plan's clips only) and README.txt.
    Built in a temporary folder beside ``out_dir`` and renamed into place (an earlier export there is
    replaced whole)."""
    from ssmttm.io import replace_dir, temp_dir

    test_dir, out_dir = Path(test_dir), Path(out_dir)
    app = create_app(test_dir, static_mode=True)  # checks the kit; renders the static page
    kit = app.extensions["ssmttm_listen"]["kit"]
    _check_export_target(out_dir, test_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = temp_dir(out_dir.parent, prefix=f".{out_dir.name}.")
    try:
        (staging / "index.html").write_text(render_page(app, static=True), encoding="utf-8")
        for asset in ASSETS:
            shutil.copyfile(STATIC / asset, staging / asset)
        (staging / PLAN_FILE).write_bytes(kit.plan_bytes)
        (staging / "plan.js").write_text(plan_js(kit), encoding="utf-8")
        (staging / CLIPS_DIR).mkdir()
        for clip in sorted(kit.owners):
            shutil.copyfile(kit.clips_dir / f"{clip}.wav", staging / CLIPS_DIR / f"{clip}.wav")
        (staging / "README.txt").write_text(README.format(marker=EXPORT_MARKER, test=kit.test, n=len(kit.owners)),
                                            encoding="utf-8")
        replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
