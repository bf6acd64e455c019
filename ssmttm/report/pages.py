"""``report-pages``: self-contained HTML pages for ``snakemake --report``.

Snakemake's report shows images and HTML inline but offers other files only as downloads, so the
tables (Markdown), the licences and a few generated clips per experiment are turned into standalone
HTML pages here (audio embedded as base64 data URIs, so the report stays one file that plays offline).
How many clips per experiment: ``evaluation.report_clips`` (``--settings`` JSON from the rule, or
``--report-clips`` by hand).

The licence page tells two things apart: what each trained model was trained on (its training
split: the licence summary in its done.json and the ATTRIBUTION.md of the final checkpoint that
done.json names) and the licence audit of every track in the metadata (summary.tsv and the audit's
ATTRIBUTION.md: what the licence gate allows, a superset of every training split).
"""

from __future__ import annotations

import argparse
import base64
import html
from pathlib import Path

from ssmttm import io, logs, settings
from ssmttm.data.licenses import TRAIN_SCOPE
from ssmttm.report.options import ReportPagesSettings

STYLE = ("<style>body{font-family:sans-serif;margin:1.5em;max-width:70em}table{border-collapse:collapse}"
         "td,th{border:1px solid #bbb;padding:.25em .5em;font-size:90%}th{background:#eee}"
         ".clip{margin:1em 0}.prompt{font-style:italic;color:#333}</style>")


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{STYLE}"
            f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def markdown_html(text: str) -> str:
    """Markdown (with pipe tables) -> HTML fragment."""
    import markdown

    return markdown.markdown(text, extensions=["tables"])


def tsv_html(path: Path) -> str:
    import pandas as pd

    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    return df.to_html(index=False, escape=True, border=0)


def audio_page(exp: str, set_dir: Path, prompts: dict[str, str], n_clips: int) -> str:
    """The first ``n_clips`` clips of a generated set, playable, each under its prompt."""
    index = io.read_json(set_dir / "index.json")
    items = index.get("items", [])[:n_clips]
    parts = [f"<p>checkpoint <code>{html.escape(str(index.get('checkpoint')))}</code>, variant "
             f"{html.escape(str(index.get('variant')))}, kappa {index.get('kappa')}, "
             f"{index.get('seconds', 0):.1f} s per clip, CFG {index.get('cfg_scale')}, "
             f"temperature {index.get('temperature')}, top-k {index.get('top_k')}</p>"]
    for it in items:
        wav = set_dir / it["audio"]
        data = base64.b64encode(wav.read_bytes()).decode("ascii")
        text = prompts.get(str(it["prompt_id"]), it.get("prompt", ""))
        parts.append(f"<div class='clip'><div><b>{html.escape(str(it['prompt_id']))}</b>: "
                     f"<span class='prompt'>{html.escape(text)}</span></div>"
                     f"<audio controls preload='none' src='data:audio/wav;base64,{data}'></audio></div>")
    if not items:
        parts.append("<p>no clips were generated for this set (see its index.json rejected list)</p>")
    return _page(f"Generated audio: {exp}", "".join(parts))


def final_attribution(done_json: str | Path) -> tuple[dict, Path]:
    """(done.json object, ATTRIBUTION.md of the final checkpoint it names) of one training run.

    The checkpoint is looked up under the run folder that holds ``done_json`` (``<run>/ckpt/step_N``),
    so the page never reads outside the run the rule declared; done.json is written after that
    checkpoint is complete (ssmttm.train.loop), so the file exists once done.json does.
    """
    done_json = Path(done_json)
    done = io.read_json(done_json)
    final = Path(str(done.get("final_checkpoint") or ""))
    if final.parent.name != "ckpt" or not final.name.startswith("step_"):
        raise SystemExit(f"--run {done_json}: final_checkpoint {str(final)!r} is not <run>/ckpt/step_N")
    path = done_json.parent / "ckpt" / final.name / "ATTRIBUTION.md"
    if not path.is_file():
        raise SystemExit(f"--run {done_json}: its final checkpoint has no ATTRIBUTION.md ({path})")
    return done, path


