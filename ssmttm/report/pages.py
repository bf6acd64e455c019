"""``report-pages``: self-contained HTML pages for ``snakemake --report``.

Snakemake's report shows images and HTML inline but offers other files only as downloads, so the
tables (Markdown), the licence audit (summary.tsv + ATTRIBUTION.md) and a few generated clips per
experiment are turned into standalone HTML pages here (audio embedded as base64 data URIs, so the
report stays one file that plays offline).
"""

from __future__ import annotations

import argparse
import base64
import html
from pathlib import Path

from ssmttm import io, logs

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
    p.add_argument("--table", action="append", default=[], help="NAME=table.md (repeat)")
    p.add_argument("--audio", action="append", default=[], help="EXPERIMENT=generated set folder (repeat)")
    p.add_argument("--prompts", required=True, help="prompt-set JSON (texts shown under each clip)")
    p.add_argument("--clips", type=int, default=3, help="clips per experiment")
    p.add_argument("--licences-dir", required=True, help="results/licenses (summary.tsv, ATTRIBUTION.md)")
    p.add_argument("--out-dir", required=True)
    args = p.parse_args(argv)
    log = logs.setup("ssmttm.report")
    out = Path(args.out_dir)
    for name, md in _pairs(args.table, "--table"):
        io.write_text(out / "tables" / f"{name}.html", _page(f"Table: {name}", markdown_html(md.read_text())))
    lic = Path(args.licences_dir)
    body = ("<h2>Licence summary</h2>" + tsv_html(lic / "summary.tsv")
            + "<h2>Attribution</h2>" + markdown_html((lic / "ATTRIBUTION.md").read_text()))
    io.write_text(out / "licences.html", _page("Licence audit of the training data", body))
    prompts = {str(q["prompt_id"]): q.get("text", "") for q in io.read_json(args.prompts).get("prompts", [])}
    for exp, set_dir in _pairs(args.audio, "--audio"):
        io.write_text(out / "audio" / f"{exp}.html", audio_page(exp, set_dir, prompts, args.clips))
    log.info("report pages -> %s", out)
    return 0
