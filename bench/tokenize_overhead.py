"""Tokenize-stage throughput vs bare ``DAC.encode`` on the same audio, plus token Dataset throughput.

Run from the repository root: ``python bench/tokenize_overhead.py [--clips 4 --seconds 3 ...]``.

(a) bare: the dac library's own model call (``DAC.preprocess`` + ``DAC.encode``) on tensors already
    read and prepared, batched exactly as the stage batches them;
(b) stage: :func:`ssmttm.tokens.tokenize.tokenize_clips` + :func:`ssmttm.tokens.store.write_shard`
    (read FLAC, downmix/resample, encode, write the token store) on the same clips.
overhead = (b - a) / a per round, target <= 0.15. Weight loading is one-off and excluded from both.
The codec is a random-init DAC of the real 44.1 kHz size (dac's default kwargs, 76.7M parameters:
the same compute as the released weights); the tiny demo codec is reported too. The Dataset part
reads a synthetic 30 s token shard (random codes, real text store from a tiny T5) through
:class:`ssmttm.tokens.dataset.TokenDataset`; it is skipped with a note if that cannot be built.
Its rate is set against the samples/s a training step of the tiny Prefix SiMBA consumes
(headroom = dataset rate / consumed rate, per round).

Protocol (bench/_protocol.py): machine line first, threads pinned, one warm-up call of each side,
then ``--rounds`` rounds alternating (a) and (b) (and the Dataset pass with the training step) in one
process; every figure is the median [min–max] over the rounds. The last line holds ``key=value`` pairs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings("ignore", message=".*weight_norm.*")
warnings.filterwarnings("ignore", message=".*torch.jit.script.*")

from ssmttm import audio  # noqa: E402
from ssmttm.constants import SAMPLE_RATE  # noqa: E402
from ssmttm.data.manifest import MANIFEST_COLUMNS, write_manifest  # noqa: E402

from _protocol import Spread, add_protocol_args, alternate, begin, figure_line, figures_line, pin_allocator  # noqa: E402


def make_corpus(root: Path, n: int, seconds: float, n_extra: int) -> tuple[Path, pd.DataFrame]:
    """n stereo 44.1 kHz FLAC clips in shard 00 (+ n_extra caption-only rows in shard 01)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n + n_extra):
        shard = "00" if i < n else "01"
        path = root / f"clip{i}.flac"
        if i < n:
            t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
            x = 0.2 * np.sin(2 * np.pi * 110 * (i + 1) * t) + 0.05 * rng.standard_normal(t.shape)
            audio.write(path, np.stack([x, 0.9 * x]).astype(np.float32), SAMPLE_RATE)
        row = {c: "" for c, kind in MANIFEST_COLUMNS.items() if kind == "str"}
        row.update(clip_id=f"{shard}_{i:05d}", track_id=f"track_{i:07d}", shard=shard, offset=0.0,
                   seconds=float(seconds), licence="by", caption=f"a {['calm', 'loud', 'sad'][i % 3]} piano piece {i}",
                   captions="[]", split="train", sha256=f"{i:064x}", audio_path=str(path), sample_rate=SAMPLE_RATE,
                   channels=2, vocals="removed", captioner="tags")
        row["captions"] = f'["{row["caption"]}"]'
        rows.append(row)
    df = pd.DataFrame(rows)
    write_manifest(root / "manifest.parquet", df)
    return root / "manifest.parquet", df


def bare_encode(codec, audios: list[np.ndarray], batch_size: int) -> None:
    """The dac library's model call on prepared tensors, in the stage's batches."""
    import torch

    model = codec.model
    with torch.inference_mode():
        for i in range(0, len(audios), batch_size):
            x = torch.from_numpy(np.stack(audios[i:i + batch_size])).to(codec.device)
            model.encode(model.preprocess(x, codec.sample_rate))


