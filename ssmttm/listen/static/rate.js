// The rating page of ssmttm's listening test (see ssmttm/listen/app.py). Plain JS, no build step.
//
// The mode comes from <body data-mode>, written by the app when it renders the page:
//   server: plan, progress and ratings through the JSON API (/api/...), clips from /clips/<id>.wav;
//   static: plan.json beside the page (plan.js's window.SSMTTM_PLAN when opened from disk), clips from
//           clips/<id>.wav, ratings in localStorage and saved with button#download as a ratings JSON
//           file ("ssmttm-listening-ratings/1").
// Text from the plan goes into the page through textContent only, never as HTML.
"use strict";

(function () {
  const RATINGS_FORMAT = "ssmttm-listening-ratings/1";
  const RATER_RE = /^r[0-9]{2,4}-[0-9a-f]{4}$/;
  const CLIP_RE = /^[0-9a-f]{10}$/;
  const MODE = document.body.dataset.mode === "static" ? "static" : "server";
  const $ = (id) => document.getElementById(id);

  function showError(message) {
    const el = $("error");
    el.textContent = message || "";
    el.hidden = !message;
  }

  // A random 32-hex submission id: the server accepts each id once, so a resent POST changes nothing.
  function submissionId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function getJson(url) {
    const resp = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(body.error || "request failed (" + resp.status + ")");
    return body;
  }

  // ---- where plan, progress and ratings come from -------------------------------------------

  function serverBackend(rater) {
    const enc = encodeURIComponent(rater);
    return {
      plan: () => getJson("/api/plan/" + enc),
      progress: async () => (await getJson("/api/progress/" + enc)).rated,
      clipUrl: (clip) => "/clips/" + clip + ".wav",
      // -> "ok", or "conflict" (already rated / id already used: the caller reloads the progress)
      async submit(clip, scores, played, submission) {
        const resp = await fetch("/api/ratings", {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify({ rater, clip, scores, played, submission }),
        });
        if (resp.status === 201) return "ok";
        if (resp.status === 409) return "conflict";
        const body = await resp.json().catch(() => ({}));
        throw new Error(body.error || "the rating was not saved (" + resp.status + ")");
      },
      ratingsCount: () => 0,
    };
  }

  async function staticPlan() {
    try {
      const resp = await fetch("plan.json", { cache: "no-store" });
      if (resp.ok) return await resp.json();
    } catch (e) {
      // file:// pages cannot fetch: plan.js (loaded before this script) holds the same plan
    }
    if (window.SSMTTM_PLAN) return window.SSMTTM_PLAN;
    throw new Error("cannot read plan.json next to this page");
  }

  function staticBackend(plan, rater) {
    const entry = plan.raters.find((r) => r.rater === rater);
    // per kit (kit_id changes with any clip's audio): a re-exported kit never resumes another kit's ratings
    const key = "ssmttm-listening/" + plan.test + "/" + (plan.kit_id || "") + "/" + rater;
    function load() {
      try {
        const doc = JSON.parse(localStorage.getItem(key) || "null");
        if (doc && doc.format === RATINGS_FORMAT && Array.isArray(doc.ratings)) return doc;
      } catch (e) {
        // unreadable entry: start afresh rather than lose the page
      }
      return { format: RATINGS_FORMAT, test: plan.test, kit_id: plan.kit_id || null, rater: rater, ratings: [] };
    }
    return {
      plan: async () => ({ test: plan.test, seconds: plan.seconds, questions: plan.questions, items: entry.items }),
      async progress() {
        const rated = {};
        for (const r of load().ratings) (rated[r.clip] = rated[r.clip] || {})[r.question] = r.score;
        return rated;
      },
      clipUrl: (clip) => "clips/" + clip + ".wav",
      async submit(clip, scores, played) {
        const doc = load();
        if (doc.ratings.some((r) => r.clip === clip)) return "conflict";
        const t = new Date().toISOString();
        for (const [question, score] of Object.entries(scores)) {
          doc.ratings.push({ clip, question, score, played, time_utc: t });
        }
        try {
          localStorage.setItem(key, JSON.stringify(doc));
        } catch (e) {
          throw new Error("this browser does not let the page keep your ratings (" + e.name + ")");
        }
        return "ok";
      },
      ratingsCount: () => load().ratings.length,
      download() {
        const blob = new Blob([JSON.stringify(load(), null, 2) + "\n"], { type: "application/json" });
        const url = URL.createObjectURL(blob);
        const a = document.createElement("a");
        a.href = url;
        a.download = "ratings-" + plan.test + "-" + rater + ".json";
        document.body.appendChild(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 1000);
      },
    };
  }

  // ---- the rating loop --------------------------------------------------------------------------

  function buildQuestions(questions) {
    const box = $("questions");
    box.textContent = "";
    for (const q of questions) {
      const fs = document.createElement("fieldset");
      fs.id = "q-" + q.id;
      const legend = document.createElement("legend");
      legend.textContent = q.text;
      fs.appendChild(legend);
      const labels = Array.isArray(q.labels) ? q.labels : [];
      for (let s = q.min; s <= q.max; s++) {
        const input = document.createElement("input");
        input.type = "radio";
        input.name = "q-" + q.id;
        input.value = String(s);
        input.id = "q-" + q.id + "-" + s;
        input.disabled = true;
        const label = document.createElement("label");
        label.htmlFor = input.id;
        const text = labels.length ? s + " " + labels[s - q.min] : String(s);
        label.textContent = text;
        const span = document.createElement("span");
        span.className = "choice";
        span.append(input, label);
        fs.appendChild(span);
      }
      box.appendChild(fs);
    }
  }

  async function run(backend) {
    const plan = await backend.plan();
    const items = plan.items;
    buildQuestions(plan.questions);
    let rated = await backend.progress();
    let current = null; // {clip, played, submission}
    let busy = false;
    const player = $("player");
    const submit = $("submit");
    const radios = () => Array.from(document.querySelectorAll("#questions input[type=radio]"));
    const download = $("download");

    function updateDownload() {
      if (!download) return;
      $("download-line").hidden = false;
      download.disabled = backend.ratingsCount() === 0;
    }

    function answers() {
      const scores = {};
      for (const q of plan.questions) {
        const checked = document.querySelector('input[name="q-' + q.id + '"]:checked');
        if (!checked) return null;
        scores[q.id] = parseInt(checked.value, 10);
      }
      return scores;
    }

    function updateSubmit() {
      submit.disabled = busy || !current || !current.played || answers() === null;
    }

    function showNext() {
      const done = items.filter((it) => it.clip in rated).length;
      const next = items.find((it) => !(it.clip in rated));
      if (!next) {
        current = null;
        player.pause();
        player.removeAttribute("src");
        $("progress").textContent = items.length + " / " + items.length;
        $("rating").hidden = true;
        $("done").hidden = false;
        updateDownload();
        return;
      }
      if (!CLIP_RE.test(next.clip)) throw new Error("the plan holds a bad clip id");
      current = { clip: next.clip, played: false, submission: submissionId() };
      $("progress").textContent = done + 1 + " / " + items.length;
      $("prompt").textContent = next.prompt;
      for (const r of radios()) {
        r.checked = false;
        r.disabled = true;
      }
      player.src = backend.clipUrl(next.clip);
      player.load();
      $("rating").hidden = false;
      $("done").hidden = true;
      updateSubmit();
      updateDownload();
    }

    // Answers unlock only when the clip has played to its end AND was heard: each step of the playback
    // position while playing earns at most the wall-clock time it took (plus SLACK_S), so dragging the
    // slider to the end, paused or playing, earns next to nothing.
    const HEARD_FRACTION = 0.9;
    const SLACK_S = 0.05;
    let heard = 0;
    let last = 0;
    let lastWall = 0;
    function listen(final) {
      const t = player.currentTime;
      const now = performance.now();
      const d = t - last;
      const wall = ((now - lastWall) / 1000) * (player.playbackRate || 1);
      if ((final || !player.paused) && d > 0) heard += Math.min(d, wall + SLACK_S);
      last = t;
      lastWall = now;
    }
    player.addEventListener("loadstart", () => {
      heard = 0;
      last = 0;
      lastWall = performance.now();
    });
    player.addEventListener("play", () => {
      last = player.currentTime;
      lastWall = performance.now();
    });
    player.addEventListener("timeupdate", () => listen(false));
    player.addEventListener("ended", () => {
      if (!current) return;
      listen(true);
      if (!(heard >= HEARD_FRACTION * player.duration)) {
        showError("Please listen to the whole clip before rating it (it starts again from the beginning).");
        heard = 0;
        player.currentTime = 0;
        last = 0;
        return;
      }
      showError("");
      current.played = true;
      for (const r of radios()) r.disabled = false;
      updateSubmit();
    });
    $("questions").addEventListener("change", updateSubmit);
    $("rating-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const scores = answers();
      if (!current || !current.played || scores === null || busy) return;
      busy = true;
      updateSubmit();
      try {
        // The id is kept for this item, so a retry after a lost answer is a harmless 409.
        const result = await backend.submit(current.clip, scores, current.played, current.submission);
        rated = result === "ok" ? Object.assign(rated, { [current.clip]: scores }) : await backend.progress();
        showError("");
        busy = false;
        showNext();
        if (current) player.focus();
      } catch (e) {
        busy = false;
        showError(e.message);
        updateSubmit();
      }
    });
    if (download) download.addEventListener("click", () => backend.download());
    showNext();
  }

  // ---- landing: ask for the rater code ----------------------------------------------------------

  function landing(go) {
    $("landing").hidden = false;
    $("landing-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const code = $("rater").value.trim().toLowerCase();
      if (!RATER_RE.test(code)) {
        showError("That is not a rater code (it looks like r01-0a1b).");
        $("rater").focus();
        return;
      }
      showError("");
      go(code);
    });
    $("rater").focus();
  }

  async function main() {
    if (MODE === "server") {
      const rater = document.body.dataset.rater || "";
      if (!rater) {
        landing((code) => window.location.assign("/rate/" + encodeURIComponent(code)));
        return;
      }
      await run(serverBackend(rater));
      return;
    }
    const plan = await staticPlan();
    const rater = (new URLSearchParams(window.location.search).get("rater") || "").trim().toLowerCase();
    const known = rater && plan.raters.some((r) => r.rater === rater);
    if (!known) {
      if (rater) showError("Unknown rater code " + rater + ".");
      landing((code) => {
        if (!plan.raters.some((r) => r.rater === code)) {
          showError("Unknown rater code " + code + ".");
          return;
        }
        window.location.search = "?rater=" + encodeURIComponent(code);
      });
      return;
    }
    $("rater").value = rater;
    await run(staticBackend(plan, rater));
  }

  main().catch((e) => showError(e.message));
})();
