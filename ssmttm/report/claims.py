"""``python -m ssmttm claims``: recompute the paper's headline claims (docs/reference.md §4).

- "2 % of the data": training hours (the manifest's train split) / 20,000 h (MusicGen's training
  set); the paper's own numbers give 457 / 20,000 = 2.285 %.
- "9 % of the FLOPs": our run's logged 6ND (``flops.csv`` at its final step; N = non-embedding
  trainable parameters, D = audio positions seen, see ssmttm.train.flops) against MusicGen-small's
  6 x 361M x (1M steps x 192 x 1500 positions) ~ 6.2e20; also with the run's measured FLOPs
  (3 x measured forward FLOPs per position x D). The paper's own formula is unknown.

Each quantity is given for "this run" (what the logs say: a demo run is small), "as configured"
(the experiment's full recipe from the config: steps x batch x grad_accum x (max_frames + kappa)
positions, x the run's world size), the paper's recipe recomputed from its stated numbers, and the
paper's claim. Writes ``claims.csv``, ``claims.md`` and ``claims.tex`` to ``--out-dir``.

"As configured" reads the experiment's recipe (:class:`ssmttm.report.options.ClaimsSettings`: the config's
``train`` section with the experiment's ``train:`` overrides, then its own keys), which the rule passes as
``--settings`` JSON; by hand they are flags (``--steps``, ``--batch-size``, ...).
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import pandas as pd

from ssmttm import io, logs, settings
from ssmttm.errors import SsmttmError
from ssmttm.report import published
from ssmttm.report.options import ClaimsSettings
from ssmttm.report.tables import latex_table

log = logging.getLogger("ssmttm.report.claims")

COLUMNS = ("claim", "quantity", "this_run", "as_configured", "paper_recipe", "paper_claim", "unit", "reference",
           "notes")


class ClaimsError(SsmttmError, ValueError):
    """An input the claims cannot be computed from; the message names the file or key."""


def training_hours(manifest: str | Path) -> dict[str, float]:
    """{"train": hours, "all": hours, "train_clips": n} from the manifest's ``split`` and ``seconds``."""
    df = pd.read_parquet(manifest, columns=["split", "seconds"])
    sec = pd.to_numeric(df["seconds"], errors="coerce")
    if sec.isna().any():
        raise ClaimsError(f"{manifest}: {int(sec.isna().sum())} clip(s) without a numeric 'seconds'")
    train = df["split"] == "train"
    return {"train": float(sec[train].sum()) / 3600.0, "all": float(sec.sum()) / 3600.0,
            "train_clips": int(train.sum())}


def read_run(run_dir: str | Path) -> dict:
    """The run's final numbers: step, tokens_seen, flops_6nd, measured_* (flops.csv, last step),
    n_params / n_params_non_embedding, preset, variant, kappa, world_size (done.json: the rule's input,
    written last by the training job)."""
    run_dir = Path(run_dir)
    out: dict = {}
    done = run_dir / "done.json"
    try:
        meta = io.read_json(done)
    except (OSError, ValueError) as exc:
        raise ClaimsError(f"{done}: cannot read the finished run's record ({exc})") from exc
    for k in ("step", "tokens_seen", "flops_6nd", "measured_forward_flops_per_token", "measured_flops_total",
              "n_params", "n_params_non_embedding", "preset", "variant", "kappa", "world_size"):
        out[k] = meta.get(k)
    fl = run_dir / "flops.csv"
    if fl.is_file() and fl.stat().st_size:
        df = pd.read_csv(fl)
        if len(df):
            last = df.sort_values("step").iloc[-1]
            for k in ("step", "tokens_seen", "flops_6nd", "measured_forward_flops_per_token", "measured_flops_total"):
                if k in df.columns and pd.notna(last[k]):
                    out[k] = float(last[k]) if k != "step" else int(last[k])
    if out["flops_6nd"] is None:
        raise ClaimsError(f"{run_dir}: no flops.csv rows and no done.json / checkpoint meta.json with flops_6nd")
    return out


def configured_params(preset: str, variant: str, kappa: int) -> int | None:
    """Non-embedding trainable parameters of the configured model, built on the meta device."""
    try:
        import dataclasses

        import torch

        from ssmttm.models.config import from_preset
        from ssmttm.models.lm import LM
        from ssmttm.train.flops import count_params

        cfg = dataclasses.replace(from_preset(preset, variant, n_codebooks=int(kappa)), mamba_backend="torch")
        with torch.device("meta"):
            return count_params(LM(cfg))[1]
    except Exception as exc:  # noqa: BLE001 - a model that cannot be built leaves the cell blank, named
        log.warning("could not count parameters of %s/%s kappa %s: %s", preset, variant, kappa, exc)
        return None


def _pct(a, b):
    return None if a is None or b in (None, 0) else 100.0 * float(a) / float(b)


