"""``python -m ssmttm listening-results``: the MOS tables of a listening test from its ratings.

Inputs: the test's ``kit/plan.json`` (questions, every rater's clips) and ``key.json`` (clip ->
system, prompt, role; attention rule), and ratings from the rating app's database (``--db``) and/or
ratings JSON files (``--ratings-json``), read by :func:`ssmttm.listen.store.read_ratings`.

Every rating row is checked; a row is dropped, and counted by reason (:data:`DROP_REASONS`), when its
rater is not in the plan, its clip is not in that rater's plan, its question is not asked, its score
is not an integer in the question's [min, max], or its clip had not played to the end (``played``
0). Rows are checked before duplicates are looked for, so an invalid row never hides a valid one;
of valid duplicates of one (rater, clip, question) the first read is kept (the database first, then
the JSON files in the order given). A rater who scores any attention clip above
``key.attention.max_score`` on ``key.attention.question`` fails and is dropped entirely; a rater with
no rating of any of their attention clips is kept and counted as unchecked. Attention clips never
enter the MOS.

Outputs (``--out-dir``, written to a staging folder then renamed into place):

- ``mos.{csv,md,tex}``: per (system, question) the mean score, its 95 % interval (percentile, over
  ``bootstrap`` two-level resamples: raters drawn with replacement, and prompts drawn with
  replacement, each rating weighted by how often its rater and its prompt were drawn), n ratings,
  raters and prompts;
- ``pairwise.{csv,md,tex}``: per question and pair of systems, the MOS difference with its interval
  from the same resamples (paired), and a two-sided Wilcoxon signed-rank test over prompts of the
  per-prompt mean scores (prompts rated for both), Holm-corrected across the pairs of the question;
- ``mos.png``: one panel per question, MOS with 95 % error bars per system; ``mos.html``: both tables as
  one page (for ``snakemake --report``);
- ``summary.json``: rater and rating counts (kept, dropped by reason), n per system, the settings.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import numbers
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ssmttm import io, logs
from ssmttm import settings as st
from ssmttm.errors import SsmttmError
from ssmttm.listen import options as lo
from ssmttm.listen.store import db_kit, read_ratings

log = logging.getLogger("ssmttm.listen.results")

DROP_REASONS = ("unknown rater", "clip not in the rater's plan", "unknown question", "score not an integer",
                "score out of range", "played not 0/1", "not played to the end", "duplicate",
                "from raters who failed the attention check")
CI_METHOD = "two-level percentile bootstrap (raters and prompts resampled with replacement)"
MOS_COLUMNS = ("test", "system", "question", "mos", "ci_low", "ci_high", "n_ratings", "n_raters", "n_prompts",
               "scale_min", "scale_max", "bootstrap", "bootstrap_empty", "seed", "ci_method", "raters_kept",
               "raters_failed")
PAIR_COLUMNS = ("test", "question", "system_a", "system_b", "mos_a", "mos_b", "diff", "ci_low", "ci_high",
                "n_prompts", "wilcoxon_stat", "p", "p_holm", "n_tests_holm", "bootstrap", "seed", "note")


class ResultsError(SsmttmError, ValueError):
    """A kit, key or ratings source that cannot give MOS tables; the message names the file."""


@dataclass
class Kit:
    """What the analysis needs of a built kit: plan.json and key.json, checked against each other."""

    test: str
    questions: dict[str, lo.Question]   # id -> question, in the plan's order
    plan: dict[str, set[str]]           # rater code -> the clip ids of their plan
    clips: dict[str, dict]              # key.json clips: id -> {"system", "prompt_id", "role", ...}
    systems: list[str]
    attention_question: str
    attention_max: int
    kit_id: str | None = None           # plan.json's kit_id (ratings files of another kit are refused)


def _read(path: Path, fmt: str, test: str) -> dict:
    try:
        doc = io.read_json(path)
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: cannot read ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise ResultsError(f"{path}: 'format' is not {fmt!r}")
    if doc.get("test") != test:
        raise ResultsError(f"{path}: a kit of test {doc.get('test')!r}, not {test!r}")
    return doc


def load_kit(test_dir: Path, test: str) -> Kit:
    """plan.json and key.json of ``test_dir``; raises :class:`ResultsError` naming the file at fault."""
    plan_path, key_path = test_dir / lo.KIT_DIR / lo.PLAN_FILE, test_dir / lo.KEY_FILE
    plan, key = _read(plan_path, lo.PLAN_FORMAT, test), _read(key_path, lo.KEY_FORMAT, test)
    try:
        questions = {str(q["id"]): lo.Question(str(q["id"]), str(q.get("text", "")), int(q.get("min", 1)),
                                               int(q.get("max", 5)), tuple(q.get("labels", ())))
                     for q in plan["questions"]}
        raters = {str(r["rater"]): {str(i["clip"]) for i in r["items"]} for r in plan["raters"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise ResultsError(f"{plan_path}: needs 'questions' [{{id, min, max}}] and 'raters' "
                           f"[{{rater, items: [{{clip}}]}}] ({exc!r})") from exc
    clips, systems = key.get("clips"), key.get("systems")
    if not isinstance(clips, dict) or not isinstance(systems, list):
        raise ResultsError(f"{key_path}: needs 'clips' (an object) and 'systems' (a list)")
    for cid, c in clips.items():
        if not isinstance(c, dict) or c.get("system") not in systems or not c.get("prompt_id") \
                or c.get("role") not in ("test", "attention"):
            raise ResultsError(f"{key_path}: clip {cid!r} needs a 'system' of {systems}, a 'prompt_id' and a "
                               f"'role' (test or attention)")
    missing = sorted({c for clips_ in raters.values() for c in clips_} - set(clips))
    if missing:
        raise ResultsError(f"{key_path}: clips of {plan_path} missing from the key: {missing[:5]}"
                           f"{' ...' if len(missing) > 5 else ''}")
    att = key.get("attention") or {}
    has_att = any(c["role"] == "attention" for c in clips.values())
    if has_att and (att.get("question") not in questions or not isinstance(att.get("max_score"), int)):
        raise ResultsError(f"{key_path}: 'attention' needs a 'question' of {list(questions)} and an integer "
                           f"'max_score' (got {att!r})")
    # without attention clips nobody is checked, whatever the key's rule says
    return Kit(test, questions, raters, clips, [str(s) for s in systems], str(att["question"]) if has_att else "",
               int(att["max_score"]) if has_att else 0, plan.get("kit_id"))


def check_settings(kit: Kit, s: lo.ListeningSettings, test_dir: Path) -> None:
    """The kit must be the one the settings describe (else it is stale: rebuild it)."""
    key_path = test_dir / lo.KEY_FILE
    if set(kit.systems) != set(s.systems):
        raise ResultsError(f"{key_path}: systems {kit.systems} but the settings say {list(s.systems)} "
                           f"(rebuild the kit)")
    ids = [q.id for q in lo.questions(s)]
    if list(kit.questions) != ids:
        raise ResultsError(f"{test_dir / lo.KIT_DIR / lo.PLAN_FILE}: questions {list(kit.questions)} but the "
                           f"settings say {ids} (rebuild the kit)")


# --- checking rows ------------------------------------------------------------------------------------
def _problem(r, kit: Kit) -> str | None:
    """Why a rating row is unusable (one of :data:`DROP_REASONS`), or None."""
    if r.rater not in kit.plan:
        return "unknown rater"
    if r.clip not in kit.plan[r.rater]:
        return "clip not in the rater's plan"
    q = kit.questions.get(r.question)
    if q is None:
        return "unknown question"
    v = r.score
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) or not float(v).is_integer():
        return "score not an integer"
    if not q.min <= int(v) <= q.max:
        return "score out of range"
    if isinstance(r.played, str) or r.played not in (0, 1):
        return "played not 0/1"
    if not r.played:
        return "not played to the end"
    return None


def validate(df: pd.DataFrame, kit: Kit) -> tuple[pd.DataFrame, dict[str, int]]:
    """(valid rows: rater, clip, question, score (int), system, prompt_id, role, source; drop counts by reason)."""
    drops = dict.fromkeys(DROP_REASONS, 0)
    rows, seen = [], set()
    for r in df.itertuples(index=False):
        reason = _problem(r, kit)
        if reason is None and (r.rater, r.clip, r.question) in seen:
            reason = "duplicate"
        if reason is not None:
            drops[reason] += 1
            continue
        seen.add((r.rater, r.clip, r.question))
        c = kit.clips[r.clip]
        rows.append({"rater": r.rater, "clip": r.clip, "question": r.question, "score": int(r.score),
                     "system": c["system"], "prompt_id": str(c["prompt_id"]), "role": c["role"], "source": r.source})
    cols = ["rater", "clip", "question", "score", "system", "prompt_id", "role", "source"]
    return pd.DataFrame(rows, columns=cols), drops


def attention_status(valid: pd.DataFrame, kit: Kit) -> dict[str, str]:
    """rater -> "passed" / "failed" / "unchecked" for every rater with a valid rating."""
    out = {}
    for rater, g in valid.groupby("rater", sort=True):
        att = g[(g["role"] == "attention") & (g["question"] == kit.attention_question)]
        if not len(att):
            out[rater] = "unchecked"
        else:
            out[rater] = "failed" if (att["score"] > kit.attention_max).any() else "passed"
    return out


# --- statistics ---------------------------------------------------------------------------------------
def _counts(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    """[b, n] float: how often each of n units is drawn in each of b resamples of size n."""
    w = np.zeros((b, n))
    np.add.at(w, (np.arange(b)[:, None], rng.integers(0, n, size=(b, n))), 1.0)
    return w


def bootstrap_means(data: pd.DataFrame, b: int, seed: int) -> dict[tuple[str, str], np.ndarray]:
    """(system, question) -> [b] resampled MOS (NaN where a resample drew none of its ratings).

    One set of resamples for every cell: raters and prompts are drawn with replacement, and a rating
    counts (times its rater was drawn) x (times its prompt was drawn). Sharing the draws makes the
    differences between systems paired (the same raters and prompts on both sides)."""
    raters, prompts = sorted(data["rater"].unique()), sorted(data["prompt_id"].unique())
    rng = np.random.default_rng(seed)
    wr, wp = _counts(rng, b, len(raters)), _counts(rng, b, len(prompts))
    ri = data["rater"].map({r: i for i, r in enumerate(raters)}).to_numpy()
    pi = data["prompt_id"].map({p: i for i, p in enumerate(prompts)}).to_numpy()
    scores = data["score"].to_numpy(dtype=float)
    out = {}
    for key, idx in data.groupby(["system", "question"], sort=False).indices.items():
        w = wr[:, ri[idx]] * wp[:, pi[idx]]
        den = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[key] = np.where(den > 0, w @ scores[idx] / den, np.nan)
    return out


def _interval(x: np.ndarray) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if not len(x):
        return math.nan, math.nan
    lo_, hi = np.percentile(x, [2.5, 97.5])
    return float(lo_), float(hi)


def holm(p: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN entries stay NaN and do not count as tests)."""
    idx = sorted((i for i, v in enumerate(p) if not math.isnan(v)), key=lambda i: p[i])
    out, running = [math.nan] * len(p), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (len(idx) - rank) * p[i]))
        out[i] = running
    return out


