"""``python -m ssmttm demo-mirror``: build the whole offline demo mirror.

The mirror stands in for the MTG CDN, the dataset repository and the model hubs: a synthetic
corpus in MTG-Jamendo's exact layout (ssmttm.demo.corpus) plus tiny random-init weights of the
real model classes, saved in the real formats, which the pipeline then fetches and loads through
its real code paths. ``MIRROR.json`` (every file with its sha256) is written last, so its presence
means the mirror is complete.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ssmttm import io, logs, settings

# Tiny weights the demo config's weights manifest points at: name -> (relative path, builder).
TINY_WEIGHTS = {
    "htdemucs_tiny": ("weights/htdemucs_tiny.th", "ssmttm.data.vocals:build_tiny_htdemucs"),
    "qwen2_audio_tiny": ("weights/qwen2_audio_tiny", "ssmttm.data.captions:build_tiny_qwen2_audio"),
    "dac_tiny": ("weights/dac_tiny.pth", "ssmttm.codec.dac:build_tiny_dac"),
    "t5_tiny": ("weights/t5_tiny", "ssmttm.text.encoder:build_tiny_t5"),
    # the MusicGen baseline (generate-musicgen): transformers' MusicGen classes at toy sizes
    "musicgen_tiny": ("weights/musicgen_tiny", "ssmttm.generate.musicgen:build_tiny_musicgen"),
    # metric models (evaluation): random init, so the demo marks their rows "pipeline check"
    "vggish_tiny": ("weights/vggish_tiny.pth", "ssmttm.eval.embedders.vggish:build_tiny_vggish"),
    "passt_tiny": ("weights/passt_tiny.pt", "ssmttm.eval.embedders.passt:build_tiny_passt"),
    "clap_tiny": ("weights/clap_tiny.pt", "ssmttm.eval.embedders.clap:build_tiny_clap"),
    "roberta_tiny": ("weights/roberta_tiny", "ssmttm.eval.embedders.clap:build_tiny_roberta"),
}


def _call(target: str, *args, **kwargs):
    import importlib

    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)(*args, **kwargs)


def build_weights(out_dir: Path, seed: int) -> None:
    """Write every tiny model of TINY_WEIGHTS under ``out_dir`` (the same bytes for the same seed)."""
    log = logs.setup("ssmttm.demo")
    for name, (rel, builder) in TINY_WEIGHTS.items():
        log.info("building tiny weights %s -> %s", name, rel)
        _call(builder, Path(out_dir) / rel, seed=seed)
        io.apply_umask_modes(Path(out_dir) / rel)  # save_pretrained writes 0600 files whatever the umask


def build(
    out_dir: Path, n_tracks: int, shards: int, missing_shards: tuple[str, ...], seed: int, jobs: int = 1,
    seconds: tuple[float, float] = (35.0, 90.0),
) -> dict:
    """The corpus and the tiny weights; with ``jobs`` > 1 the weights are built by a second process while
    the corpus renders (their imports and builds take ~30 s of one core, the corpus all it is given)."""
    import subprocess
    import sys

    log = logs.setup("ssmttm.demo")
    out_dir = Path(out_dir)
    index = out_dir / "MIRROR.json"
    if index.exists():
        index.unlink()  # an interrupted rebuild must not look complete
    weights = None
    if jobs > 1:
        out_dir.mkdir(parents=True, exist_ok=True)
        weights = subprocess.Popen([sys.executable, "-m", "ssmttm", "demo-weights", "--out-dir", str(out_dir),
                                    "--seed", str(seed)])
    try:
        log.info("building demo corpus: %d tracks, %d shards (missing: %s)", n_tracks, shards, missing_shards)
        summary = _call(
            "ssmttm.demo.corpus:build",
            out_dir,
            n_tracks=n_tracks,
            n_shards=shards,
            missing_shards=tuple(missing_shards),
            seed=seed,
            seconds=tuple(seconds),
            jobs=jobs,  # MP3 encoding dominates; output is byte-identical for any jobs value
        )
    except BaseException:
        if weights is not None:
            weights.kill()
            weights.wait()
        raise
    if weights is not None and weights.wait() != 0:
        raise RuntimeError(f"demo-weights --out-dir {out_dir} failed (exit {weights.returncode}); see its "
                           f"log lines above")
    if weights is None:
        build_weights(out_dir, seed)
    files = {
        p.relative_to(out_dir).as_posix(): io.sha256_file(p)
        for p in sorted(out_dir.rglob("*"))
        if p.is_file() and p.name != "MIRROR.json" and ".tmp" not in p.name
    }
    record = {
        "seed": seed,
        "n_tracks": n_tracks,
        "shards": shards,
        "missing_shards": list(missing_shards),
        "seconds": list(seconds),
        "corpus": {k: v for k, v in summary.items() if k != "files"} if isinstance(summary, dict) else {},
        "files": files,
    }
    io.write_json(index, record)
    log.info("demo mirror complete: %d files", len(files))
    return record


@dataclass(frozen=True, kw_only=True)
class MirrorSettings:
    """Config keys ``demo_mirror.*`` (defaults in the schema only, see ssmttm.settings)."""

    SCHEMA_NODES = ("demo_mirror",)

    out_dir: str
    n_tracks: int
    shards: int
    missing_shards: list[str]
    seconds: list[float]
    seed: int


def main_weights(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ssmttm demo-weights", description=build_weights.__doc__)
    p.add_argument("--out-dir", type=Path, required=True, help="the mirror folder (config demo_mirror.out_dir)")
    p.add_argument("--seed", type=int, default=0, help="config demo_mirror.seed")
    a = p.parse_args(argv)
    build_weights(a.out_dir, a.seed)
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ssmttm demo-mirror", description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=1, help="parallel encoder processes (the rule's threads)")
    settings.add_arguments(p, MirrorSettings)
    a = p.parse_args(argv)
    cfg = settings.from_args(p, MirrorSettings, a)
    build(Path(cfg.out_dir), cfg.n_tracks, cfg.shards, tuple(cfg.missing_shards), cfg.seed, a.jobs,
          seconds=tuple(cfg.seconds))
    return 0
