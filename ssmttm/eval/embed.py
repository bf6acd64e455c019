"""``evaluate-embed``: one metric model over the clips of every scored system, into the embedding cache.

A score job (``evaluate``, one per system x metric) spends seconds on its arithmetic, but importing a
metric model's packages costs more: about 10 s for LAION-CLAP and 6.5 s for PaSST on one CPU core,
paid again by every job. So each model with a checkpoint (VGGish, PaSST, CLAP) gets one ``embed_eval``
job that loads it once and embeds every clip every score job will read (the reference clips, each
experiment's generated folders, the codec re-synthesis folders, the baselines), and for a model with a
text tower (CLAP) every prompt text, into the per-file cache (:mod:`ssmttm.eval.cache`). The score jobs
build their embedder lazily and find everything cached, so they import no model; a file the cache does
not hold (a clip this job could not embed, or a job run on its own) is embedded there as before, which
is what makes the result the same with or without this job.

The DAG stays one job per score: the score rules read this job's summary as an ``ancient`` input, so
they wait for it, but adding an experiment reruns this job (loading the model once, embedding only the
new clips) without rerunning the scores of the other systems. The summary (``--out``) records the
protocol and how many files were cached, computed and skipped (each skipped file with its reason).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ssmttm import io, logs, settings
from ssmttm.eval.metrics import METRICS, metric_for
from ssmttm.eval.options import EmbedSettings


def system_items(reference: Path, prompts_path: Path, sets: list[Path], resynth: list[Path]):
    """(reference clips {ref_id: path}, every item a score job of these systems reads)."""
    from ssmttm.eval.evaluate import EvaluateError, generated_items, read_prompts, read_reference, reference_items

    prompts = read_prompts(prompts_path)
    ref = read_reference(reference)
    if not ref:
        raise EvaluateError(f"--reference {reference}: no reference clips (see its availability.tsv)")
    items = reference_items(ref, prompts)
    for d in sets:
        items += generated_items(Path(d), prompts)[0]
    for d in resynth:
        items += reference_items(read_reference(d), prompts)
    return ref, items


def embed_all(embedder_name: str, models: dict[str, str], reference: Path, prompts_path: Path, sets: list[Path],
              resynth: list[Path], cache_dir: Path, s: EmbedSettings) -> dict:
    """Embed every clip (and, for a text-audio model, every prompt text) of the systems; the summary."""
    from ssmttm.eval.cache import embed_files, embed_texts, uncached
    from ssmttm.eval.embedders import TextAudioEmbedder
    from ssmttm.eval.evaluate import metric_embedder, reference_seconds

    ref, items = system_items(reference, prompts_path, sets, resynth)
    embedder = metric_embedder(metric_for(embedder_name), models, s.device, lazy=True)
    duration = reference_seconds(ref.values())
    paths = sorted({str(p) for p in ref.values()} | {str(it.audio) for it in items})
    todo = uncached(embedder, paths, cache_dir, duration)
    if todo:
        embedder.load()
    out, reasons = embed_files(embedder, paths, cache_dir, duration)
    texts = sorted({it.text for it in items if it.text})
    if isinstance(embedder, TextAudioEmbedder) and texts:
        embed_texts(embedder, texts, cache_dir)
    return {"embedder": embedder.name, "protocol": embedder.protocol(), "duration_s": duration,
            "files": len(paths), "computed": len(todo) - len(reasons), "cached": len(paths) - len(todo),
            "skipped": reasons, "texts": len(texts) if isinstance(embedder, TextAudioEmbedder) else 0,
            "model_loaded": embedder.loaded}


def main(argv: list[str]) -> int | None:
    p = argparse.ArgumentParser(prog="ssmttm evaluate-embed", description=__doc__.split("\n\n")[0])
    p.add_argument("--embedder", required=True, choices=sorted({m.embedder for m in METRICS.values() if m.weights}),
                   help="the metric model")
    p.add_argument("--model", action="extend", nargs="*", default=[],
                   help="ROLE=PATH ... (a weights receipt, file or folder per evaluation.models role)")
    p.add_argument("--reference", required=True, help="reference set folder (ssmttm reference-audio)")
    p.add_argument("--prompts", required=True, help="prompt-set JSON")
    p.add_argument("--set", dest="sets", action="extend", nargs="*", default=[],
                   help="set folders in generate's layout (experiments' seeds x steps, baselines)")
    p.add_argument("--resynth", action="extend", nargs="*", default=[], help="codec re-synthesis folders")
    p.add_argument("--cache-dir", required=True, help="per-file embedding cache")
    p.add_argument("--out", required=True, help="summary JSON")
    settings.add_arguments(p, EmbedSettings)
    args = p.parse_args(argv)
    s = settings.from_args(p, EmbedSettings, args)
    log = logs.setup("ssmttm.evaluate-embed")
    from ssmttm.eval.evaluate import EvaluateError, parse_models
    from ssmttm.weight_cache import MissingWeightError

    try:
        summary = embed_all(args.embedder, parse_models(args.model), Path(args.reference), Path(args.prompts),
                            [Path(d) for d in args.sets], [Path(d) for d in args.resynth], Path(args.cache_dir), s)
    except (EvaluateError, MissingWeightError) as exc:
        log.error("%s", exc)
        return 2
    io.write_json(args.out, summary)
    log.info("%s: %d files (%d cached, %d computed, %d skipped), %d texts -> %s", summary["embedder"],
             summary["files"], summary["cached"], summary["computed"], len(summary["skipped"]), summary["texts"],
             args.out)
    return 0
