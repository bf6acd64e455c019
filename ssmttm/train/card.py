"""Model card written next to every checkpoint: ``card.json`` (machine-readable) and ``MODEL_CARD.md``.

Each checkpoint carries its config, parameter count, the sha256 of the data manifest it
was trained on, the licence summary of its TRAINING SPLIT (:func:`ssmttm.data.licenses.training_licences`:
tracks and hours per licence of exactly the tracks trained on, not the whole licence audit) and that
split's attribution file (``ATTRIBUTION.md``), the steps, tokens and FLOPs. The licence summary decides
what the weights may be used for: MTG-Jamendo is ~70 % non-commercial and ~34 % no-derivatives
(docs/reference.md §2.2), so the card states this up front whenever the training tracks carry NC/ND.
MODEL_CARD.md is a Hugging Face model card (YAML front matter from ``huggingface_hub.ModelCardData``),
so the folder can be uploaded as a Hub repository as it is.
"""

from __future__ import annotations

import json
from typing import Any

from ssmttm.data.licenses import TRAIN_SCOPE

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


def _licence_name(key: str) -> str:
    """``cc-by-nc-sa-3.0`` -> ``CC BY-NC-SA 3.0``; a bare code ``by-nc`` -> ``CC BY-NC``."""
    body = key[3:] if key.startswith("cc-") else key
    code, sep, ver = body.rpartition("-")
    if sep and ver[:1].isdigit():
        return f"CC {code.upper()} {ver}"
    return f"CC {body.upper()}"


def _licence_lines(lic: dict[str, Any] | None) -> list[str]:
    if not lic:
        return ["No licence summary was given to the trainer."]
    split = lic.get("scope") == TRAIN_SCOPE
    n = lic.get("n_tracks", "?")
    out = []
    nc, nd = float(lic.get("nc_fraction", 0.0)), float(lic.get("nd_fraction", 0.0))
    if nc > 0 or nd > 0:
        whose = f"the {n} tracks of the training split" if split else "the training tracks"
        out.append(f"**Use restrictions.** {100 * nc:.1f} % of {whose} are licensed non-commercial "
                   f"(CC BY-NC*) and {100 * nd:.1f} % no-derivatives (CC BY-*-ND). Whether a model trained on them "
                   "may be used commercially or shared is a legal question this card does not answer; by default "
                   "treat these weights as research-only.")
        out.append("")
    allow = ", ".join(lic.get("allow") or []) or "?"
    if not split:  # a checkpoint written before per-split summaries: it carries the whole audit's
        out.append("This checkpoint carries the summary of the whole licence audit, not of its own training "
                   f"split. Licence allow-list: {allow} (preset {lic.get('preset', '?')}); "
                   f"{lic.get('n_included', '?')} of {lic.get('n_tracks', '?')} audited tracks allowed "
                   f"({lic.get('hours_included', '?')} h).")
        per = lic.get("per_licence") or {}
        if per:
            out += ["", "| licence | tracks allowed | hours allowed | tracks excluded |", "|---|---|---|---|"]
            for code, row in per.items():
                out.append(f"| {code} | {row.get('tracks_included', '')} | {row.get('hours_included', '')} | "
                           f"{row.get('tracks_excluded', '')} |")
        out += ["", "Attribution: `ATTRIBUTION.md` in this folder."]
        return out
    out.append(f"Trained on the {n} tracks of its training split ({lic.get('hours', '?')} h of whole source "
               f"tracks); licence allow-list of the audit: {allow} (preset {lic.get('preset', '?')}).")
    per = lic.get("per_licence_version") or lic.get("per_licence") or {}
    if per:
        out += ["", "| licence | tracks | share of tracks | hours |", "|---|---|---|---|"]
        for key, row in per.items():
            share = f"{100 * row['tracks'] / n:.1f} %" if isinstance(n, int) and n else ""
            out.append(f"| {_licence_name(key)} | {row.get('tracks', '')} | {share} | {row.get('hours', '')} |")
        out.append(f"| total | {n} | 100 % | {lic.get('hours', '')} |")
    out += ["", f"Non-commercial (NC): {100 * nc:.1f} % of these tracks; no-derivatives (ND): {100 * nd:.1f} %.",
            "", f"Per-track attribution (the {n} tracks of the training split): `ATTRIBUTION.md` in this folder."]
    prov = [(k, lic.get(k)) for k in ("tracks_tsv_sha256", "track_ids_sha256", "attribution_sha256") if lic.get(k)]
    if prov:
        out += ["", *(f"- {k}: `{v}`" for k, v in prov)]
    return out


def _card_data(m: dict[str, Any]) -> Any:
    """Hugging Face YAML front matter. The weights' own licence is ``other``: what training on CC-licensed
    tracks means for them is not settled, so the card points at the training data's licences instead."""
    from huggingface_hub import ModelCardData

    lic = m.get("licences") or {}
    tags = ["ssmttm", "text-to-music", "music-generation", "mtg-jamendo", str(m.get("model", "lm"))]
    if m.get("variant"):
        tags.append(str(m["variant"]))
    extra: dict[str, Any] = {}
    if lic.get("scope") == TRAIN_SCOPE:
        extra["training_data_tracks"] = lic.get("n_tracks")
        extra["training_data_licences"] = {k: v.get("tracks") for k, v in
                                           (lic.get("per_licence_version") or lic.get("per_licence") or {}).items()}
    if float(lic.get("nc_fraction", 0.0)) > 0:
        tags.append("non-commercial-training-data")
    return ModelCardData(license="other", license_name="training-data-licences", license_link="ATTRIBUTION.md",
                         library_name="ssmttm", pipeline_tag="text-to-audio", tags=tags, **extra)


def model_card(card: dict[str, Any]) -> Any:
    """``huggingface_hub.ModelCard`` for a :func:`card_dict` object (YAML front matter + Markdown body)."""
    from huggingface_hub import ModelCard

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
    return ModelCard(f"---\n{_card_data(m).to_yaml()}\n---\n\n" + "\n".join(lines))


def model_card_markdown(card: dict[str, Any]) -> str:
    """MODEL_CARD.md text for a :func:`card_dict` object."""
    return str(model_card(card))


def card_files(meta: dict, lm_config: dict, recipe: dict, attribution: bytes | None) -> dict[str, bytes]:
    """Files to place in the checkpoint folder: card.json, MODEL_CARD.md and ATTRIBUTION.md.

    ``attribution``: the training split's ATTRIBUTION.md (the markdown of
    :func:`ssmttm.data.licenses.training_licences`, UTF-8), or None to write none."""
    card = card_dict(meta, lm_config, recipe)
    files = {
        "card.json": (json.dumps(card, indent=2, sort_keys=True, default=str) + "\n").encode(),
        "MODEL_CARD.md": model_card_markdown(card).encode(),
    }
    if attribution is not None:
        files["ATTRIBUTION.md"] = attribution
    return files