def mos_table(data: pd.DataFrame, boot: dict, kit: Kit, s: lo.ListeningSettings, kept: int, failed: int) -> pd.DataFrame:
    rows = []
    for q in kit.questions.values():
        for system in kit.systems:
            g = data[(data["system"] == system) & (data["question"] == q.id)]
            bm = boot.get((system, q.id), np.full(s.bootstrap, np.nan))
            ci = _interval(bm)
            rows.append({"test": kit.test, "system": system, "question": q.id,
                         "mos": float(g["score"].mean()) if len(g) else math.nan, "ci_low": ci[0], "ci_high": ci[1],
                         "n_ratings": len(g), "n_raters": g["rater"].nunique(), "n_prompts": g["prompt_id"].nunique(),
                         "scale_min": q.min, "scale_max": q.max, "bootstrap": s.bootstrap,
                         "bootstrap_empty": int(np.isnan(bm).sum()), "seed": s.seed, "ci_method": CI_METHOD,
                         "raters_kept": kept, "raters_failed": failed})
    return pd.DataFrame(rows, columns=list(MOS_COLUMNS))


def pairwise_table(data: pd.DataFrame, boot: dict, kit: Kit, s: lo.ListeningSettings) -> pd.DataFrame:
    from scipy.stats import wilcoxon

    empty, nan_boot = pd.Series(dtype=float), np.full(s.bootstrap, np.nan)
    per_prompt = {k: g.groupby("prompt_id")["score"].mean() for k, g in data.groupby(["question", "system"])}
    mean = data.groupby(["question", "system"])["score"].mean().to_dict()
    rows = []
    for q in kit.questions:
        block = []
        for a, b in itertools.combinations(kit.systems, 2):
            xa, xb = per_prompt.get((q, a), empty), per_prompt.get((q, b), empty)
            both = sorted(set(xa.index) & set(xb.index))
            stat, p, note = math.nan, math.nan, ""
            if len(both) < 2:
                note = f"{len(both)} prompt(s) rated for both systems: no test"
            elif np.array_equal(xa[both].to_numpy(), xb[both].to_numpy()):
                stat, p, note = 0.0, 1.0, "every per-prompt mean equal"
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # scipy warns about ties and zero differences; it handles them
                    res = wilcoxon(xa[both].to_numpy(), xb[both].to_numpy())
                stat, p = float(res.statistic), float(res.pvalue)
            ma, mb = mean.get((q, a), math.nan), mean.get((q, b), math.nan)
            ci = _interval(boot.get((a, q), nan_boot) - boot.get((b, q), nan_boot))
            block.append({"test": kit.test, "question": q, "system_a": a, "system_b": b, "mos_a": ma, "mos_b": mb,
                          "diff": ma - mb, "ci_low": ci[0], "ci_high": ci[1], "n_prompts": len(both),
                          "wilcoxon_stat": stat, "p": p, "bootstrap": s.bootstrap, "seed": s.seed, "note": note})
        adjusted = holm([r["p"] for r in block])
        n_tests = sum(not math.isnan(r["p"]) for r in block)
        for r, ph in zip(block, adjusted):
            r["p_holm"], r["n_tests_holm"] = ph, n_tests
        rows += block
    return pd.DataFrame(rows, columns=list(PAIR_COLUMNS))


