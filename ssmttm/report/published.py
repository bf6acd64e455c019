"""Published reference values, as data, each with its source (docs/reference.md §3 and §4).

Nothing here is measured by this project: these are the numbers our tables and plots are compared
with. Every row has the score-row keys of the evaluation contract (docs/ARCHITECTURE.md, score
JSON), ``system_kind = "published"`` and a ``source``.

Metric names. Ours are ``fad_vggish``, ``kl_passt``, ``clap_score`` and ``fd_<embedder>``. The
published names map onto them as follows:

- MusicGen's "FAD" is VGGish FAD -> ``fad_vggish``; "KL" is PaSST KL -> ``kl_passt``; "CLAP" ->
  ``clap_score``.
- The paper's curves say "FD" with values 70-165, the scale of OpenL3-based FD
  (stable-audio-metrics, 48 kHz), not VGGish FAD (docs/reference.md §3). They keep their own name
  ``fd_paper`` (label "FD (paper, likely OpenL3)"): they are drawn beside our ``fd_*`` metrics but
  never merged into one column with them.
"""

from __future__ import annotations

from ssmttm.eval.evaluate import ROW_KEYS  # noqa: F401  (one definition of a score row's columns)

REFERENCE = "docs/reference.md"
PAPER = "Lee et al., Training-Efficient Text-to-Music Generation with State-Space Modeling, arXiv 2601.14786"
SRC_CURVES = f"{PAPER}, two-stage training curves (figure, read off, {REFERENCE} §3)"
SRC_MUSICGEN_PAPER = (f"Copet et al., Simple and Controllable Music Generation (MusicGen), MusicCaps, small model "
                      f"({REFERENCE} §3)")
SRC_MUSICGEN_RELEASED = f"released facebook/musicgen-small checkpoint re-evaluated on MusicCaps ({REFERENCE} §3)"

# Our metric name -> what a published value of it is called in tables and plots.
PUBLISHED_LABELS = {
    "fd_paper": "FD (paper, likely OpenL3)",
    "fad_vggish": "FAD (VGGish)",
    "kl_passt": "KL (PaSST)",
    "clap_score": "CLAP score",
}
# fd_paper is compared with the first of these that a study has (OpenL3 first: the likely match).
FD_PAPER_COMPARE = ("fd_openl3", "fd_clap", "fd_vggish", "fd_passt", "fd_logmel")
LOWER_IS_BETTER = {"fd_paper": True, "fad_vggish": True, "kl_passt": True, "clap_score": False}

# Read-off precision of the paper's figure (docs/reference.md §3): +-1 FD, +-0.03 KL, +-0.003 CLAP.
READOFF_ERROR = {"fd_paper": 1.0, "kl_passt": 0.03, "clap_score": 0.003}

# docs/reference.md §3, two-stage curves (kappa = 1), read off the paper's figure.
# step -> (FD, KL, CLAP); Transformer also at 400k steps.
PAPER_CURVES = {
    "prefix-simba": {
        5_000: (164, 5.17, 0.060), 10_000: (128, 1.95, 0.106), 20_000: (92, 1.55, 0.197),
        40_000: (90, 1.65, 0.241), 100_000: (75, 1.29, 0.237),
    },
    "cross-transformer": {
        5_000: (135, 3.51, 0.082), 10_000: (134, 4.06, 0.069), 20_000: (100, 3.12, 0.116),
        40_000: (87, 2.12, 0.161), 100_000: (84, 1.53, 0.187), 400_000: (72, 1.71, 0.213),
    },
}
CURVE_METRICS = ("fd_paper", "kl_passt", "clap_score")

# Trainable LM parameters the paper states (docs/reference.md §1, kappa 1, paper preset).
PAPER_PARAMS = {"prefix-simba": 281.04e6, "cross-transformer": 305.08e6}
# Embedding tables (kappa x 1025 x d_model, lookups, no matmul) are left out of N in 6ND, as in
# ssmttm.train.flops; with kappa 1 and d_model 1024 that is 1025 x 1024 parameters.
PAPER_EMBEDDING_PARAMS = 1025 * 1024
# The paper's recipe (docs/reference.md §1 and §4): 128 sequences of 2588 positions per step; only
# the curve points' FLOPs axis uses it (the claims compute ours from config.yaml).
PAPER_RECIPE = {"batch": 128, "positions_per_sequence": 2588}

# MusicGen-small training as published (docs/reference.md §4): 1M steps, batch 192, 30 s crops of
# EnCodec 32 kHz at 50 Hz = 1500 positions, trained on 20k hours. Its N is not published: the claims
# (ssmttm.report.claims) count it on a model built from MUSICGEN_SMALL_DECODER, with our convention.
SRC_MUSICGEN_RECIPE = ("Copet et al. 2023, Simple and Controllable Music Generation (MusicGen), arXiv 2306.05284: "
                       f"training setup of the 300M 'small' model ({REFERENCE} §4)")