def time_codec(name, codec, clips, captions, audios, batch_size, rounds, warmup, out: Path):
    """(a) and (b) alternating; returns (overhead, bare seconds, stage seconds) as Spreads."""
    from ssmttm.tokens.store import write_shard
    from ssmttm.tokens.tokenize import tokenize_clips

    calls = [0]

    def bare() -> float:
        t = time.perf_counter()
        bare_encode(codec, audios, batch_size)
        return time.perf_counter() - t

    def stage() -> float:
        calls[0] += 1
        t = time.perf_counter()
        done, _ = tokenize_clips(codec, clips, captions, batch_size)
        write_shard(out / f"{name}_{calls[0]}", done, {**codec.describe(), "weights": name})
        return time.perf_counter() - t

    r = alternate({"bare": bare, "stage": stage}, rounds, warmup)
    a, b = r.spread("bare"), r.spread("stage")
    overhead = Spread.of(sb / sa - 1 for sa, sb in zip(r.values("bare"), r.values("stage")))  # per round
    secs = sum(x.shape[-1] for x in audios) / codec.sample_rate
    print(f"{name}, {len(audios)} clips / {secs:.1f} s of audio:")
    print("  " + figure_line("(a) bare DAC.encode", a, "s"))
    print("  " + figure_line("(b) tokenize stage", b, "s"))
    print("  " + figure_line("overhead (b - a) / a (per round)", overhead))
    print(f"  real time: {secs / a.median:.1f}x (a), {secs / b.median:.1f}x (b)")
    return overhead, a, b


def dataset_side(root: Path, df: pd.DataFrame, text_dir: Path, n_items: int):
    """A side: one pass of TokenDataset.__getitem__ (kappa 1, full 30 s items) over a synthetic shard,
    returning samples/s; None if the Dataset cannot be built here."""
    try:
        from ssmttm.constants import DAC_44KHZ_N_CODEBOOKS
        from ssmttm.text.store import TextStore
        from ssmttm.tokens.dataset import TokenDataset
        from ssmttm.tokens.store import write_shard
    except ImportError as exc:
        print(f"dataset: skipped ({exc})")
        return None
    text = TextStore(text_dir)
    rng = np.random.default_rng(0)
    rows = df[df["shard"] == "01"].head(n_items)
    items = [({"clip_id": r.clip_id, "track_id": r.track_id, "shard": "01", "split": "train", "licence": r.licence,
               "caption_ids": text.caption_ids(r.clip_id), "audio_sha256": r.sha256},
              rng.integers(0, 1024, size=(DAC_44KHZ_N_CODEBOOKS, 2584), dtype=np.uint16))
             for r in rows.itertuples()]
    meta = {"codec": "dac", "weights": "synthetic", "weights_sha256": "0" * 64, "sample_rate": SAMPLE_RATE,
            "frame_rate": SAMPLE_RATE / 512, "n_codebooks": DAC_44KHZ_N_CODEBOOKS, "cardinality": 1024}
    write_shard(root / "synthetic_tokens" / "01", items, meta)
    ds = TokenDataset([root / "synthetic_tokens" / "01"], text_dir, kappa=1, split="train")

    def run() -> float:
        t = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        return len(ds) / (time.perf_counter() - t)

    return run


