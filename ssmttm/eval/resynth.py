"""``resynth``: the reference clips through the codec, keeping the first kappa codebooks.

The codec re-synthesis row of every table (STYLE.md, audiocraft's ``use_gt``): a model that
generated DAC codes perfectly would still score no better than this, so a metric that rates the
re-synthesis badly is measuring the codec, not the language model. Output: a set folder like the
reference one (``<ref_id>.wav`` at the codec rate + ``index.json`` with ``kind: resynth``).
Settings (:class:`ssmttm.eval.options.ResynthSettings`): ``tokens.codec`` and ``evaluation.device``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from ssmttm import audio, io, logs, settings
from ssmttm.eval.options import ResynthSettings


def resynthesize(reference: Path, codec_name: str, weights: str, kappa: int, out_dir: Path, device: str) -> dict:
    """Encode every reference clip, decode codebooks ``[:kappa]``, write wavs; returns the index."""
    import torch

    from ssmttm.codec import CodecError, load_codec, resolve_device
    from ssmttm.weight_cache import local_path

    log = logs.setup("ssmttm.resynth")
    codec = load_codec(codec_name, local_path(weights), resolve_device(device))
    if not 1 <= kappa <= codec.n_codebooks:
        raise CodecError(f"--kappa {kappa}: the codec has {codec.n_codebooks} codebooks")
    index = io.read_json(Path(reference) / "index.json")
    clips, rejected = [], []
    staging = Path(str(out_dir) + ".partial")
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted run
    staging.mkdir(parents=True, exist_ok=True)
    for c in logs.progress(index.get("clips", []), desc="resynth", unit="clip"):
        src = Path(reference) / c["file"]
        try:
            x, sr = audio.read(src)
        except audio.AudioError as exc:
            rejected.append({"id": c["id"], "reason": str(exc)})
            continue
        mono = codec.prepare(x, sr)  # [1, N] at the codec rate
        with torch.no_grad():
            codes = codec.encode(torch.from_numpy(mono)[None].to(codec.device))
            est = codec.decode(codes[:, :kappa])[0, 0].float().cpu().numpy()
        est = est[: mono.shape[-1]]
        audio.write(staging / c["file"], np.clip(est, -1.0, 1.0)[None], codec.sample_rate)
        clips.append({**c, "seconds": est.shape[-1] / codec.sample_rate})
    record = {"kind": "resynth", "kappa": kappa, "reference": str(reference), "codec": codec.describe(),
              "clips": clips, "rejected": rejected}
    io.write_json(staging / "index.json", record)
    io.replace_dir(staging, out_dir)
    log.info("resynth kappa=%d: %d clips (%d rejected) -> %s", kappa, len(clips), len(rejected), out_dir)
    return record


def main(argv: list[str]) -> int | None:
    p = argparse.ArgumentParser(prog="ssmttm resynth", description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", required=True, help="reference set folder (index.json + wavs)")
    p.add_argument("--codec-weights", required=True, help="codec weights receipt results/weights/<key>.json "
                   "(or a local checkpoint)")
    p.add_argument("--kappa", type=int, required=True, help="codebooks kept (1..K)")
    p.add_argument("--out-dir", required=True)
    settings.add_arguments(p, ResynthSettings)
    args = p.parse_args(argv)
    s = settings.from_args(p, ResynthSettings, args)
    from ssmttm.codec import CodecError

    try:
        resynthesize(Path(args.reference), s.codec, args.codec_weights, args.kappa, Path(args.out_dir), s.device)
    except CodecError as exc:
        logs.setup("ssmttm.resynth").error("%s", exc)
        return 2
    return 0
