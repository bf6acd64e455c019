"""How metrics are named and ordered in every table and plot (shared by the tables and the curves).

Labels are the column titles of the wide tables and the subplot titles of the evaluation curves;
the order puts the distribution metrics first, then the text-adherence and attribute ones.
"""

from __future__ import annotations

from ssmttm.report import published

METRIC_LABELS = {
    "fad_vggish": "FAD (VGGish)", "fd_openl3": "FD (OpenL3)", "fd_clap": "FD (CLAP)", "fd_vggish": "FD (VGGish)",
    "fd_passt": "FD (PaSST)", "fd_logmel": "FD (log-mel)", "kl_passt": "KL (PaSST)", "clap_score": "CLAP score",
    "tempo_acc": "tempo acc.", "key_acc": "key acc.", "mode_acc": "mode acc.", "drums_acc": "drums acc.",
    **published.PUBLISHED_LABELS,
}
METRIC_ORDER = ("fad_vggish", "fd_openl3", "fd_clap", "fd_vggish", "fd_passt", "fd_logmel", "fd_paper", "kl_passt",
                "clap_score", "tempo_acc", "key_acc", "mode_acc", "drums_acc")


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def metric_sort_key(metric: str) -> tuple[int, str]:
    return (METRIC_ORDER.index(metric) if metric in METRIC_ORDER else len(METRIC_ORDER), metric)
