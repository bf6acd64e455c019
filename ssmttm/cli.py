"""``python -m ssmttm <stage> ...``: the one entry point every Snakemake rule calls.

The registry maps a stage name to ``module:function``; modules are imported only when their stage
runs, so ``python -m ssmttm --help`` and the Snakefile never import torch or model libraries.
Each stage function takes ``argv`` (a list of strings), parses its own flags and returns an exit
code (or None for success). A named error (:class:`ssmttm.errors.SsmttmError`) escaping a stage ends
the process with its message and exit code 2, without a traceback.

A stage process started from the command line compiles numba code into a cache of its own
(:mod:`ssmttm.numba_cache`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

from ssmttm.errors import SsmttmError
from ssmttm.numba_cache import private_numba_cache

STAGES: dict[str, tuple[str, str, str]] = {
    "check-config": ("ssmttm.cli", "check_config", "validate config files against the schema"),
    "demo-corpus": ("ssmttm.demo.corpus", "main", "build only the synthetic MTG-Jamendo corpus"),
    "demo-mirror": ("ssmttm.demo.mirror", "main", "build the offline demo mirror (corpus + tiny weights)"),
    "demo-weights": ("ssmttm.demo.mirror", "main_weights", "build only the tiny weights of the demo mirror"),
    "weights": ("ssmttm.weights", "main", "fetch one third-party checkpoint into the weights cache"),
    "fetch-file": ("ssmttm.data.fetch", "main_file", "download one metadata file, sha256-verified"),
    "fetch-shard": ("ssmttm.data.fetch", "main_shard", "download, verify and unpack one audio tar"),
    "licenses": ("ssmttm.data.licenses", "main", "parse and audit audio_licenses.txt"),
    "select": ("ssmttm.data.select", "main", "metadata filter: duration, Song Describer, licence gate"),
    "segment": ("ssmttm.data.segment", "main", "decode, validate, resample and cut clips of one shard"),
    "vocals": ("ssmttm.data.vocals", "main", "remove vocals (htdemucs) or keep them, one shard"),
    "captions": ("ssmttm.data.captions", "main", "caption the clips of one shard"),
    "manifest": ("ssmttm.data.manifest", "main", "join every shard into the clip manifest"),
    "text-embed": ("ssmttm.text.embed", "main", "encode every unique caption once (frozen T5 encoder)"),
    "tokenize": ("ssmttm.tokens.tokenize", "main", "DAC-encode the manifest clips of one shard"),
    "ceiling": ("ssmttm.tokens.ceiling", "main", "codec re-synthesis quality on a seeded sample, one shard"),
    "ceiling-summary": ("ssmttm.tokens.ceiling", "main_summary", "aggregate the codec ceiling over shards"),
    "params": ("ssmttm.models.params", "main", "trainable LM parameters per preset x variant"),
    "train": ("ssmttm.train.loop", "main", "train one experiment x seed (resumes from its last checkpoint)"),
    "train-refiner": ("ssmttm.refiner.train", "main", "train the two-stage refiner (diffusion over DAC latents)"),
    "import-checkpoint": ("ssmttm.importer", "main", "convert another codebase's LM checkpoint (--format ssm-ttm)"),
    "prompt-set": ("ssmttm.generate.prompts", "main", "write a prompt set as JSON"),
    "prompt-embed": ("ssmttm.generate.prompt_embed", "main", "a prompt set's T5 states, encoded once for generate"),
    "generate": ("ssmttm.generate.generate", "main", "sample a checkpoint on a prompt set, decode to audio"),
    "generate-musicgen": ("ssmttm.generate.musicgen", "main", "the MusicGen baseline on a prompt set, in generate's layout"),
    "external-system": ("ssmttm.generate.external", "main", "a folder of another model's clips as a scored system"),
    "reference-audio": ("ssmttm.eval.reference", "main", "fetch/cut the reference clips of the prompt set"),
    "resynth": ("ssmttm.eval.resynth", "main", "reference clips through the codec at kappa codebooks"),
    "evaluate-embed": ("ssmttm.eval.embed", "main", "one metric model over every scored clip, into the embedding cache"),
    "evaluate": ("ssmttm.eval.evaluate", "main", "one metric on one system's audio (rows with protocol + CI)"),
    "listening-kit": ("ssmttm.listen.kit", "main", "a listening test's kit: loudness-matched anonymous clips, per-rater orders"),
    "listen": ("ssmttm.listen.cli", "main", "listening test: serve the rating pages, export them static, scripted raters"),
    "listening-results": ("ssmttm.listen.results", "main", "MOS per system and question with 95 % intervals, pairwise tests"),
    "tables": ("ssmttm.report.tables", "main", "study tables (CSV/Markdown/LaTeX) and evaluation curves"),
    "claims": ("ssmttm.report.claims", "main", "recompute the paper's data and FLOPs claims from this run"),
    "report-pages": ("ssmttm.report.pages", "main", "HTML pages (tables, licence audit, audio) for snakemake --report"),
    "docs-results": ("ssmttm.report.docs", "main", "paste the demo's tables and the bench figures into README/docs"),
    "loss-curves": ("ssmttm.report.curves", "main", "training-loss plots per run and overlaid"),
    "val-loss": ("ssmttm.report.valloss", "main", "validation loss per study: mean ± 95 % t-interval over seeds"),
    "envs": ("ssmttm.envs", "main", "write envs/*.yaml from the lock files"),
    "warm-numba": ("ssmttm.eval.attributes", "main_warm", "compile librosa's numba kernels into the shared seed cache"),
}


def check_config(argv: list[str]) -> int:
    import argparse

    from ssmttm import config

    p = argparse.ArgumentParser(prog="ssmttm check-config", description="Validate merged config files.")
    p.add_argument("files", nargs="+", help="config files, later ones override earlier ones")
    args = p.parse_args(argv)
    try:
        config.load(*args.files)
    except SsmttmError as exc:  # ConfigError, or anything else the loader names
        print(exc, file=sys.stderr)
        return 2
    print("config ok: " + " + ".join(args.files))
    return 0


def keep_freed_memory() -> None:
    """glibc malloc policy for a stage process: keep freed memory instead of returning it to the kernel.

    The stages allocate and free the same large tensors over and over (STFT buffers of the vocal
    separation, activations, embedder inputs). By default glibc unmaps every block above a dynamic
    threshold when it is freed, and the next allocation faults in pages the kernel must zero again: in
    the demo's vocal separation that was half the run time (26.4 s, of which 13.2 s system time; 18.9 s
    with this policy, measured on the 2-core build machine). Same effect as the MALLOC_MMAP_THRESHOLD_,
    MALLOC_TRIM_THRESHOLD_ and MALLOC_TOP_PAD_ environment variables. Linux/glibc only; elsewhere, or
    with another allocator, nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl or another libc: keep its defaults
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # glibc <malloc.h>
    mallopt(m_mmap_threshold, 32 << 20)  # blocks below 32 MB (glibc's maximum) come from the heap
    mallopt(m_trim_threshold, 1 << 30)  # and up to 1 GB of freed heap stays with the process
    mallopt(m_top_pad, 512 << 20)  # grow the heap in large steps (virtual; pages are touched on use)