MUSICGEN_SMALL = {"steps": 1_000_000, "batch": 192, "positions_per_sequence": 1500, "hours": 20_000.0}
# The released facebook/musicgen-small decoder (docs/reference.md §4): transformers'
# MusicgenDecoderConfig defaults (documented as musicgen-small's) and audiocraft's small scale
# (config/model/lm/model_scale/small.yaml: dim 1024, 16 heads, 24 layers; musicgen_lm.yaml: 4
# codebooks of 2048, no biases in attention and feed-forward). Cross-attention in every layer reads
# the frozen T5-base encoder's 768-d states through a trained 768 -> 1024 projection.
SRC_MUSICGEN_ARCH = ("facebook/musicgen-small decoder: transformers MusicgenDecoderConfig defaults; audiocraft "
                     f"config/model/lm/model_scale/small.yaml and musicgen_lm.yaml ({REFERENCE} §4)")
MUSICGEN_SMALL_DECODER = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                          "ffn_dim": 4096, "num_codebooks": 4, "vocab_size": 2048, "text_dim": 768}
# MusicCaps scores (docs/reference.md §3): paper and released checkpoint.
MUSICGEN_SMALL_SCORES = {
    "musicgen_small_paper": ({"fad_vggish": 3.1, "kl_passt": 1.28, "clap_score": 0.31}, SRC_MUSICGEN_PAPER),
    "musicgen_small_released": ({"fad_vggish": 4.88, "kl_passt": 1.42, "clap_score": 0.27}, SRC_MUSICGEN_RELEASED),
}
# The paper's headline claims (docs/reference.md §4), in percent.
PAPER_CLAIMS = {"data_pct": 2.0, "flops_pct": 9.0}

# Embedding model each published metric was computed with, where the source says so.
_MODEL = {"fad_vggish": "vggish", "kl_passt": "passt", "clap_score": "clap", "fd_paper": None}


def flops_6nd(params: float, steps: float, batch: float, positions: float) -> float:
    """6 x N x D with D = steps x batch x positions per sequence (Kaplan et al.)."""
    return 6.0 * float(params) * float(steps) * float(batch) * float(positions)


def _row(**kw) -> dict:
    row = dict.fromkeys(ROW_KEYS)
    row.update(status="score", system_kind="published", prompt_set="musiccaps")
    row.update(kw)
    return row


def curve_rows(variants: list[str] | None = None) -> list[dict]:
    """The paper's two-stage curve points as score rows (one per variant x step x metric).

    ``ci_low``/``ci_high`` are the value -+ the read-off precision. ``flops_6nd`` is derived, not
    published: 6 x N_non-embedding x step x 128 x 2588, with N from the paper's parameter counts,
    so the points can sit on our FLOPs axis (our runs log 6ND the same way).
    """
    rows = []
    for variant, points in PAPER_CURVES.items():
        if variants is not None and variant not in variants:
            continue
        n = PAPER_PARAMS[variant]
        for step, values in points.items():
            fl = flops_6nd(n - PAPER_EMBEDDING_PARAMS, step, PAPER_RECIPE["batch"],
                           PAPER_RECIPE["positions_per_sequence"])
            for metric, v in zip(CURVE_METRICS, values):
                e = READOFF_ERROR[metric]
                rows.append(_row(metric=metric, value=float(v), ci_low=v - e, ci_high=v + e,
                                 lower_is_better=LOWER_IS_BETTER[metric], model=_MODEL[metric],
                                 experiment=f"paper_{variant.replace('-', '_')}_k1", variant=variant, preset="paper",
                                 kappa=1, stages="two-stage", step=step, params=n, flops_6nd=fl,
                                 source=f"{SRC_CURVES}; read-off +-{e:g}; flops_6nd derived (6 x (N - 1025 x 1024) "
                                        f"x step x 128 x 2588)"))
    return rows


def musicgen_rows() -> list[dict]:
    """MusicGen-small on MusicCaps: the paper's and the released checkpoint's FAD / KL / CLAP (no
    parameter or FLOPs columns: not published; the claims table counts them under our convention)."""
    m = MUSICGEN_SMALL
    rows = []
    for experiment, (scores, source) in MUSICGEN_SMALL_SCORES.items():
        for metric, v in scores.items():
            rows.append(_row(metric=metric, value=float(v), lower_is_better=LOWER_IS_BETTER[metric],
                             model=_MODEL[metric], experiment=experiment, variant="musicgen-small",
                             preset="small", step=m["steps"], source=source))
    return rows


def published_rows(curves: bool = True, variants: list[str] | None = None) -> list[dict]:
    """MusicGen-small rows, plus the paper's curve points when ``curves`` (restricted to ``variants``)."""
    return (curve_rows(variants) if curves else []) + musicgen_rows()
