"""``python -m ssmttm tables``: results tables (CSV, Markdown, LaTeX) from the evaluation's score files.

Input: score JSON files ``{"rows": [row, ...]}`` (the evaluation contract: one row per system x
seed x step x metric, ``system_kind`` generated / ground_truth / resynth / musicgen / external) and the
config's ``studies``
(:class:`ssmttm.report.options.TablesSettings`: ``{study: {"kind": "comparison" | "curve", "experiments":
[...], "title": str, "published": bool, "step": int | None}}``, checked against the config schema, whose
defaults fill the keys a study leaves out), passed as ``--settings`` JSON by the rule or ``--studies`` by hand.

Per study, ``<study>.csv`` (long: one row per system x step x metric, every protocol column),
``<study>.md`` and ``<study>.tex`` (wide: one "mean ± sd" column per metric, protocol listed under
the table). Rows are aggregated over seeds: mean, sample sd (blank with one seed), n_seeds, the
mean of the per-seed bootstrap CI bounds, n clips. Every table carries the ground-truth and codec
re-synthesis rows (a broken metric is told apart from a bad model, as audiocraft's ``use_gt``), the
baselines of the config's ``systems`` (MusicGen generated and scored here, external folders), and
the published rows (MusicGen-small; curve studies also the paper's curve points). Rows whose status
is "pipeline check, not a score" are marked † with a footnote. Comparison studies show each
experiment at its last evaluated step (or all at ``step``, matched LM steps); curve studies every
step, and get plots (evalcurves).
Also ``all_scores.csv``: every input row and every published row, flat.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import unicodedata
from pathlib import Path

import pandas as pd

from ssmttm import io, logs, settings
from ssmttm.eval.evaluate import PIPELINE_CHECK
from ssmttm.report import evalcurves, published
from ssmttm.report.labels import metric_label, metric_sort_key
from ssmttm.report.options import TablesSettings

log = logging.getLogger("ssmttm.report.tables")

DAGGER = "†"
ROW_KEYS = published.ROW_KEYS
KEYS = ("system_kind", "experiment", "step", "prompt_set")
IDENT = ("variant", "preset", "kappa", "stages", "params", "flops_6nd", "flops_measured")
PROTOCOL = ("model", "checkpoint", "checkpoint_sha256", "sample_rate", "window_s", "hop_s", "duration_s", "kl_epsilon",
            "bootstrap")
LONG_COLUMNS = (
    "study", *KEYS[:2], "variant", "preset", "kappa", "stages", "step", "prompt_set", "params", "flops_6nd", "flops_measured",
    "metric", "metric_label", "lower_is_better", "mean", "sd", "n_seeds", "seeds", "ci_low", "ci_high", "n", "n_ref",
    *PROTOCOL, "status", "source",
)
KIND_ORDER = {"ground_truth": 0, "resynth": 1, "generated": 2, "musicgen": 3, "external": 3, "published": 4}
BASELINE_KINDS = ("musicgen", "external")  # config systems: in every table, beside the published rows


def _blank(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (not isinstance(v, str) and pd.isna(v))


# --- loading ------------------------------------------------------------------------------------------
def load_scores(paths: list[str | Path]) -> pd.DataFrame:
    """Every row of every score file (columns ROW_KEYS + ``score_file``); a file or row that cannot
    be read is skipped with a warning naming it."""
    rows = []
    for path in paths:
        path = Path(path)
        try:
            data = io.read_json(path)
            items = data["rows"]
            if not isinstance(items, list):
                raise TypeError("'rows' is not a list")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("skipped score file %s: %s", path, exc)
            continue
        for i, r in enumerate(items):
            if not isinstance(r, dict) or not r.get("metric") or r.get("system_kind") not in KIND_ORDER:
                log.warning("skipped row %d of %s: needs 'metric' and a known 'system_kind'", i, path)
                continue
            try:
                value = float(r.get("value")) if r.get("value") is not None else math.nan
            except (TypeError, ValueError):
                log.warning("skipped row %d of %s: value %r is not a number", i, path, r.get("value"))
                continue
            row = {k: r.get(k) for k in ROW_KEYS}
            row["value"] = value
            row["score_file"] = path.as_posix()
            rows.append(row)
    return pd.DataFrame(rows, columns=[*ROW_KEYS, "score_file"])


def with_published(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` plus every published row (source column says where each comes from)."""
    pub = pd.DataFrame(published.published_rows(curves=True), columns=list(ROW_KEYS))
    pub["score_file"] = None
    parts = [p for p in (df, pub) if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else df


# --- aggregation over seeds --------------------------------------------------------------------------
def _first(s: pd.Series):
    s = s.dropna()
    return s.iloc[0] if len(s) else None


def _joined(s: pd.Series):
    """The single value of a protocol column, or every distinct value joined by ' | ' (a mismatch)."""
    vals = list(dict.fromkeys(str(v) for v in s if not _blank(v)))
    if not vals:
        return None
    return s.dropna().iloc[0] if len(vals) == 1 else " | ".join(vals)


def _mean(s: pd.Series):
    s = pd.to_numeric(s, errors="coerce").dropna()
    return float(s.mean()) if len(s) else math.nan


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (system_kind, experiment, step, prompt_set, metric), aggregated over seeds.

    mean / sd (ddof 1, NaN with one seed) of ``value``; ci_low / ci_high = mean of the per-seed
    bootstrap bounds; n / n_ref = the smallest clip counts over seeds; identifying columns from the
    first row that has them (flops as the mean); protocol columns joined by ' | ' when seeds
    disagree (logged: mixing protocols in one mean is an error in the inputs). Columns LONG_COLUMNS
    minus ``study``.
    """
    cols = [c for c in LONG_COLUMNS if c != "study"]
    if not len(df):
        return pd.DataFrame(columns=cols)
    df = df.copy()
    df["experiment"] = [e if not _blank(e) else k for e, k in zip(df["experiment"], df["system_kind"])]
    df["_step"] = pd.to_numeric(df["step"], errors="coerce").fillna(-1).astype("int64")
    df["_ps"] = df["prompt_set"].where(df["prompt_set"].notna(), "")
    df["_seed"] = df["seed"].astype(object).where(df["seed"].notna(), "")
    gkeys = ["system_kind", "experiment", "_step", "_ps", "metric"]
    dup = df.duplicated([*gkeys, "_seed"], keep="last")
    for _, r in df[dup].iterrows():
        log.warning("duplicate score for %s seed %s step %s %s (%s): the last one is kept", r["experiment"],
                    r["seed"], r["step"], r["metric"], r["score_file"])
    df = df[~dup]
    out = []
    for (kind, exp, step, ps, metric), g in df.groupby(gkeys, sort=False):
        vals = g["value"].astype(float)
        row = {"system_kind": kind, "experiment": exp, "step": None if step < 0 else int(step),
               "prompt_set": ps or None, "metric": metric, "metric_label": metric_label(metric)}
        for c in IDENT:
            row[c] = _mean(g[c]) if c.startswith("flops") else _first(g[c])
        lib = _first(g["lower_is_better"])
        row["lower_is_better"] = None if lib is None else bool(lib)
        row["mean"] = float(vals.mean()) if vals.notna().any() else math.nan
        row["sd"] = float(vals.std(ddof=1)) if vals.notna().sum() >= 2 else math.nan
        seeds = [s for s in g["seed"] if not _blank(s)]
        row["n_seeds"] = None if kind == "published" else int(vals.notna().sum())
        row["seeds"] = " ".join(str(int(s)) if isinstance(s, (int, float)) else str(s) for s in seeds) or None
        row["ci_low"], row["ci_high"] = _mean(g["ci_low"]), _mean(g["ci_high"])
        for c in ("n", "n_ref"):
            s = pd.to_numeric(g[c], errors="coerce").dropna()
            row[c] = int(s.min()) if len(s) else None
        for c in PROTOCOL:
            row[c] = _joined(g[c])
            if isinstance(row[c], str) and " | " in row[c] and c not in ("bootstrap",):
                log.warning("%s %s step %s %s: seeds disagree on %s (%s)", kind, exp, row["step"], metric, c, row[c])
        row["status"] = PIPELINE_CHECK if (g["status"] == PIPELINE_CHECK).any() else _first(g["status"]) or "score"
        row["source"] = _joined(g["source"])
        out.append(row)
    return pd.DataFrame(out, columns=cols)


def variant_label(r) -> str:
    """'prefix-simba (κ 1 + refiner)' for a two-stage system, 'prefix-simba (κ 4)' single-stage."""
    if _blank(r.get("variant")):
        return ""
    if _blank(r.get("kappa")) or r.get("system_kind") != "generated":
        return str(r["variant"])
    return f"{r['variant']} (κ {int(r['kappa'])}{' + refiner' if r.get('stages') == 'two-stage' else ''})"


# --- studies -----------------------------------------------------------------------------------------
def study_table(agg: pd.DataFrame, name: str, spec: dict) -> pd.DataFrame:
    """The long table of one study: its experiments (comparison: each at its last step, or every one
    at ``spec["step"]`` for matched steps; curve: every step), the ground-truth and resynth rows (of
    the study's prompt sets), the baseline systems, and published rows."""
    exps = list(spec["experiments"])
    gen = agg[(agg["system_kind"] == "generated") & agg["experiment"].isin(exps)]
    for e in exps:
        if not (gen["experiment"] == e).any():
            log.warning("study %s: no scores for experiment %s", name, e)
    if spec["kind"] == "comparison" and len(gen) and spec["step"] is not None:
        gen = gen[gen["step"] == int(spec["step"])]
        for e in exps:
            if not (gen["experiment"] == e).any():
                log.warning("study %s: no scores for experiment %s at step %s", name, e, spec["step"])
    elif spec["kind"] == "comparison" and len(gen):
        last = gen.groupby("experiment")["step"].transform(lambda s: s.max())
        gen = gen[(gen["step"] == last) | last.isna()]
    refs = agg[agg["system_kind"].isin(["ground_truth", "resynth", *BASELINE_KINDS])]
    sets = set(gen["prompt_set"].dropna())
    if sets:
        refs = refs[refs["prompt_set"].isin(sets) | refs["prompt_set"].isna()]
    variants = sorted(set(gen["variant"].dropna())) or None
    curve_pub = spec["kind"] == "curve" and spec["published"]
    pub_rows = published.curve_rows(variants) if curve_pub else []
    if curve_pub and not pub_rows:  # none of the study's variants has a published curve: show them all
        pub_rows = published.curve_rows()
    pub_rows += published.musicgen_rows()
    pub = aggregate(pd.DataFrame([{**r, "score_file": None} for r in pub_rows]))
    t = pd.concat([x for x in (refs, gen, pub) if len(x)], ignore_index=True)
    order = {e: i for i, e in enumerate(exps)}
    t["_k"] = t["system_kind"].map(KIND_ORDER)
    t["_e"] = t["experiment"].map(order).fillna(len(order))
    t["_s"] = pd.to_numeric(t["step"], errors="coerce").fillna(-1)
    t["_m"] = t["metric"].map(lambda m: metric_sort_key(m)[0])
    t = t.sort_values(["_k", "_e", "experiment", "_s", "_m", "metric"], kind="stable")
    t = t.drop(columns=["_k", "_e", "_s", "_m"])
    t.insert(0, "study", name)
    return t.reset_index(drop=True)


def fmt_value(mean: float, sd: float | None = None) -> str:
    """'mean ± sd' at three significant digits of the mean (sd to the same decimals)."""
    if _blank(mean):
        return ""
    d = 0 if mean == 0 else max(0, min(4, 2 - int(math.floor(math.log10(abs(mean))))))
    s = f"{mean:.{d}f}"
    return s if _blank(sd) else f"{s} ± {sd:.{d}f}"


def wide(study: pd.DataFrame) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, rows of cell strings, footnotes) of the readable table of one study."""
    metrics = sorted(study["metric"].unique(), key=metric_sort_key)
    many_sets = study["prompt_set"].dropna().nunique() > 1
    lib = study.groupby("metric")["lower_is_better"].first()
    arrow = {m: "" if _blank(lib.get(m)) else (" ↓" if lib[m] else " ↑") for m in metrics}
    header = ["System", "Experiment", "Variant", "Step", "Params (M)", "6ND FLOPs"] + (["Prompts"] if many_sets else [])
    header += [metric_label(m) + arrow[m] for m in metrics] + ["Seeds"]
    rows, any_check = [], False
    for _, g in study.groupby(["system_kind", "experiment", "step", "prompt_set"], sort=False, dropna=False):
        r = g.iloc[0]
        check = g["status"] == PIPELINE_CHECK
        any_check |= bool(check.any())
        label = str(r["experiment"]) + (DAGGER if check.any() else "")
        cells = {m: "" for m in metrics}
        for _, x in g.iterrows():
            mixed = x["status"] == PIPELINE_CHECK and not check.all()  # only some metrics of the row are checks
            cells[x["metric"]] = fmt_value(x["mean"], x["sd"]) + (DAGGER if mixed else "")
        n_seeds = g["n_seeds"].dropna()
        row = [str(r["system_kind"]).replace("_", " "), label, variant_label(r),
               "" if _blank(r["step"]) else f"{int(r['step']):,}",
               "" if _blank(r["params"]) else f"{float(r['params']) / 1e6:.2f}",
               "" if _blank(r["flops_6nd"]) else f"{float(r['flops_6nd']):.2e}"]
        row += (["" if _blank(r["prompt_set"]) else str(r["prompt_set"])] if many_sets else [])
        row += [cells[m] for m in metrics] + [str(int(n_seeds.max())) if len(n_seeds) else ""]
        rows.append(row)
    notes = []
    if any_check:
        notes.append(f"{DAGGER} {PIPELINE_CHECK}: demo-scale models and/or stand-in embedders; the numbers check "
                     "that the pipeline runs end to end, they say nothing about the method.")
    notes.append("Values: mean ± sample sd over seeds (sd blank with one seed); "
                 "6ND FLOPs of the evaluated checkpoint.")
    if (study["system_kind"] == "published").any():
        parts = [p for s in study.loc[study["system_kind"] == "published", "source"].dropna() for p in s.split("; ")]
        notes.append("Published rows (not measured here): " + "; ".join(dict.fromkeys(parts)) + ".")
    return header, rows, notes + protocol_notes(study)


def protocol_notes(study: pd.DataFrame) -> list[str]:
    """One line per measured metric: embedding model, checkpoint + sha256, rate, window, bootstrap, n."""
    out = []
    ours = study[study["system_kind"] != "published"]
    for m in sorted(ours["metric"].unique(), key=metric_sort_key):
        g = ours[ours["metric"] == m]

        def vals(c):
            return ", ".join(dict.fromkeys(str(v) for v in g[c] if not _blank(v))) or "n/a"

        sha = ", ".join(dict.fromkeys(str(v)[:12] for v in g["checkpoint_sha256"] if not _blank(v))) or "n/a"
        n = pd.to_numeric(g["n"], errors="coerce").dropna()
        def unit(c, u):
            v = vals(c)
            return v if v == "n/a" else f"{v} {u}"

        eps = vals("kl_epsilon") if "kl_epsilon" in g else "n/a"
        out.append(f"{metric_label(m)}: model {vals('model')}, checkpoint {vals('checkpoint')} (sha256 {sha}), "
                   f"{unit('sample_rate', 'Hz')}, window {unit('window_s', 's')}, hop {unit('hop_s', 's')}, clips cut to "
                   f"{unit('duration_s', 's') if 'duration_s' in g else 'n/a'}, "
                   f"{'' if eps == 'n/a' else f'KL epsilon {eps}, '}bootstrap {vals('bootstrap')}, n clips {int(n.min()) if len(n) else 'n/a'}"
                   f"{'' if not len(n) or n.min() == n.max() else f'-{int(n.max())}'}, n ref {vals('n_ref')}.")
    return out


def to_markdown(title: str, header: list[str], rows: list[list[str]], notes: list[str]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [f"# {title}", "", "| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join("---" if i < 3 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


# --- LaTeX ----------------------------------------------------------------------------------------------
# The .tex tables are \input into a paper compiled by pdflatex, which without inputenc/fontenc set up
# stops at the first non-ASCII character ("Unicode character ... not set up for use with LaTeX").
# Every character that reaches a .tex file therefore goes through tex_escape: LaTeX specials are
# escaped and every non-ASCII symbol becomes a command that works in pdflatex's default OT1 setup,
# so the files are pure ASCII and need no inputenc, fontenc or textcomp.
TEX_PACKAGES = ("booktabs", "graphicx", "array")
_TEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
    ">": r"\textgreater{}", "|": r"\textbar{}",  # OT1 typesets < > | as other glyphs in text mode
    "`": "{}`{}",  # no ligature with a neighbour (`` and !` ?` are ligatures)
    "\n": " ", "\t": " ", "\r": " ",
}
_TEX_UNICODE = {
    DAGGER: r"\textsuperscript{\dag}", "‡": r"\textsuperscript{\ddag}",
    "±": r"$\pm$", "∓": r"$\mp$", "×": r"$\times$", "÷": r"$\div$", "·": r"$\cdot$", "⋅": r"$\cdot$",
    "≈": r"$\approx$", "∼": r"$\sim$", "≃": r"$\simeq$", "≠": r"$\neq$", "≡": r"$\equiv$",
    "≤": r"$\leq$", "≥": r"$\geq$", "⩽": r"$\leq$", "⩾": r"$\geq$", "≪": r"$\ll$", "≫": r"$\gg$",
    "→": r"$\rightarrow$", "←": r"$\leftarrow$", "↔": r"$\leftrightarrow$", "⇒": r"$\Rightarrow$",
    "⇐": r"$\Leftarrow$", "⇔": r"$\Leftrightarrow$", "↓": r"$\downarrow$", "↑": r"$\uparrow$",
    "∞": r"$\infty$", "∝": r"$\propto$", "∈": r"$\in$", "∑": r"$\sum$", "√": r"$\surd$", "∂": r"$\partial$",
    "−": r"$-$", "′": r"$'$", "″": r"$''$", "°": r"$^\circ$", "¹": r"$^1$", "²": r"$^2$", "³": r"$^3$",
    "½": r"$\frac{1}{2}$", "¼": r"$\frac{1}{4}$", "¾": r"$\frac{3}{4}$", "µ": r"$\mu$",
    "–": "--", "—": "---", "‐": "-", "‑": "-", "‒": "--", "…": r"\ldots{}", "•": r"\textbullet{}",
    "‘": "`", "’": "'", "‚": ",", "“": "``", "”": "''", "„": ",,", "«": r"$\ll$", "»": r"$\gg$",
    "\u00a0": "~", "\u202f": r"\,", "\u2009": r"\,", "\u2002": " ", "\u2003": " ", "\u200b": "",
    "§": r"\S{}", "¶": r"\P{}", "©": r"\copyright{}", "®": r"\textregistered{}", "™": r"\texttrademark{}",
    "ß": r"\ss{}", "æ": r"\ae{}", "Æ": r"\AE{}", "œ": r"\oe{}", "Œ": r"\OE{}", "ø": r"\o{}", "Ø": r"\O{}",
    "ł": r"\l{}", "Ł": r"\L{}", "ı": r"\i{}", "ȷ": r"\j{}", "¡": "!`", "¿": "?`",
}
# Greek letters in math mode (κ is the number of codebooks; µ above is the micro sign, μ here the letter).
# Capitals that look like Latin letters have no LaTeX command: they are written as those letters.
_GREEK = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
          "sigma tau upsilon phi chi psi omega").split()
_GREEK_LATIN_CAPITALS = dict(zip("alpha beta epsilon zeta eta iota kappa mu nu omicron rho tau chi".split(),
                                 "ABEZHIKMNOPTX"))
for _i, _name in enumerate(_GREEK):
    _skip = _i >= 17  # after rho: U+03C2 is the final sigma, U+03A2 is unassigned
    _lower = {"omicron": "o", "epsilon": r"\varepsilon", "phi": r"\varphi"}.get(_name, "\\" + _name)  # glyph shapes
    _TEX_UNICODE[chr(0x3B1 + _i + _skip)] = f"${_lower}$"
    _TEX_UNICODE[chr(0x391 + _i + _skip)] = _GREEK_LATIN_CAPITALS.get(_name) or rf"$\{_name.capitalize()}$"
_TEX_UNICODE.update({"ς": r"$\varsigma$", "ϵ": r"$\epsilon$", "ϕ": r"$\phi$", "ϑ": r"$\vartheta$"})
# combining accents (after NFD) -> the LaTeX text accent that draws them in OT1
_TEX_ACCENTS = {"\u0300": "`", "\u0301": "'", "\u0302": "^", "\u0303": "~", "\u0304": "=", "\u0306": "u",
                "\u0307": ".", "\u0308": '"', "\u030a": "r", "\u030b": "H", "\u030c": "v", "\u0327": "c"}


def _tex_char(ch: str) -> str:
    """One non-ASCII character as ASCII LaTeX: a known symbol, an accented letter, a compatibility
    form (ligatures, full-width letters) or, failing all, its code point in brackets (logged)."""
    if ch in _TEX_UNICODE:
        return _TEX_UNICODE[ch]
    base, *marks = unicodedata.normalize("NFD", ch)
    if marks and base.isascii() and all(m in _TEX_ACCENTS for m in marks):
        out = base if marks == ["\u0327"] else {"i": r"\i{}", "j": r"\j{}"}.get(base, base)  # dotless under accents
        for m in marks:  # innermost accent first
            out = rf"\{_TEX_ACCENTS[m]}{{{out}}}"
        return out
    compat = unicodedata.normalize("NFKD", ch)
    if compat != ch and all(c.isascii() or c in _TEX_UNICODE for c in compat):
        return "".join(_TEX_SPECIAL.get(c, c) if c.isascii() else _TEX_UNICODE[c] for c in compat)
    log.warning("no LaTeX form for %r (U+%04X): written as [U+%04X]", ch, ord(ch), ord(ch))
    return f"[U+{ord(ch):04X}]"


LONG_WORD = 20  # characters; a longer word gets line-break points after / _ . (paths, run names)


def tex_escape(s) -> str:
    """``s`` as LaTeX text in pure ASCII: specials escaped, every non-ASCII character as a command
    (κ -> ``$\\kappa$``, ± -> ``$\\pm$``, – -> ``--``, é -> ``\\'{e}``); ``--`` in the input stays two
    hyphens. Words longer than LONG_WORD may break after ``/``, ``_`` and ``.``, so a long path or run
    name can wrap in the notes and in paragraph columns (where a table has no such column the
    break points are inert)."""
    out = []
    for word in re.split(r"(\s+)", str(s)):
        long = len(word) > LONG_WORD
        for i, ch in enumerate(word):
            if ch.isascii():
                e = _TEX_SPECIAL.get(ch, ch)
                if ch == "-" and word[i + 1:i + 2] == "-":
                    e = "-{}"  # no en/em-dash ligature from literal hyphens (command-line flags)
            else:
                e = _tex_char(ch)
            if long and ch in "/_." and i + 1 < len(word):
                e += r"\allowbreak{}"
            out.append(e)
    return "".join(out)


def _tex_head(h: str) -> str:
    """A header cell; a label with a parenthesised detail ("FAD (VGGish)") goes on two lines so
    metric columns stay as narrow as their numbers."""
    head, sep, rest = str(h).partition(" (")
    if not sep or not head:
        return tex_escape(h)
    return rf"\begin{{tabular}}[b]{{@{{}}c@{{}}}}{tex_escape(head)}\\({tex_escape(rest)}\end{{tabular}}"


def latex_table(title: str, label: str, header: list[str], rows: list[list[str]], notes: list[str],
                colspec: str, source: str) -> str:
    """A booktabs float: caption, the table scaled down to the line width when wider (never up), and
    the notes under it, ragged right. ``source`` (the command that wrote it) goes in the header
    comment, with the packages the preamble needs."""
    lines = [
        f"% Generated by `python -m ssmttm {source}`; do not edit by hand.",
        rf"% Use with \input{{}}; the preamble needs \usepackage{{{','.join(TEX_PACKAGES)}}}",
        "% (booktabs: the rules; graphicx: \\resizebox, which narrows a table wider than the line;",
        "% array: the column types). The file is ASCII only, so pdflatex needs no inputenc setup.",
        r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{tex_escape(title)}}}",
        rf"\label{{tab:{label}}}",
        # \width is the tabular's natural width: scaled to \linewidth only when it is wider
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
        rf"\begin{{tabular}}{{{colspec}}}", r"\toprule",
        " & ".join(_tex_head(h) for h in header) + r" \\", r"\midrule",
    ]
    lines += [" & ".join(tex_escape(c) for c in r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}}", r"\par\smallskip", r"{\footnotesize\raggedright"]
    lines += [tex_escape(n) + r"\par" for n in notes]
    return "\n".join(lines + ["}", r"\end{table}"]) + "\n"


def to_latex(title: str, label: str, header: list[str], rows: list[list[str]], notes: list[str]) -> str:
    """The study table as a booktabs float (see :func:`latex_table`)."""
    return latex_table(title, label, header, rows, notes, "lll" + "r" * (len(header) - 3), "tables")


def write_study(study: pd.DataFrame, name: str, title: str, out_dir: Path) -> list[Path]:
    """Write ``<out_dir>/<name>.{csv,md,tex}``; return the paths."""
    header, rows, notes = wide(study)
    paths = [out_dir / f"{name}.{ext}" for ext in ("csv", "md", "tex")]
    io.write_table(paths[0], study[list(LONG_COLUMNS)])
    io.write_text(paths[1], to_markdown(title, header, rows, notes))
    io.write_text(paths[2], to_latex(title, name, header, rows, notes))
    return paths


def with_defaults(studies: dict[str, dict]) -> dict[str, dict]:
    """Each study with the schema's defaults for the keys it leaves out; an empty title is the study's name."""
    defaults = settings.defaults(("studies.*",))
    return {name: {**defaults, **spec, "title": spec.get("title") or name} for name, spec in studies.items()}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ssmttm tables", description=__doc__.split("\n\n")[0])
    p.add_argument("--scores", nargs="+", required=True, type=Path, help="score JSON files")
    p.add_argument("--out-dir", required=True, type=Path, help="e.g. results/tables")
    p.add_argument("--plots", nargs="*", type=Path, default=[],
                   help="the curve-study figures to write, <dir>/<study>_vs_{steps,flops}.{png,svg} (the rule's outputs)")
    settings.add_arguments(p, TablesSettings)
    a = p.parse_args(argv)
    studies = with_defaults(settings.from_args(p, TablesSettings, a).studies)
    log_ = logs.setup("ssmttm.report")
    df = load_scores(a.scores)
    log_.info("%d score rows from %d file(s)", len(df), len(a.scores))
    flat = with_published(df)
    io.write_table(a.out_dir / "all_scores.csv", flat)
    agg = aggregate(df)
    for name, spec in studies.items():
        table = study_table(agg, name, spec)
        for path in write_study(table, name, spec["title"], a.out_dir):
            log_.info("wrote %s", path)
        if spec["kind"] == "curve" and a.plots:
            folders = {f.parent for f in a.plots if f.name.startswith(f"{name}_vs_")}
            if len(folders) != 1:
                p.error(f"--plots: curve study {name!r} needs its <dir>/{name}_vs_steps.png (and the rest) listed, "
                        f"in one folder; got {sorted(map(str, folders))}")
            written = evalcurves.plot_study(table, name, spec["title"], folders.pop())
            missing = {f for f in a.plots if f.name.startswith(f"{name}_vs_")} - set(written)
            if missing:
                p.error(f"--plots: {sorted(map(str, missing))} are not figures of curve study {name!r}")
            for path in written:
                log_.info("wrote %s", path)
    return 0