# --- tables, plot, summary ----------------------------------------------------------------------------
def _num(v: float, d: int = 2) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.{d}f}"


def _ci_cell(m: float, low: float, high: float) -> str:
    if not math.isfinite(m):
        return "n/a"
    return _num(m) + (f" [{_num(low)}, {_num(high)}]" if math.isfinite(low) else "")


def _p(v: float) -> str:
    return "" if not math.isfinite(v) else ("< 0.001" if v < 0.001 else f"{v:.3f}")


def _dropped_text(drops: dict[str, int]) -> str:
    parts = [f"{n} {reason}" for reason, n in drops.items() if n]
    return "Ratings dropped: " + ("; ".join(parts) if parts else "none") + "."


def protocol_notes(summary: dict, kit: Kit) -> list[str]:
    """The lines under both tables: raters, bootstrap, attention rule, dropped counts, questions."""
    r, s = summary["raters"], summary["settings"]
    notes = [f"{r['kept']} raters kept of {r['total']} who rated ({r['slots']} rater slots in the kit); "
             f"{summary['ratings']['used']} ratings of {summary['prompts']} prompts."]
    if (s.get("ratings") or {}).get("source") == "scripted":
        notes.insert(0, "Scripted raters (ratings.source: scripted): seeded random scores given through the rating "
                        "app, which show the pipeline working and are nobody's opinion.")
    if kit.attention_question:
        notes.append(f"Attention check: a rater who scores any attention clip above {kit.attention_max} on "
                     f"{kit.attention_question.upper()} is dropped with all their ratings; attention clips never "
                     f"enter the MOS. Failed: {r['failed']}"
                     + (f" ({', '.join(r['failed_codes'])})" if r["failed_codes"] else "") + ".")
    else:
        notes.append("No attention clips in the kit: no rater was checked.")
    if r["unchecked"]:
        notes.append(f"Unchecked (rated none of their attention clips, kept): {r['unchecked']} "
                     f"({', '.join(r['unchecked_codes'])}).")
    notes.append(f"MOS: mean of the ratings of a system's clips; 95 % CI: {CI_METHOD}, B = {s['bootstrap']}, "
                 f"seed {s['seed']}; a rating weighs (times its rater was drawn) x (times its prompt was drawn).")
    notes.append(_dropped_text(summary["ratings"]["dropped"]))
    notes.append("Questions: " + "; ".join(f"{q.id.upper()}: {q.text} ({q.min}-{q.max})"
                                            for q in kit.questions.values()) + ".")
    return notes