def compute_claims(recipe: ClaimsSettings, hours: dict, runs: dict[str, dict], experiment: str) -> list[dict]:
    """The claim rows (COLUMNS). ``recipe``: the experiment as configured; ``runs``: name -> :func:`read_run`
    output; ``runs[experiment]`` is the claim's run (other runs add one 6ND row each)."""
    r = recipe
    run = runs[experiment]
    mg = published.musicgen_small_flops()
    mg_hours = published.MUSICGEN_SMALL["hours"]
    rec = published.PAPER_RECIPE
    msm = published.MUSICGEN_SMALL
    kappa = r.kappa
    world = int(run.get("world_size") or 1)
    # the delay pattern adds kappa steps (2584 + 4 = 2588); max_frames null (whole clips): no fixed length
    positions = None if r.max_frames is None else r.max_frames + kappa
    d_cfg = None if positions is None else r.steps * r.batch_size * r.grad_accum * world * positions
    same_model = (run.get("preset"), run.get("variant"), run.get("kappa")) == (r.preset, r.variant, kappa)
    n_cfg = run.get("n_params_non_embedding") if same_model else None
    if n_cfg is None:
        n_cfg = configured_params(r.preset, r.variant, kappa)
    f_cfg = None if n_cfg is None or d_cfg is None else 6.0 * n_cfg * d_cfg
    per_pos = run.get("measured_forward_flops_per_token")
    m_cfg = 3.0 * per_pos * d_cfg if same_model and per_pos is not None and d_cfg is not None else None
    f_rec = published.paper_recipe_flops()
    d_rec = rec["steps"] * rec["batch"] * rec["positions_per_sequence"]
    data_note = (f"manifest train split: {hours['train_clips']} clips, {hours['train']:.4f} h "
                 f"(all splits {hours['all']:.4f} h); the data does not depend on the run")
    frames = "whole clips (max_frames null: positions not fixed)" if positions is None else f"{r.max_frames}"
    cfg_note = (f"as configured: {r.steps} steps x {r.batch_size} x {r.grad_accum} accum x world size "
                f"{world} x ({frames} + kappa {kappa}) positions, {r.preset}/{r.variant}")
    rows = [
        dict(claim="data", quantity="training audio", this_run=hours["train"], as_configured=hours["train"],
             paper_recipe=rec["hours"], unit="h", reference=f"{mg_hours:,.0f} h", notes=data_note),
        dict(claim="data", quantity="% of data (vs MusicGen's 20,000 h)", this_run=_pct(hours["train"], mg_hours),
             as_configured=_pct(hours["train"], mg_hours), paper_recipe=_pct(rec["hours"], mg_hours),
             paper_claim=published.PAPER_CLAIMS["data_pct"], unit="%", reference=f"{mg_hours:,.0f} h",
             notes="paper recipe = 457 h / 20,000 h (docs/reference.md §4)"),
        dict(claim="flops", quantity="optimizer steps", this_run=run.get("step"), as_configured=r.steps,
             paper_recipe=rec["steps"], unit="steps", reference=f"{msm['steps']:,}", notes=cfg_note),
        dict(claim="flops", quantity="positions seen D", this_run=run.get("tokens_seen"), as_configured=d_cfg,
             paper_recipe=d_rec, unit="positions",
             reference=f"{msm['steps'] * msm['batch'] * msm['positions_per_sequence']:.3g}",
             notes="paper recipe = 100k x 128 x 2588; MusicGen-small = 1M x 192 x 1500"),
        dict(claim="flops", quantity="parameters N (non-embedding)", this_run=run.get("n_params_non_embedding"),
             as_configured=n_cfg, paper_recipe=rec["params"], unit="params",
             reference=f"{msm['params']:.3g}",
             notes="paper recipe uses the stated 281.04M (all trainable parameters, docs/reference.md §4)"),
        dict(claim="flops", quantity="training FLOPs (6ND)", this_run=run.get("flops_6nd"), as_configured=f_cfg,
             paper_recipe=f_rec, unit="FLOPs", reference=f"{mg:.3g}", notes="6 x N x D"),
        dict(claim="flops", quantity="% of MusicGen-small FLOPs (6ND)", this_run=_pct(run.get("flops_6nd"), mg),
             as_configured=_pct(f_cfg, mg), paper_recipe=_pct(f_rec, mg),
             paper_claim=published.PAPER_CLAIMS["flops_pct"],
             unit="%", reference=f"{mg:.3g} FLOPs", notes="MusicGen-small 6ND = 6 x 361M x (1M x 192 x 1500)"),
        dict(claim="flops", quantity="% of MusicGen-small FLOPs (measured)",
             this_run=_pct(run.get("measured_flops_total"), mg),
             as_configured=_pct(m_cfg, mg), paper_claim=published.PAPER_CLAIMS["flops_pct"], unit="%",
             reference=f"{mg:.3g} FLOPs (6ND)",
             notes="ours: 3 x measured forward FLOPs per position x D (torch FlopCounterMode); MusicGen-small has "
                   "no published measured count, so its 6ND is the denominator"
                   + ("" if same_model else "; as configured left blank: the run's model differs from the config's")),
    ]
    for name, other in runs.items():
        if name != experiment:
            rows.append(dict(claim="flops", quantity=f"% of MusicGen-small FLOPs (6ND), run {name}",
                             this_run=_pct(other.get("flops_6nd"), mg), unit="%", reference=f"{mg:.3g} FLOPs",
                             notes=f"step {other.get('step')}, {other.get('preset')}/{other.get('variant')}"))
    return [{c: r.get(c) for c in COLUMNS} for r in rows]


