"""The metric registry: name -> which metric model it runs and how its number is computed.

Names are what ``evaluation.metrics`` lists and what score rows carry (docs/reference.md §3):

- ``fad_vggish``: Fréchet distance of VGGish frame embeddings (16 kHz, 0.96 s), generated vs
  reference (the FAD of frechet-audio-distance / audiocraft);
- ``fd_clap``: Fréchet distance of LAION-CLAP clip embeddings (48 kHz), the embedding-FD
  alternative to the OpenL3 FD of stable-audio-metrics (whose values, 70-165, match the paper's
  "FD" curves; OpenL3 needs TensorFlow, which this project does not install);
- ``fd_logmel``: Fréchet distance of training-free log-mel statistics: meaningful with no
  pretrained weights at all, hence the demo's honest distribution metric;
- ``kl_passt``: KL(ref || gen) between PaSST's softmaxed, window-mean-pooled AudioSet logits of
  each generated clip and its reference clip (10 s windows, 5 s hop), averaged over pairs;
- ``clap_score``: mean cosine between the CLAP text embedding of the prompt and the CLAP audio
  embedding of the clip;
- ``attributes``: tempo / key / mode / drums recovered with librosa from each clip and compared
  with the truth of the track its prompt describes (the synthetic demo corpus); four rows.

``weights`` are roles in ``evaluation.models`` (role -> weights entry), so the config checker can
tell a missing checkpoint before any job runs. Building this table imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    embedder: str | None        # ssmttm.eval.embedders registry name (None: no metric model)
    kind: str                   # fd | kl | clap_score | attributes
    weights: tuple[str, ...]    # evaluation.models roles this metric loads
    lower_is_better: bool
    label: str                  # column title in tables


METRICS: dict[str, Metric] = {
    "fad_vggish": Metric("fad_vggish", "vggish", "fd", ("vggish",), True, "FAD (VGGish)"),
    "fd_clap": Metric("fd_clap", "clap", "fd", ("clap", "clap_text"), True, "FD (CLAP)"),
    "fd_logmel": Metric("fd_logmel", "logmel", "fd", (), True, "FD (log-mel)"),
    "kl_passt": Metric("kl_passt", "passt", "kl", ("passt",), True, "KL (PaSST)"),
    "clap_score": Metric("clap_score", "clap", "clap_score", ("clap", "clap_text"), False, "CLAP score"),
    "attributes": Metric("attributes", None, "attributes", (), False, "attribute adherence"),
}

# The row metrics the ``attributes`` metric produces (ssmttm.eval.attributes).
ATTRIBUTE_ROWS = ("tempo_acc", "key_acc", "mode_acc", "drums_acc")


def metric_for(embedder: str) -> Metric:
    """The first registered metric that runs ``embedder`` with a checkpoint: its ``weights`` roles are the
    model's (``ssmttm evaluate-embed --embedder``, one job per such model)."""
    for m in METRICS.values():
        if m.embedder == embedder and m.weights:
            return m
    heavy = sorted({m.embedder for m in METRICS.values() if m.weights})
    raise ValueError(f"--embedder {embedder!r}: not a metric model with a checkpoint; one of {', '.join(heavy)}")