def mos_wide(mos: pd.DataFrame, kit: Kit) -> tuple[list[str], list[list[str]]]:
    """System | OVL (95 % CI) | REL (95 % CI) | ratings | raters."""
    header = ["System", *(f"{q.upper()} (95 % CI)" for q in kit.questions), "ratings", "raters"]
    rows = []
    for system in kit.systems:
        g = mos[mos["system"] == system].set_index("question")
        rows.append([system, *(_ci_cell(g.at[q, "mos"], g.at[q, "ci_low"], g.at[q, "ci_high"]) for q in kit.questions),
                     str(int(g["n_ratings"].sum())), str(int(g["n_raters"].max()))])
    return header, rows


def pairwise_wide(pw: pd.DataFrame) -> tuple[list[str], list[list[str]], list[str]]:
    header = ["Question", "System A", "System B", "MOS A - B (95 % CI)", "prompts", "p (Wilcoxon)", "p (Holm)"]
    rows, notes = [], []
    for r in pw.itertuples(index=False):
        rows.append([r.question.upper(), r.system_a, r.system_b, _ci_cell(r.diff, r.ci_low, r.ci_high),
                     str(r.n_prompts), _p(r.p), _p(r.p_holm)])
        if r.note:
            notes.append(f"{r.question.upper()} {r.system_a} vs {r.system_b}: {r.note}.")
    return header, rows, notes