def main(argv: list[str] | None = None, own_numba_cache: bool | None = None) -> int:
    """Run one stage. ``own_numba_cache`` (default: when ``argv`` comes from the command line, i.e.
    this is the process's entry point): run it under :func:`private_numba_cache`."""
    if own_numba_cache is None:
        own_numba_cache = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m ssmttm <stage> [options]\n\nstages:")
        for name, (_, _, text) in STAGES.items():
            print(f"  {name:<14} {text}")
        return 0 if argv else 2
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"unknown stage {stage!r}; known: {', '.join(STAGES)}", file=sys.stderr)
        return 2
    module, func, _ = STAGES[stage]
    keep_freed_memory()
    if own_numba_cache and not sys.stderr.isatty():
        # A rule sends stderr to a log file, where a progress bar's carriage-return redraws pile up
        # on one line. Ours write plain lines there (ssmttm.logs.progress); this switches off the
        # bars of huggingface_hub and transformers ("Loading weights"), which read it at import.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with private_numba_cache() if own_numba_cache else contextlib.nullcontext():
        fn = getattr(importlib.import_module(module), func)
        try:
            rc = fn(rest)
        except SsmttmError as exc:  # a failure the stage detected and named: its message, no traceback
            print(f"ssmttm {stage}: {exc}", file=sys.stderr)
            return 2
    return int(rc or 0)