def run_licences_html(done_json: str | Path, shown: dict[str, str] | None = None) -> str:
    """One trained model's section: counts per licence of its training split, then its tracks.

    ``shown`` (sha256 of an ATTRIBUTION.md -> anchor of the section listing it) keeps a track list
    that several runs share (same manifest: every seed and variant) to one copy on the page.
    """
    shown = {} if shown is None else shown
    done, attribution = final_attribution(done_json)
    kind = "refiner" if done.get("model") == "refiner" else "LM"
    title = (f"{html.escape(str(done.get('experiment')))} ({kind}, seed {html.escape(str(done.get('seed')))}, "
             f"checkpoint {html.escape(Path(str(done['final_checkpoint'])).name)})")
    lic = done.get("licences") or {}
    sha = io.sha256_file(attribution)
    anchor = shown.get(sha)
    parts = [f"<h3 id='split-{len(shown)}'>{title}</h3>" if anchor is None else f"<h3>{title}</h3>"]
    if lic.get("scope") == TRAIN_SCOPE:
        n = lic.get("n_tracks")
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v.get('tracks')}</td><td>{v.get('hours')}</td></tr>"
                       for k, v in (lic.get("per_licence_version") or lic.get("per_licence") or {}).items())
        parts.append(f"<p>Trained on the <b>{n} tracks</b> of its training split ({lic.get('hours')} h of whole "
                     f"source tracks); non-commercial {100 * float(lic.get('nc_fraction', 0)):.1f} %, "
                     f"no-derivatives {100 * float(lic.get('nd_fraction', 0)):.1f} % of these tracks.</p>"
                     f"<table><tr><th>licence</th><th>tracks</th><th>hours</th></tr>{rows}"
                     f"<tr><td>total</td><td>{n}</td><td>{lic.get('hours')}</td></tr></table>")
    else:  # a run from before per-split summaries: its done.json holds the audit's summary
        parts.append("<p>This run's done.json holds no training-split licence summary (it predates them); "
                     "its tracks are listed below from the checkpoint's ATTRIBUTION.md.</p>")
    if anchor is not None:
        parts.append(f"<p>Its tracks: the same list as <a href='#{anchor}'>above</a> "
                     f"(identical {html.escape(str(attribution))}).</p>")
    else:
        shown[sha] = f"split-{len(shown)}"
        parts.append(f"<details><summary>Its tracks, with attribution ({html.escape(str(attribution))})</summary>"
                     f"{markdown_html(attribution.read_text(encoding='utf-8'))}</details>")
    return "".join(parts)


def licences_page(runs: list[str | Path], audit_summary: str | Path, audit_attribution: str | Path) -> str:
    """licences.html: each trained model's training split, then the licence audit, labelled as such.

    ``audit_summary`` / ``audit_attribution``: the audit's summary.tsv and ATTRIBUTION.md."""
    body = ["<h2>Training data of each trained model</h2>",
            "<p>Per model: the tracks of its training split (the only tracks whose audio it was trained on), "
            "counted per licence, and their attribution.</p>"]
    shown: dict[str, str] = {}
    body += [run_licences_html(r, shown) for r in runs] or ["<p>No trained model was given to this page.</p>"]
    body += ["<h2>Licence audit of the metadata (not the training data)</h2>",
             "<p>Every track of the dataset's metadata, allowed or excluded by the licence gate. Models are "
             "trained on a subset of the allowed tracks (their training split, above).</p>",
             tsv_html(Path(audit_summary)),
             "<details><summary>Attribution of every track the licence gate allows (the audit's ATTRIBUTION.md, "
             "not a training set)</summary>"
             + markdown_html(Path(audit_attribution).read_text(encoding="utf-8")) + "</details>"]
    return _page("Licences: training data per model, and the licence audit", "".join(body))


def _pairs(values: list[str], flag: str) -> list[tuple[str, Path]]:
    out = []
    for v in values:
        name, sep, path = v.partition("=")
        if not sep:
            raise SystemExit(f"{flag} {v!r}: expected NAME=PATH")
        out.append((name, Path(path)))
    return out


def main(argv: list[str]) -> int | None:
    p = argparse.ArgumentParser(prog="ssmttm report-pages", description=__doc__.split("\n\n")[0])
    p.add_argument("--table", action="extend", nargs="+", default=[], help="NAME=table.md ...")
    p.add_argument("--audio", action="extend", nargs="+", default=[], help="EXPERIMENT=generated set folder ...")
    p.add_argument("--run", action="extend", nargs="+", default=[],
                   help="done.json of each trained model (its training split's licences are shown)")
    p.add_argument("--prompts", required=True, help="prompt-set JSON (texts shown under each clip)")
    p.add_argument("--licenses-summary", help="the licence audit's summary.tsv")
    p.add_argument("--licenses-attribution", help="the licence audit's ATTRIBUTION.md")
    p.add_argument("--licenses-dir", help="results/licenses: both of the above from there (when run by hand)")
    p.add_argument("--out-dir", required=True)
    settings.add_arguments(p, ReportPagesSettings)
    args = p.parse_args(argv)
    s = settings.from_args(p, ReportPagesSettings, args)
    log = logs.setup("ssmttm.report")
    out = Path(args.out_dir)
    for name, md in _pairs(args.table, "--table"):
        io.write_text(out / "tables" / f"{name}.html", _page(f"Table: {name}", markdown_html(md.read_text())))
    lic_dir = Path(args.licenses_dir) if args.licenses_dir else None
    summary = args.licenses_summary or (lic_dir and lic_dir / "summary.tsv")
    attribution = args.licenses_attribution or (lic_dir and lic_dir / "ATTRIBUTION.md")
    if not summary or not attribution:
        p.error("--licenses-summary and --licenses-attribution (or --licenses-dir) are required")
    io.write_text(out / "licences.html", licences_page(args.run, summary, attribution))
    prompts = {str(q["prompt_id"]): q.get("text", "") for q in io.read_json(args.prompts).get("prompts", [])}
    for exp, set_dir in _pairs(args.audio, "--audio"):
        io.write_text(out / "audio" / f"{exp}.html", audio_page(exp, set_dir, prompts, s.report_clips))
    log.info("report pages -> %s", out)
    return 0