def plot(mos: pd.DataFrame, kit: Kit, title: str, path: Path) -> None:
    """``path`` (PNG): one panel per question, MOS with its 95 % interval per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    qs = list(kit.questions.values())
    fig, axes = plt.subplots(1, len(qs), figsize=(max(3.2, 0.9 * len(kit.systems) + 1.4) * len(qs), 3.6),
                             squeeze=False)
    x = np.arange(len(kit.systems))
    for ax, q in zip(axes[0], qs):
        g = mos[mos["question"] == q.id].set_index("system").reindex(kit.systems)
        m = g["mos"].to_numpy(dtype=float)
        err = np.vstack([m - g["ci_low"].to_numpy(dtype=float), g["ci_high"].to_numpy(dtype=float) - m])
        ax.errorbar(x, m, yerr=np.nan_to_num(err), fmt="o", capsize=4, color="C0")
        ax.set_xticks(x, kit.systems, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(q.min - 0.25, q.max + 0.25)
        ax.set_title(f"{q.id.upper()}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("MOS (95 % CI)")
    fig.suptitle(title, fontsize=10)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def html_page(kit: Kit, *tables_md: str) -> str:
    """Both tables as one standalone HTML page (Snakemake's report shows HTML inline, Markdown only as a
    download). The Markdown is HTML-escaped first: question texts come from the config, as typed."""
    import html

    from ssmttm.report.pages import _page, markdown_html

    body = []
    for md in tables_md:
        head, _, rest = md.partition("\n")  # "# title": an <h2> here, the page has its own <h1>
        body.append(f"<h2>{html.escape(head.lstrip('# '))}</h2>" + markdown_html(html.escape(rest, quote=False)))
    return _page(f"Listening test {kit.test}", "".join(body))


def _json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


# --- the stage ----------------------------------------------------------------------------------------
def check_kit(db: Path, test_dir: Path) -> None:
    """The ratings of ``db`` were given with the current kit: the rating app records the sha256 of the
    plan.json it served (:func:`ssmttm.listen.store.bind_kit`). A kit rebuilt since (new clips, a changed
    setting) has other clips under the ids, so its key must not label these ratings."""
    plan = test_dir / lo.KIT_DIR / lo.PLAN_FILE
    served = db_kit(db) if db.is_file() else None
    current = io.sha256_file(plan)
    if served is not None and served != current:
        raise ResultsError(f"{db}: its ratings were given with the kit whose plan.json has sha256 {served}, but "
                           f"{plan} is another kit ({current}); the rated kit's key is in "
                           f"{test_dir / lo.HISTORY_DIR / served[:16]}. Rebuild that kit (same settings and clips) "
                           f"or analyse the ratings against it")



def analyse(test: str, test_dir: Path, s: lo.ListeningSettings, db: Path | None, json_files: list[Path]):
    """(kit, mos table, pairwise table, summary dict) of a test; raises :class:`ResultsError` naming the
    sources when no rating is usable."""
    kit = load_kit(test_dir, test)
    check_settings(kit, s, test_dir)
    kit.systems = list(s.systems)  # tables in the config's order (key.json may list them sorted)
    sources = ([str(db)] if db is not None else []) + [str(f) for f in json_files]
    if db is not None:
        check_kit(db, test_dir)
    raw = read_ratings(test, db, json_files, kit.kit_id)
    if not len(raw):
        raise ResultsError(f"{', '.join(sources)}: no ratings at all")
    valid, drops = validate(raw, kit)
    if not len(valid):
        raise ResultsError(f"{', '.join(sources)}: none of the {len(raw)} ratings is usable ({_dropped_text(drops)})")
    status = attention_status(valid, kit)
    failed = sorted(r for r, v in status.items() if v == "failed")
    unchecked = sorted(r for r, v in status.items() if v == "unchecked")
    if failed:
        log.warning("raters dropped by the attention check: %s", ", ".join(failed))
    drops["from raters who failed the attention check"] = int(valid["rater"].isin(failed).sum())
    kept = valid[~valid["rater"].isin(failed)]
    data = kept[kept["role"] == "test"].reset_index(drop=True)
    if not len(data):
        raise ResultsError(f"{', '.join(sources)}: no usable rating of a test clip from a rater who passed the "
                           f"attention check ({len(failed)} failed; {_dropped_text(drops)})")
    boot = bootstrap_means(data, s.bootstrap, s.seed)
    n_kept = len(status) - len(failed)
    mos = mos_table(data, boot, kit, s, n_kept, len(failed))
    pw = pairwise_table(data, boot, kit, s)
    per_system = {sys_: {q: int(((data["system"] == sys_) & (data["question"] == q)).sum()) for q in kit.questions}
                  for sys_ in kit.systems}
    summary = {
        "format": lo.RESULTS_FORMAT, "test": test, "sources": sources,
        "raters": {"slots": len(kit.plan), "total": len(status), "kept": n_kept, "failed": len(failed),
                   "unchecked": len(unchecked), "passed": sum(v == "passed" for v in status.values()),
                   "failed_codes": failed, "unchecked_codes": unchecked},
        "ratings": {"read": len(raw), "valid": len(valid), "used": len(data),
                    "attention_used": int((kept["role"] == "attention").sum()),
                    "dropped": drops, "dropped_total": sum(drops.values())},
        "prompts": int(data["prompt_id"].nunique()), "per_system": per_system,
        "attention": {"question": kit.attention_question or None, "max_score": kit.attention_max,
                      "rule": "a rater scoring any attention clip above max_score on the question is dropped; "
                              "a rater who rated none of their attention clips is kept (unchecked)"},
        "ci_method": CI_METHOD, "settings": asdict(s),
    }
    return kit, mos, pw, summary


def write_outputs(out_dir: Path, kit: Kit, mos: pd.DataFrame, pw: pd.DataFrame, summary: dict) -> None:
    """Every output file, into a staging folder beside ``out_dir`` that then replaces it."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = io.temp_dir(out_dir.parent, f".{out_dir.name}.")
    try:
        from ssmttm.report.tables import latex_table, to_markdown

        notes = protocol_notes(summary, kit)
        title = f"Listening test {kit.test}: mean opinion scores"
        header, rows = mos_wide(mos, kit)
        io.write_table(staging / "mos.csv", mos.round(6))  # no 3.3499999999999996 in the CSV
        io.write_text(staging / "mos.md", to_markdown(title, header, rows, notes))
        io.write_text(staging / "mos.tex", latex_table(title, f"listening-{kit.test}-mos", header, rows, notes,
                                                       "l" + "r" * (len(header) - 1), "listening-results"))
        ptitle = f"Listening test {kit.test}: pairwise differences"
        pheader, prows, pnotes = pairwise_wide(pw)
        pnotes = ["MOS A - B with its 95 % interval from the same bootstrap resamples as the MOS (paired); "
                  "two-sided Wilcoxon signed-rank test over prompts of the per-prompt mean scores (prompts rated "
                  "for both systems), Holm-corrected across the pairs of each question.", *pnotes, *notes]
        io.write_table(staging / "pairwise.csv", pw.round(6))
        io.write_text(staging / "pairwise.md", to_markdown(ptitle, pheader, prows, pnotes))
        io.write_text(staging / "pairwise.tex", latex_table(ptitle, f"listening-{kit.test}-pairwise", pheader, prows,
                                                            pnotes, "lll" + "r" * (len(pheader) - 3),
                                                            "listening-results"))
        io.write_text(staging / "mos.html", html_page(kit, to_markdown(title, header, rows, notes),
                                                      to_markdown(ptitle, pheader, prows, pnotes)))
        plot(mos, kit, title, staging / "mos.png")
        io.write_json(staging / "summary.json", _json_safe(summary))
        io.replace_dir(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ssmttm listening-results", description=__doc__.split("\n\n")[0])
    p.add_argument("--test", required=True, help="listening.tests.<name>")
    p.add_argument("--test-dir", required=True, type=Path, help="results/listening/<test> (kit/plan.json, key.json)")
    p.add_argument("--db", type=Path, default=None, help="a ratings database (listen serve, listen simulate)")
    p.add_argument("--ratings-json", nargs="*", type=Path, default=[], help="ratings JSON files (static export)")
    p.add_argument("--out-dir", required=True, type=Path, help="e.g. results/listening/<test>/results")
    st.add_arguments(p, lo.ListeningSettings)
    a = p.parse_args(argv)
    s = st.from_args(p, lo.ListeningSettings, a)
    if a.db is None and not a.ratings_json:
        p.error("give --db and/or --ratings-json: no ratings to read")
    log_ = logs.setup("ssmttm.listen")
    kit, mos, pw, summary = analyse(a.test, a.test_dir, s, a.db, list(a.ratings_json))
    write_outputs(a.out_dir, kit, mos, pw, summary)
    r = summary["raters"]
    log_.info("%d ratings from %d of %d raters (%d failed the attention check, %d unchecked); %d dropped; "
              "wrote %s", summary["ratings"]["used"], r["kept"], r["total"], r["failed"], r["unchecked"],
              summary["ratings"]["dropped_total"], a.out_dir)
    return 0
