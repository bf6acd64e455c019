"""Model card written next to every checkpoint: ``card.json`` (machine-readable) and ``MODEL_CARD.md``.

Each checkpoint carries its config, parameter count, the sha256 of the data manifest it
was trained on, the licence summary of that data (a verbatim copy of
``results/licenses/licenses.json``) and its attribution file (``ATTRIBUTION.md``, copied into the
checkpoint folder by the trainer), the steps, tokens and FLOPs. The licence summary decides what
the weights may be used for: MTG-Jamendo is ~70 % non-commercial and ~34 % no-derivatives
(docs/reference.md §2), so the card states this up front whenever the included tracks carry NC/ND.
"""

from __future__ import annotations

import json
from typing import Any

CARD_VERSION = 1
_DESCRIPTION = {
    "lm": "Text-to-music language model over DAC 44.1 kHz codes (ssmttm; paper arXiv 2601.14786).",
    "refiner": "Diffusion refiner of the two-stage system: given DAC codebook-1 codes and the text, it generates "
               "the remaining codebooks' latents (ssmttm; paper arXiv 2601.14786).",
}


def card_dict(meta: dict[str, Any], lm_config: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    """The card.json object: ``{card_version, meta, lm_config, recipe}`` (meta = the checkpoint's
    meta.json: experiment, step, params, tokens, FLOPs, codec, text encoder, manifest hash, licences)."""
    return {"card_version": CARD_VERSION, "meta": meta, "lm_config": lm_config, "recipe": recipe}


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _licence_lines(lic: dict[str, Any] | None) -> list[str]:
    if not lic:
        return ["No licence summary was given to the trainer."]
    out = []
    nc, nd = float(lic.get("nc_fraction", 0.0)), float(lic.get("nd_fraction", 0.0))
    if nc > 0 or nd > 0:
        out.append(f"**Use restrictions.** {100 * nc:.1f} % of the training tracks are licensed non-commercial "
                   f"(CC BY-NC*) and {100 * nd:.1f} % no-derivatives (CC BY-*-ND). Whether a model trained on them "
                   "may be used commercially or shared is a legal question this card does not answer; by default "
                   "treat these weights as research-only.")
        out.append("")
    out.append(f"Licence allow-list: {', '.join(lic.get('allow', []))} (preset {lic.get('preset', '?')}); "
               f"{lic.get('n_included', '?')} of {lic.get('n_tracks', '?')} tracks included "
               f"({lic.get('hours_included', '?')} h).")
    per = lic.get("per_licence") or {}
    if per:
        out += ["", "| licence | tracks included | hours included | tracks excluded |", "|---|---|---|---|"]
        for code, row in per.items():
            out.append(f"| {code} | {row.get('tracks_included', '')} | {row.get('hours_included', '')} | "
                       f"{row.get('tracks_excluded', '')} |")
    out += ["", "Per-track attribution: `ATTRIBUTION.md` in this folder."]
    return out


def model_card_markdown(card: dict[str, Any]) -> str:
    """MODEL_CARD.md text for a :func:`card_dict` object."""
    m, cfg, r = card["meta"], card["lm_config"], card["recipe"]
    lines = [
        f"# {m.get('experiment', '?')} / seed {m.get('seed', '?')} / step {m.get('step', '?')}",
        "",
        _DESCRIPTION.get(m.get("model", "lm"), _DESCRIPTION["lm"]),
        "",
        "## Model",
        f"- variant: {m.get('variant')} (preset {m.get('preset')}), kappa = {m.get('kappa')} codebook(s)",
        f"- layers: {cfg.get('n_layers')}, d_model: {cfg.get('d_model')}, layout: {cfg.get('layout')}",
        f"- trainable parameters: {m.get('n_params'):,} (non-embedding {m.get('n_params_non_embedding'):,})",
        f"- weights: `model.safetensors`; config: `{m.get('model', 'lm')}_config.json`; metadata: `meta.json`; "
        "this card: `card.json`",
        "",
        "## Training",
        f"- steps: {m.get('step')}; tokens seen (audio positions): {m.get('tokens_seen'):,}",
        f"- FLOPs (6 N D, N non-embedding): {_fmt(m.get('flops_6nd'))}; measured forward FLOPs/position: "
        f"{_fmt(m.get('measured_forward_flops_per_token'))} (training total ~3x forward: "
        f"{_fmt(m.get('measured_flops_total'))})",
        f"- validation loss (cross-entropy, no smoothing): {_fmt(m.get('val_loss'))}",
        "- recipe: " + ", ".join(f"{k}={_fmt(v)}" for k, v in r.items()),
        "",
        "## Data",
        f"- manifest sha256: `{m.get('manifest_sha256')}`",
        f"- codec: {json.dumps(m.get('codec'))}",
        f"- text encoder: {json.dumps(m.get('text_encoder'))}",
        "",
        "## Licences",
        *_licence_lines(m.get("licences")),
        "",
    ]
    return "\n".join(lines)


def card_files(meta: dict, lm_config: dict, recipe: dict, attribution: bytes | None) -> dict[str, bytes]:
    """Files to place in the checkpoint folder: card.json, MODEL_CARD.md and ATTRIBUTION.md."""
    card = card_dict(meta, lm_config, recipe)
    files = {
        "card.json": (json.dumps(card, indent=2, sort_keys=True, default=str) + "\n").encode(),
        "MODEL_CARD.md": model_card_markdown(card).encode(),
    }
    if attribution is not None:
        files["ATTRIBUTION.md"] = attribution
    return files
