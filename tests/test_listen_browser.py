"""The rating page in a real browser: Debian's chromium and chromedriver, driven by Selenium, against the
real rating app (ssmttm.listen.app) serving a hand-built kit over a loopback socket.

One rater's whole session: landing page, rater code, three items each heard to its end before the
scores unlock, a reload after two items that must resume at the third, the done message; then the
database rows, the promise that nothing the browser loads or asks for names a system, a second
(scripted) rater through the HTTP API, and the results stage on both raters' ratings.

Needs /usr/bin/chromium and /usr/bin/chromedriver (`make browser` installs them on Debian/Ubuntu).
Without them the test is skipped, unless SSMTTM_REQUIRE_BROWSER=1 (set by `make test` once the
browser is installed), where it fails: a missing browser must not pass as a skip there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REQUIRED = os.environ.get("SSMTTM_REQUIRE_BROWSER") == "1"

TEST = "browser"
SR, CHANNELS, SECONDS = 44100, 2, 1.0  # one-second clips: the session waits for each to play to its end
# Names that must never reach the browser: distinctive, so a leak cannot hide in ordinary page text.
SYSTEMS = ("secret_system_a", "secret_system_b", "secret_system_c")
PROMPTS = {"p1": "a calm piano melody at dusk", "p2": "fast drums under a bass line"}
QUESTIONS = [
    {"id": "ovl", "text": "Overall quality of the music", "min": 1, "max": 5,
     "labels": ["Bad", "Poor", "Fair", "Good", "Excellent"]},
    {"id": "rel", "text": "How well does the music match the text?", "min": 1, "max": 5,
     "labels": ["Not at all", "Slightly", "Somewhat", "Mostly", "Completely"]},
]
# Each rater hears every system once, in a different order and on different prompts.
ASSIGN = {1: [(0, "p1"), (1, "p2"), (2, "p1")], 2: [(2, "p2"), (0, "p2"), (1, "p1")]}
BROWSER_SCORES = [{"ovl": 4, "rel": 2}, {"ovl": 1, "rel": 5}, {"ovl": 3, "rel": 3}]  # item k's choices
WAIT_S = 15.0


def _missing(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (SSMTTM_REQUIRE_BROWSER=1: the browser test may not be skipped)")
    pytest.skip(reason)


# --- the kit ---------------------------------------------------------------------------------------


def build_kit(test_dir: Path) -> dict:
    """results/listening/<test>/ as the kit stage lays it out (kit/plan.json, kit/clips/*.wav, key.json
    beside kit/), by hand. Returns the plan: questions, and per rater the items in hearing order."""
    import soundfile as sf

    from ssmttm.io import write_json

    rng = random.Random(15)
    clips = test_dir / "kit" / "clips"
    clips.mkdir(parents=True)
    t = np.arange(int(SR * SECONDS)) / SR
    raters, key = [], {}
    for r, pairs in ASSIGN.items():
        items = []
        for system, pid in pairs:
            clip = f"{rng.getrandbits(40):010x}"
            tone = 0.2 * np.sin(2 * np.pi * (220 + 110 * len(key)) * t)
            sf.write(clips / f"{clip}.wav", np.stack([tone] * CHANNELS, axis=1), SR, subtype="PCM_16")
            key[clip] = {"system": SYSTEMS[system], "prompt_id": pid, "role": "test", "source": f"{pid}.wav"}
            items.append({"clip": clip, "prompt": PROMPTS[pid]})
        raters.append({"rater": f"r{r:02d}-{rng.getrandbits(16):04x}", "items": items})
    plan = {"format": "ssmttm-listening-plan/1", "test": TEST, "seconds": SECONDS, "questions": QUESTIONS,
            "raters": raters}
    write_json(test_dir / "kit" / "plan.json", plan)
    write_json(test_dir / "key.json", {
        "format": "ssmttm-listening-key/1", "test": TEST, "clips": key, "systems": list(SYSTEMS),
        "prompt_ids": sorted(PROMPTS), "attention": {"question": "ovl", "max_score": 2}})
    return plan


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def kit(tmp_path):
    test_dir = tmp_path / "listening" / TEST
    return test_dir, build_kit(test_dir)


@pytest.fixture
def server(kit):
    """The real app on 127.0.0.1:<free port>, in a thread (threaded: the page's audio and API
    requests overlap)."""
    pytest.importorskip("flask")
    from werkzeug.serving import make_server

    from ssmttm.listen.app import create_app

    app = create_app(kit[0])
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, name="listen-app", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    thread.join(10)
    srv.server_close()
    app.extensions["ssmttm_listen"]["db"].close()


@pytest.fixture
def driver(tmp_path, monkeypatch):
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.is_file():
            _missing(f"{path} not found: install Debian's chromium and chromium-driver (`make browser`)")
    if importlib.util.find_spec("selenium") is None:
        _missing("selenium is not installed (requirements/lock-cpu.txt)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # The driver and browser are named, so Selenium Manager has nothing to look up; offline says so.
    monkeypatch.setenv("SE_OFFLINE", "true")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox",  # root in a container: no user namespace sandbox
                "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                # a closed network: no QUIC probes, update checks, sync or proxy lookups
                "--disable-quic", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-proxy-server",
                "--autoplay-policy=no-user-gesture-required",  # play() without a real click, headless
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    # Every request the browser makes (across navigations) and the page's console, for the checks.
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    # Chromium leaves its singleton socket's folder in TMPDIR: point it at a folder removed afterwards
    # (a short path: a unix socket's path may not pass 107 bytes, which tmp_path can).
    scratch = tempfile.mkdtemp(prefix="ssmttm-chromium-")
    service = Service(executable_path=str(CHROMEDRIVER), env={**os.environ, "TMPDIR": scratch})
    try:
        drv = webdriver.Chrome(service=service, options=opts)
        drv.set_page_load_timeout(WAIT_S)
        yield drv
        drv.quit()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --- driving the page ------------------------------------------------------------------------------

STATE_JS = """
const el = (id) => document.getElementById(id);
const p = el('player');
const radios = [...document.querySelectorAll('input[type=radio][name^="q-"]')];
const shown = (e) => !!e && !e.hidden && getComputedStyle(e).display !== 'none' && e.getClientRects().length > 0;
return {
  src: p ? (p.currentSrc || p.src || '') : '', ended: p ? p.ended : false, paused: p ? p.paused : true,
  radios: radios.length, enabled: radios.filter((r) => !r.disabled).length,
  submit: el('submit') ? !el('submit').disabled : false,
  progress: el('progress') ? el('progress').textContent : '', prompt: el('prompt') ? el('prompt').textContent : '',
  done: shown(el('done')), error: el('error') ? el('error').textContent.trim() : ''};
"""


def state(drv) -> dict:
    """The page's state in ONE script run: the page's own handlers cannot run between the reads."""
    return drv.execute_script(STATE_JS)


def wait_for(drv, what: str, cond, timeout: float = WAIT_S) -> dict:
    """Poll the page state until ``cond(state)``; the failure names what was awaited and the last state."""
    end, s = time.monotonic() + timeout, {}
    while time.monotonic() < end:
        s = state(drv)
        if cond(s):
            return s
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; page state: {s}")


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def on_item(k: int, n: int, item: dict):
    """The page shows item k of n: progress, prompt and the clip's audio."""
    return lambda s: (f"{k} / {n}" in norm(s["progress"]) and norm(s["prompt"]) == item["prompt"]
                      and s["src"].endswith(f"/clips/{item['clip']}.wav"))


def click(drv, css: str) -> None:
    from selenium.common.exceptions import ElementClickInterceptedException, ElementNotInteractableException
    from selenium.webdriver.common.by import By

    el = drv.find_element(By.CSS_SELECTOR, css)
    try:
        el.click()
    except (ElementClickInterceptedException, ElementNotInteractableException):
        # a radio styled away behind its label: clicking the label is what a person does
        drv.execute_script("const e = arguments[0]; (e.labels && e.labels[0] || e).click();", el)


def rate_item(drv, k: int, n: int, item: dict, scores: dict, seek_first: bool = False) -> float:
    """Hear item k to its end, answer every question, submit. Returns the seconds from play() to unlock.
    ``seek_first``: first drag the clip to its end and play the last moment, which must not unlock."""
    s = wait_for(drv, f"item {k} / {n} (clip {item['clip']})", on_item(k, n, item))
    assert s["radios"] == sum(q["max"] - q["min"] + 1 for q in QUESTIONS), s
    assert s["enabled"] == 0 and not s["submit"], f"scores open before the clip was heard: {s}"
    if seek_first:
        end = time.monotonic() + WAIT_S
        while drv.execute_script("return document.getElementById('player').readyState") < 1:
            assert time.monotonic() < end, "the clip's metadata never loaded"
            time.sleep(0.05)
        drv.execute_script("const p = document.getElementById('player'); p.currentTime = p.duration - 0.05; p.play();")
        s = wait_for(drv, "the skip to the end to be refused", lambda s: "whole clip" in s["error"])
        assert s["enabled"] == 0 and not s["submit"], f"skipping to the end unlocked the scores: {s}"

    drv.execute_script("document.getElementById('player').play()")
    t0 = time.monotonic()

    # While the clip has not ended, nothing may unlock (each read is one atomic snapshot of the page).
    def heard(s: dict) -> bool:
        if not s["ended"] and (s["enabled"] or s["submit"]):
            raise AssertionError(f"scores open while clip {item['clip']} is still playing: {s}")
        return s["ended"]

    wait_for(drv, f"clip {item['clip']} to play to its end", heard)
    s = wait_for(drv, "the radios to unlock after the clip ended", lambda s: s["enabled"] == s["radios"])
    unlocked = time.monotonic() - t0
    assert unlocked >= 0.8 * SECONDS, f"unlocked {unlocked:.2f} s after play() on a {SECONDS} s clip"
    assert not s["submit"], f"submit open before any question was answered: {s}"

    for i, (q, score) in enumerate(scores.items()):
        if i:
            assert not state(drv)["submit"], "submit open before every question was answered"
        click(drv, f'#q-{q} input[name="q-{q}"][value="{score}"]')
    wait_for(drv, "submit to unlock", lambda s: s["submit"])
    click(drv, "#submit")
    return unlocked


def browser_urls(drv) -> list[str]:
    """This page's resource URLs (Resource Timing: scripts, styles, fetches, audio) and its address."""
    return drv.execute_script(
        "return [location.href, ...performance.getEntriesByType('resource').map((e) => e.name)]")


def logged_requests(drv) -> list[str]:
    """Every URL the browser asked for since the last call (chromedriver's performance log)."""
    urls = []
    for entry in drv.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def assert_no_system_names(where: str, text: str | bytes) -> None:
    low = text.lower() if isinstance(text, str) else text.decode("latin-1").lower()
    leaked = [name for name in (*SYSTEMS, "secret_system") if name in low]
    assert not leaked, f"{where} names {leaked}"


def db_ratings(db: Path, rater: str) -> dict:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT clip, question, score, played FROM ratings WHERE rater = ?", (rater,))
        return {(c, q): (s, p) for c, q, s, p in rows.fetchall()}
    finally:
        conn.close()


# --- the test --------------------------------------------------------------------------------------


def test_rater_session_in_a_real_browser(driver, kit, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    test_dir, plan = kit
    rater, items = plan["raters"][0]["rater"], plan["raters"][0]["items"]
    n = len(items)
    urls, pages = [], []

    # Landing page: the rater code, then start.
    driver.get(server + "/")
    code = WebDriverWait(driver, WAIT_S).until(EC.visibility_of_element_located((By.CSS_SELECTOR, "input#rater")))
    pages.append(("landing page", driver.page_source))
    code.send_keys(rater)
    driver.find_element(By.CSS_SELECTOR, "button#start").click()
    WebDriverWait(driver, WAIT_S).until(lambda d: d.current_url.rstrip("/").endswith(f"/rate/{rater}"))

    timings = []
    for k in (1, 2):
        timings.append(rate_item(driver, k, n, items[k - 1], BROWSER_SCORES[k - 1], seek_first=k == 1))
    # The second submission has reached the server once the page moves on to item 3.
    wait_for(driver, "item 3 after two submissions", on_item(3, n, items[2]))
    pages.append(("rating page", driver.page_source))
    urls += browser_urls(driver)

    # A reload resumes at the first unrated item.
    driver.refresh()
    wait_for(driver, "the reloaded page to resume at item 3", on_item(3, n, items[2]))
    timings.append(rate_item(driver, 3, n, items[2], BROWSER_SCORES[2]))
    s = wait_for(driver, "#done after the last item", lambda s: s["done"])
    assert not s["error"], s
    pages.append(("rating page when done", driver.page_source))
    urls += browser_urls(driver) + logged_requests(driver)

    # The database holds exactly what was chosen, each clip heard to its end.
    got = db_ratings(test_dir / "ratings.sqlite", rater)
    want = {(it["clip"], q): (score, 1) for it, sc in zip(items, BROWSER_SCORES) for q, score in sc.items()}
    assert got == want

    # Nothing the browser saw or asked for names a system, and it never asked for the key.
    import requests

    http = requests.Session()
    http.trust_env = False  # loopback only: no proxy from the environment
    for where, html in pages:
        assert_no_system_names(where, html)
    mine = sorted({u.split("#")[0] for u in urls if u.startswith(server)})
    assert any(u.endswith(f"/clips/{items[0]['clip']}.wav") for u in mine), mine
    for u in sorted(set(urls)):
        assert_no_system_names(f"request URL {u}", u)
        assert "key.json" not in u, u
    for u in mine:  # the page's HTML, scripts, styles, API answers and audio, as served
        assert_no_system_names(f"{u} (served)", http.get(u, timeout=WAIT_S).content)
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]
    assert not severe, f"errors in the page's console: {severe}"

    # A second rater, scripted through the HTTP API with random scores.
    rater2 = plan["raters"][1]["rater"]
    plan2 = http.get(f"{server}/api/plan/{rater2}", timeout=WAIT_S).json()
    assert [it["clip"] for it in plan2["items"]] == [it["clip"] for it in plan["raters"][1]["items"]]
    assert_no_system_names(f"/api/plan/{rater2}", json.dumps(plan2))
    rng = random.Random(2)
    scores2 = {}
    for it in plan2["items"]:
        sc = {q["id"]: rng.randint(q["min"], q["max"]) for q in plan2["questions"]}
        r = http.post(f"{server}/api/ratings", timeout=WAIT_S, json={
            "rater": rater2, "clip": it["clip"], "scores": sc, "played": True,
            "submission": f"{rng.getrandbits(128):032x}"})
        assert r.status_code == 201, r.text
        scores2.update({(it["clip"], q): (v, 1) for q, v in sc.items()})
    assert r.json()["ok"]
    assert db_ratings(test_dir / "ratings.sqlite", rater2) == scores2

    print(f"\nbrowser session: play() -> unlock {', '.join(f'{t:.2f}' for t in timings)} s")
    run_results(test_dir)


def run_results(test_dir: Path) -> None:
    """The results stage over both raters' ratings: one MOS row per (system, question), every rating used."""
    import pandas as pd

    from ssmttm.listen import results

    settings = {"systems": list(SYSTEMS), "questions": QUESTIONS, "bootstrap": 200, "seed": 0}
    out = test_dir / "results"
    assert results.main(["--test", TEST, "--test-dir", str(test_dir), "--db", str(test_dir / "ratings.sqlite"),
                         "--settings", json.dumps(settings), "--out-dir", str(out)]) == 0
    mos = pd.read_csv(out / "mos.csv")
    assert sorted(mos["system"]) == sorted(s for s in SYSTEMS for _ in QUESTIONS)
    assert (mos["n_ratings"] == len(ASSIGN)).all() and (mos["n_raters"] == len(ASSIGN)).all(), mos