def fmt(v, unit: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    v = float(v)
    if unit == "%":
        return f"{v:.4g}"
    if unit == "h":
        return f"{v:,.2f}"
    if unit == "steps":
        return f"{int(v):,}"
    return f"{v:.3g}"


def render(rows: list[dict], title: str, preamble: list[str]) -> tuple[str, str]:
    """(Markdown, LaTeX booktabs) of the claim rows."""
    header = ["Quantity", "This run", "As configured", "Paper recipe (recomputed)", "Paper claim", "Unit", "Reference"]
    cells = [[r["quantity"], fmt(r["this_run"], r["unit"]), fmt(r["as_configured"], r["unit"]),
              fmt(r["paper_recipe"], r["unit"]), fmt(r["paper_claim"], r["unit"]), r["unit"], r["reference"] or ""]
             for r in rows]
    notes = preamble + [f"{r['quantity']}: {r['notes']}" for r in rows if r["notes"]]
    md = [f"# {title}", "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * 4 + "---|---|"]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    md += [""] + [f"- {n}" for n in notes]
    # the quantity column wraps (p column, ragged right) instead of widening the table past the page
    colspec = r">{\raggedright\arraybackslash}p{0.3\linewidth}rrrrll"
    tex = latex_table(title, "claims", header, cells, notes, colspec, "claims")
    return "\n".join(md) + "\n", tex


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ssmttm claims", description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", required=True, type=Path, help="results/data/manifest.parquet")
    p.add_argument("--runs", nargs="+", required=True, metavar="NAME=RUN_DIR", help="training run folders")
    p.add_argument("--experiment", required=True, help="the run the claims are computed for (a --runs NAME); the "
                   "settings below are its recipe as configured")
    p.add_argument("--out-dir", required=True, type=Path, help="e.g. results/tables")
    settings.add_arguments(p, ClaimsSettings)
    a = p.parse_args(argv)
    recipe = settings.from_args(p, ClaimsSettings, a)
    log_ = logs.setup("ssmttm.report")
    run_dirs = {}
    for item in a.runs:
        name, sep, path = item.partition("=")
        if not sep or not name:
            p.error(f"--runs {item!r}: expected NAME=RUN_DIR")
        run_dirs[name] = Path(path)
    if a.experiment not in run_dirs:  # allow NAME = <experiment>_seed<S>: take the lowest seed
        seeded = sorted(n for n in run_dirs if n.startswith(f"{a.experiment}_seed"))
        if not seeded:
            p.error(f"--experiment {a.experiment!r}: no --runs entry named {a.experiment} or {a.experiment}_seed<S>")
        run_dirs[a.experiment] = run_dirs.pop(seeded[0])
    runs = {}
    for name, d in run_dirs.items():
        try:
            runs[name] = read_run(d)
        except (ClaimsError, OSError, ValueError, KeyError) as exc:
            if name == a.experiment:
                log_.error("%s", exc)
                return 1
            log_.warning("skipped run %s: %s", name, exc)
    try:
        hours = training_hours(a.manifest)
    except (ClaimsError, OSError, ValueError, KeyError) as exc:
        log_.error("--manifest %s: %s", a.manifest, exc)
        return 1
    rows = compute_claims(recipe, hours, runs, a.experiment)
    run = runs[a.experiment]
    preamble = [f"Run {a.experiment}: {run.get('preset')}/{run.get('variant')} kappa {run.get('kappa')}, final step "
                f"{run.get('step')} ({run_dirs[a.experiment]}).",
                "Paper claims: 2 % of the data, 9 % of MusicGen-small's FLOPs (docs/reference.md §4); the paper's "
                "own FLOPs formula is unknown."]
    md, tex = render(rows, "Headline claims recomputed", preamble)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    io.write_table(a.out_dir / "claims.csv", pd.DataFrame(rows, columns=list(COLUMNS)))
    io.write_text(a.out_dir / "claims.md", md)
    io.write_text(a.out_dir / "claims.tex", tex)
    for r in rows:
        if r["unit"] == "%":
            log_.info("%s: this run %s, as configured %s, paper %s", r["quantity"], fmt(r["this_run"], "%"),
                      fmt(r["as_configured"], "%"), fmt(r["paper_claim"], "%"))
    return 0