def train_side(root: Path, text_dir: Path, batch: int = 4):
    """A side: samples/s one training step consumes: the tiny Prefix SiMBA (the demo's trainer) on the
    same synthetic shard, full 2584-frame items, forward + backward + AdamW."""
    try:
        import torch

        from ssmttm.models import build_lm
        from ssmttm.models.config import from_preset
        from ssmttm.tokens.dataset import TokenDataset, collate
    except ImportError as exc:
        print(f"train step: skipped ({exc})")
        return None
    ds = TokenDataset([root / "synthetic_tokens" / "01"], text_dir, kappa=1, split="train")
    b = collate([ds[i] for i in range(batch)])
    torch.manual_seed(0)
    lm = build_lm(from_preset("tiny", "prefix-simba", text_dim=b["text"].shape[-1], mamba_backend="torch"))
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-4)

    def run() -> float:
        t = time.perf_counter()
        loss = lm.loss(lm(b["codes"], b["text"].float(), b["text_mask"]), b["codes"])
        loss.backward()
        opt.step()
        opt.zero_grad()
        return batch / (time.perf_counter() - t)

    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # 4 clips x 3 s: a real-size DAC encodes about 1 s of audio per second on 2 CPU cores, and each of
    # the 6 calls per side (warm-up + 5 rounds) encodes them all (about 2.5 min in all).
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--dataset-items", type=int, default=256)
    add_protocol_args(p, threads=2)
    args = p.parse_args(argv)
    begin(args)

    import torch

    from ssmttm.codec import resolve_device
    from ssmttm.codec.dac import DacCodec, _import_dac, build_tiny_dac
    from ssmttm.codec import load_codec
    from ssmttm.tokens.tokenize import load_clip, read_caption_ids

    device = resolve_device(args.device)
    print(f"codec device {device}")
    with tempfile.TemporaryDirectory(prefix="tokbench.") as tmp:
        root = Path(tmp)
        manifest, df = make_corpus(root, args.clips, args.seconds, args.dataset_items)
        clips = df[df["shard"] == "00"]
        text_dir = root / "text"
        try:
            from ssmttm.text.embed import embed_manifest
            from ssmttm.text.encoder import build_tiny_t5

            import logging
            logging.disable(logging.INFO)
            embed_manifest(df, build_tiny_t5(root / "t5_tiny"), text_dir, device="cpu")
            captions = read_caption_ids(text_dir / "clips.parquet")
        except Exception as exc:  # the text half is optional here
            print(f"text store: built by hand ({type(exc).__name__}: {exc})")
            text_dir = None
            captions = {c: [1] for c in df["clip_id"]}

        torch.manual_seed(0)
        real = DacCodec(_import_dac().DAC(), device=device)  # dac's default kwargs = the 44.1 kHz model
        audios = [load_clip(real, path) for path in clips["audio_path"]]
        overhead, bare, stage = time_codec("dac_44khz_random", real, clips, captions, audios, args.batch_size,
                                           args.rounds, args.warmup, root)
        tiny = load_codec("dac", build_tiny_dac(root / "dac_tiny.pth"), device)
        overhead_tiny, _, _ = time_codec("dac_tiny", tiny, clips, captions, audios, args.batch_size,
                                         args.rounds, args.warmup, root)
        read = dataset_side(root, df, text_dir, args.dataset_items) if text_dir else None
        train = train_side(root, text_dir) if read is not None else None
        figures = {"overhead": overhead, "target_met": "yes" if overhead.median <= 0.15 else "no",
                   "stage_over_bare": overhead.median + 1, "bare_s": bare, "stage_s": stage,
                   "overhead_tiny_dac": overhead_tiny}
        if read is not None and train is not None:
            r = alternate({"dataset": read, "train": train}, args.rounds, args.warmup)
            rate, used, headroom = r.spread("dataset"), r.spread("train"), r.ratio("dataset", "train")
            print(f"dataset: TokenDataset (kappa 1, 2584 frames, 9-codebook shard), one process, "
                  f"{args.dataset_items} items per pass; train step: tiny prefix-simba, batch 4 x 2588 frames")
            print("  " + figure_line("dataset", rate, "samples/s"))
            print("  " + figure_line("train step consumes", used, "samples/s"))
            print("  " + figure_line("headroom, dataset / train (per round)", headroom))
            # A paper-size step (128 sequences, docs/reference.md §1) on a GPU consumes far fewer samples/s
            # than the tiny CPU model measured here, so the dataset's headroom there is larger still.
            figures.update(dataset_samples_per_s=rate, train_step_samples_per_s=used, dataset_headroom=headroom)
        else:
            figures.update(dataset_samples_per_s="n/a", train_step_samples_per_s="n/a", dataset_headroom="n/a")
    figures["rounds"] = args.rounds
    print(figures_line(figures))
    return 0


if __name__ == "__main__":
    pin_allocator()
    raise SystemExit(main())
