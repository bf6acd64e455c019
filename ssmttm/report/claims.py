"""``python -m ssmttm claims``: recompute the paper's headline claims (docs/reference.md §4).

- "2 % of the data": training hours (the manifest's train split) / MusicGen's 20,000 h.
- "9 % of the FLOPs": the claims experiment's training FLOPs against MusicGen-small's, two ways, each
  with one convention on both sides:

  - 6·N·D. N = non-embedding trainable parameters: every trainable LM parameter except the token
    embedding tables (lookups, no matmul); the text projection and the output heads count, the
    frozen text encoder does not. D = audio positions seen.
  - 3 × counted forward FLOPs per position × D. The forward is counted by torch's FLOP counter with
    the attention kernels added (ssmttm.train.flops) on one sequence at the real lengths, built from
    shapes only (fake tensors), with T text states, T = the mean caption length of the text store.

Columns: "this run" (the run's logs: done.json, flops.csv at its last step), "as configured" (the
experiment's recipe from the config, which the rule passes as ``--settings``: N and the counted forward
of the configured model, D = steps × batch_size × grad_accum × world size × (max_frames + kappa)),
"MusicGen-small" (its published recipe, ssmttm.report.published, with N and the counted forward of a
model built by transformers from its released decoder config) and the paper's claim. No number of
the paper enters a computation; the paper's own formula and N convention are unknown.

Writes ``claims.csv``, ``claims.md`` and ``claims.tex`` to ``--out-dir``. By hand, the recipe keys are
flags (``--steps``, ``--batch-size``, ...); without ``--text`` the counted rows are left blank.
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

COLUMNS = ("claim", "quantity", "this_run", "as_configured", "musicgen_small", "paper_claim", "unit", "notes")


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


def text_shape(text_dir: str | Path) -> dict:
    """{"d_model", "tokens" (mean real tokens per caption, rounded, at least 1), "mean", "n_captions"} of a
    text store (ssmttm.text.store: ``meta.json`` and ``index.parquet``); the empty prompt is left out."""
    from ssmttm.text.store import EMPTY_ID, INDEX, META

    text_dir = Path(text_dir)
    try:
        meta = io.read_json(text_dir / META)
        index = pd.read_parquet(text_dir / INDEX, columns=["caption_id", "length"])
    except (OSError, ValueError, KeyError) as exc:
        raise ClaimsError(f"--text {text_dir}: cannot read the text store's {META} / {INDEX} ({exc})") from exc
    lengths = pd.to_numeric(index.loc[index["caption_id"] != EMPTY_ID, "length"], errors="coerce")
    if lengths.empty or lengths.isna().any() or "d_model" not in meta:
        raise ClaimsError(f"--text {text_dir}: {INDEX} holds no caption lengths, or {META} no d_model")
    mean = float(lengths.mean())
    return {"d_model": int(meta["d_model"]), "tokens": max(1, round(mean)), "mean": mean, "n_captions": len(lengths)}


def configured_cost(recipe: ClaimsSettings, text: dict | None) -> dict:
    """ssmttm.train.flops.lm_forward_cost of the configured model (``preset``, ``variant``, ``model``
    overrides, kappa codebooks, the text store's width) at max_frames + kappa positions; N only when the
    positions (max_frames null) or the text length (no ``--text``) are unknown."""
    from ssmttm.models.config import from_preset
    from ssmttm.train.flops import lm_forward_cost

    overrides = {**(recipe.model or {}), "n_codebooks": recipe.kappa}
    if text is not None:
        overrides["text_dim"] = text["d_model"]
    cfg = from_preset(recipe.preset, recipe.variant, **overrides)
    positions = None if recipe.max_frames is None else recipe.max_frames + recipe.kappa
    return lm_forward_cost(cfg, positions, None if text is None else text["tokens"])


_MUSICGEN_CACHE: dict = {}


def musicgen_small_cost(text_len: int | None, arch: dict | None = None, positions: int | None = None,
                        fake: bool = True) -> dict:
    """Parameters and counted forward FLOPs of a model shaped like MusicGen-small, built from ``arch``
    (default published.MUSICGEN_SMALL_DECODER) by transformers: ``MusicgenForCausalLM`` plus the trained
    Linear(text_dim -> hidden) that ``MusicgenForConditionalGeneration`` puts between T5 and the decoder.

    One sequence of ``positions`` (default the published 1500) x num_codebooks codes, cross-attending to
    ``text_len`` real text states; counted at the real length because self-attention grows with its
    square. Returns n_params, n_params_non_embedding (the codebook embedding tables left out; the
    positions are sinusoidal, not parameters) and, with ``text_len``, forward_flops, per_position,
    attention_share (the attention kernels' part of the forward) and per_op."""
    arch = dict(published.MUSICGEN_SMALL_DECODER if arch is None else arch)
    positions = int(published.MUSICGEN_SMALL["positions_per_sequence"] if positions is None else positions)
    key = (text_len, positions, tuple(sorted(arch.items())), fake)
    if key in _MUSICGEN_CACHE:
        return _MUSICGEN_CACHE[key]
    from ssmttm.compat import prepare_torchvision

    prepare_torchvision()  # transformers imports torchvision when installed (ssmttm/compat.py)
    import torch
    from torch import nn
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

    from ssmttm.train.flops import count_forward_flops, count_params

    cfg = MusicgenDecoderConfig(vocab_size=arch["vocab_size"], hidden_size=arch["hidden_size"],
                                num_hidden_layers=arch["num_hidden_layers"],
                                num_attention_heads=arch["num_attention_heads"], ffn_dim=arch["ffn_dim"],
                                num_codebooks=arch["num_codebooks"], max_position_embeddings=max(2048, positions))

    class MusicgenSmall(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc_to_dec_proj = nn.Linear(arch["text_dim"], arch["hidden_size"])
            self.decoder = MusicgenForCausalLM(cfg)

        def forward(self, codes, text):  # codes [B * K, S]; text [B, L, text_dim]
            return self.decoder(input_ids=codes, encoder_hidden_states=self.enc_to_dec_proj(text)).logits

    def run(model) -> None:
        if text_len is not None:
            model(torch.zeros(arch["num_codebooks"], positions, dtype=torch.long),
                  torch.zeros(1, int(text_len), arch["text_dim"]))

    flops, model, per_op = count_forward_flops(lambda: MusicgenSmall().eval(), run, fake=fake)
    n, n_non_emb = count_params(model, model.decoder.model.decoder.embed_tokens)
    out = {"n_params": n, "n_params_non_embedding": n_non_emb, "positions": positions}
    if text_len is not None:
        attn = sum(v for k, v in per_op.items() if "scaled_dot_product" in k)
        out.update(forward_flops=flops, text_len=int(text_len), per_position=flops / positions,
                   attention_share=attn / flops if attn and flops else None, per_op=per_op)
    _MUSICGEN_CACHE[key] = out
    return out


def _pct(a, b):
    return None if a is None or b in (None, 0) else 100.0 * float(a) / float(b)


def _times(*factors):
    """The product, or None if a factor is unknown."""
    out = 1.0
    for f in factors:
        if f is None:
            return None
        out *= float(f)
    return out


def _ratio(a, b):
    return None if a is None or b in (None, 0) else float(a) / float(b)


def compute_claims(recipe: ClaimsSettings, hours: dict, runs: dict[str, dict], experiment: str, ours: dict,
                   musicgen: dict, text: dict | None = None) -> list[dict]:
    """The claim rows (COLUMNS). ``recipe``: the experiment as configured; ``runs``: name -> :func:`read_run`
    output, ``runs[experiment]`` being the claim's run (other runs add their two ratios); ``ours``:
    :func:`configured_cost`; ``musicgen``: :func:`musicgen_small_cost`; ``text``: :func:`text_shape` or None."""
    r, run, pub = recipe, runs[experiment], published.MUSICGEN_SMALL
    world = int(run.get("world_size") or 1)
    # the delay pattern adds kappa steps (max_frames 2584 -> 2585 at kappa 1); max_frames null (whole
    # clips): no fixed length
    positions = None if r.max_frames is None else r.max_frames + r.kappa
    per_step_cfg = _times(r.batch_size, r.grad_accum, world, positions)
    d_cfg = _times(r.steps, per_step_cfg)
    per_step_mg = pub["batch"] * pub["positions_per_sequence"]
    d_mg = pub["steps"] * per_step_mg
    n_run = run.get("n_params_non_embedding")
    n_cfg, n_mg = ours["n_params_non_embedding"], musicgen["n_params_non_embedding"]
    f6_cfg, f6_mg = _times(6, n_cfg, d_cfg), _times(6, n_mg, d_mg)
    pp_run = run.get("measured_forward_flops_per_token")
    pp_cfg, pp_mg = ours.get("per_position"), musicgen.get("per_position")
    fc_cfg, fc_mg = _times(3, pp_cfg, d_cfg), _times(3, pp_mg, d_mg)
    step = run.get("step")
    per_step_run = _ratio(run.get("tokens_seen"), step) if step else None
    mg_hours = pub["hours"]
    claim_data, claim_flops = published.PAPER_CLAIMS["data_pct"], published.PAPER_CLAIMS["flops_pct"]
    frames = ("whole clips (max_frames null: no fixed length)" if positions is None
              else f"({r.max_frames} + kappa {r.kappa})")
    counted_how = ("no --text: not counted" if text is None else
                   f"counted on one sequence with {text['tokens']} text states (the mean caption length of the text "
                   f"store, {text['mean']:.1f} tokens over {text['n_captions']} captions)")
    share = musicgen.get("attention_share")
    rows = [
        dict(claim="data", quantity="training audio", this_run=hours["train"], as_configured=hours["train"],
             musicgen_small=mg_hours, unit="h",
             notes=f"manifest train split: {hours['train_clips']} clips (all splits {hours['all']:.4f} h); the data "
                   "does not depend on the run"),
        dict(claim="data", quantity="% of MusicGen-small's training audio", this_run=_pct(hours["train"], mg_hours),
             as_configured=_pct(hours["train"], mg_hours), paper_claim=claim_data, unit="%"),
        dict(claim="flops", quantity="optimizer steps", this_run=step, as_configured=r.steps,
             musicgen_small=pub["steps"], unit="steps"),
        dict(claim="flops", quantity="positions per optimizer step", this_run=per_step_run,
             as_configured=per_step_cfg, musicgen_small=per_step_mg, unit="positions",
             notes=f"as configured: {r.batch_size} x {r.grad_accum} accumulation x world size {world} x {frames} "
                   f"positions; MusicGen-small: {pub['batch']} x {pub['positions_per_sequence']} (30 s at 50 Hz); "
                   "this run: positions seen / steps"),
        dict(claim="flops", quantity="positions seen D", this_run=run.get("tokens_seen"), as_configured=d_cfg,
             musicgen_small=d_mg, unit="positions"),
        dict(claim="flops", quantity="parameters N (non-embedding, trainable)", this_run=n_run, as_configured=n_cfg,
             musicgen_small=n_mg, unit="params",
             notes=f"as configured: {r.preset}/{r.variant}, kappa {r.kappa}, built from shapes; all trainable "
                   f"parameters: this run {fmt(run.get('n_params'), 'params')}, as configured "
                   f"{fmt(ours['n_params'], 'params')}, MusicGen-small {fmt(musicgen['n_params'], 'params')}"),
        dict(claim="flops", quantity="training FLOPs 6·N·D", this_run=run.get("flops_6nd"), as_configured=f6_cfg,
             musicgen_small=f6_mg, unit="FLOPs"),
        dict(claim="flops", quantity="% of MusicGen-small's FLOPs (6·N·D)",
             this_run=_pct(run.get("flops_6nd"), f6_mg), as_configured=_pct(f6_cfg, f6_mg), paper_claim=claim_flops,
             unit="%"),
        dict(claim="flops", quantity="forward FLOPs per position (counted)", this_run=pp_run, as_configured=pp_cfg,
             musicgen_small=pp_mg, unit="FLOPs",
             notes=f"as configured and MusicGen-small: {counted_how}, at {positions} and "
                   f"{musicgen['positions']} positions; this run: measured by the trainer on a fixed two-clip "
                   "batch (flops.csv)"
                   + ("" if share is None else f"; attention is {100 * share:.1f} % of MusicGen-small's count")),
        dict(claim="flops", quantity="counted forward per position / 2N", this_run=_ratio(pp_run, _times(2, n_run)),
             as_configured=_ratio(pp_cfg, _times(2, n_cfg)), musicgen_small=_ratio(pp_mg, _times(2, n_mg)), unit="x",
             notes="how far 6·N·D is from the counted FLOPs: 1 when each parameter is one multiply-add per position"),
        dict(claim="flops", quantity="training FLOPs 3 x counted forward x D",
             this_run=run.get("measured_flops_total"), as_configured=fc_cfg, musicgen_small=fc_mg, unit="FLOPs",
             notes="backward counted as 2 x forward"),
        dict(claim="flops", quantity="% of MusicGen-small's FLOPs (counted)",
             this_run=_pct(run.get("measured_flops_total"), fc_mg), as_configured=_pct(fc_cfg, fc_mg),
             paper_claim=claim_flops, unit="%"),
    ]
    for name, other in runs.items():
        if name == experiment:
            continue
        note = f"step {other.get('step')}, {other.get('preset')}/{other.get('variant')} kappa {other.get('kappa')}"
        rows.append(dict(claim="flops", quantity=f"% of MusicGen-small's FLOPs (6·N·D), run {name}",
                         this_run=_pct(other.get("flops_6nd"), f6_mg), unit="%", notes=note))
        rows.append(dict(claim="flops", quantity=f"% of MusicGen-small's FLOPs (counted), run {name}",
                         this_run=_pct(other.get("measured_flops_total"), fc_mg), unit="%", notes=note))
    return [{c: row.get(c) for c in COLUMNS} for row in rows]


def conventions(musicgen: dict) -> list[str]:
    """The notes that say how every FLOPs number is counted (the table's preamble)."""
    arch = published.MUSICGEN_SMALL_DECODER
    pub = published.MUSICGEN_SMALL
    return [
        "N, on both sides: trainable parameters minus the token embedding tables (ours: kappa x 1025 x d_model; "
        f"MusicGen-small: {arch['num_codebooks']} x {arch['vocab_size'] + 1} x {arch['hidden_size']}); the text "
        "projection and the output heads count, the frozen text encoders (FLAN-T5-base, T5-base) do not.",
        "Counted forward: torch.utils.flop_counter over one forward pass built from shapes (ssmttm.train.flops), "
        "attention kernels included at 4 x B x H x Lq x Lk x d over the full square (causal masking not "
        "subtracted); per position = forward FLOPs / audio positions, the text prefix included.",
        f"MusicGen-small: {published.SRC_MUSICGEN_RECIPE}: {pub['steps']:,} steps x {pub['batch']} x "
        f"{pub['positions_per_sequence']} positions, {pub['hours']:,.0f} h. Its N and forward: transformers' "
        f"MusicgenForCausalLM with the released decoder config (hidden {arch['hidden_size']}, "
        f"{arch['num_hidden_layers']} layers, {arch['num_attention_heads']} heads, FFN {arch['ffn_dim']}, "
        f"{arch['num_codebooks']} codebooks x {arch['vocab_size']}) plus the {arch['text_dim']} -> "
        f"{arch['hidden_size']} text projection, {musicgen['n_params_non_embedding'] / 1e6:.2f}M non-embedding "
        f"parameters ({published.SRC_MUSICGEN_ARCH}).",
    ]


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
    if unit == "params":
        return f"{v / 1e6:,.2f}M" if v >= 1e6 else f"{int(v):,}"
    return f"{v:.3g}"


def render(rows: list[dict], title: str, preamble: list[str]) -> tuple[str, str]:
    """(Markdown, LaTeX booktabs) of the claim rows."""
    header = ["Quantity", "This run", "As configured", "MusicGen-small", "Paper claim", "Unit"]
    cells = [[r["quantity"], fmt(r["this_run"], r["unit"]), fmt(r["as_configured"], r["unit"]),
              fmt(r["musicgen_small"], r["unit"]), fmt(r["paper_claim"], r["unit"]), r["unit"]] for r in rows]
    notes = preamble + [f"{r['quantity']}: {r['notes']}" for r in rows if r["notes"]]
    md = [f"# {title}", "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * 4 + "---|"]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    md += [""] + [f"- {n}" for n in notes]
    # the quantity column wraps (p column, ragged right) instead of widening the table past the page
    colspec = r">{\raggedright\arraybackslash}p{0.34\linewidth}rrrrl"
    tex = latex_table(title, "claims", header, cells, notes, colspec, "claims")
    return "\n".join(md) + "\n", tex


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ssmttm claims", description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", required=True, type=Path, help="results/data/manifest.parquet")
    p.add_argument("--runs", nargs="+", required=True, metavar="NAME=RUN_DIR", help="training run folders")
    p.add_argument("--experiment", required=True, help="the run the claims are computed for (a --runs NAME); the "
                   "settings below are its recipe as configured")
    p.add_argument("--text", type=Path, help="the text store the run trained on (results/text/<encoder>: its "
                   "meta.json and index.parquet): the text width and the caption length of the counted forwards; "
                   "without it the counted rows are left blank")
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
    try:
        text = None if a.text is None else text_shape(a.text)
        ours = configured_cost(recipe, text)
        musicgen = musicgen_small_cost(None if text is None else text["tokens"])
    except (ClaimsError, ImportError, RuntimeError, ValueError) as exc:  # a model that cannot be built or counted
        log_.error("%s", exc)
        return 1
    rows = compute_claims(recipe, hours, runs, a.experiment, ours, musicgen, text)
    run = runs[a.experiment]
    preamble = [f"Run {a.experiment}: {run.get('preset')}/{run.get('variant')} kappa {run.get('kappa')}, final step "
                f"{run.get('step')} ({run_dirs[a.experiment]}).",
                f"Paper claims: {published.PAPER_CLAIMS['data_pct']:g} % of the data, "
                f"{published.PAPER_CLAIMS['flops_pct']:g} % of MusicGen-small's FLOPs (docs/reference.md §4); the "
                "paper's own FLOPs formula and N convention are unknown.",
                *conventions(musicgen)]
    md, tex = render(rows, "Headline claims recomputed", preamble)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    io.write_table(a.out_dir / "claims.csv", pd.DataFrame(rows, columns=list(COLUMNS)))
    io.write_text(a.out_dir / "claims.md", md)
    io.write_text(a.out_dir / "claims.tex", tex)
    for r in rows:
        if r["unit"] == "%":
            log_.info("%s: this run %s, as configured %s, paper claim %s", r["quantity"], fmt(r["this_run"], "%"),
                      fmt(r["as_configured"], "%"), fmt(r["paper_claim"], "%"))
    return 0
