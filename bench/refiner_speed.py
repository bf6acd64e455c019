"""Refiner sampling cost vs quality at 100 / 50 / 25 diffusion steps, in one table.

Run from the repository root: ``python bench/refiner_speed.py [--train-steps 600 ...]``.

Speed: the ``paper``-preset refiner (random init: cost depends only on shapes; DAC-44k shapes, 64
latent channels, CFG in one batch of 2 rows) samples ``--seconds`` of audio on CPU at each step count,
timed; the figure is sampling seconds per second of audio. The tiny preset is timed the same way.
Protocol (bench/_protocol.py): machine line first, threads pinned, a warm-up sample of each network
(its cheapest step count), then ``--rounds`` rounds of every (network, step count) in turn in one
process; each timing is the median [min–max] over the rounds, and the cost of 50 and 25 steps
relative to 100 is a per-round ratio (0.5 and 0.25 if the cost is all in the network's steps).

Quality: a tiny refiner is trained here for ``--train-steps`` steps on the DAC codes of synthetic
demo-corpus music (``ssmttm.demo.synth``, encoded by the tiny demo DAC, 4 codebooks), then completes
codebooks 2..4 of held-out clips from their true codebook 1. Per sampler and step count:

- ``acc``: fraction of generated codes equal to the true ones;
- ``mel``: multi-resolution log-mel L1 distance (``ssmttm.tokens.ceiling.mel_distance``) between the
  decoded two-stage audio and the decoded true codes (all 4 codebooks); the table also gives the
  same distance for codebook 1 alone (no refiner), the single-stage kappa = 1 decode.

The quality figures are computed once: training and sampling are seeded (``--seed``), so a round
would repeat the same numbers; they have no spread to show.

The last line holds ``key=value`` pairs: seconds per audio second at each step count (paper size,
ddpm; medians), the per-round cost ratios, mel distance and code accuracy at each step count, and the
codebook-1-only distance.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _protocol import add_protocol_args, alternate, begin, figure_line, figures_line, pin_allocator  # noqa: E402

from ssmttm.generate.sampling import make_generators, prompt_seeds  # noqa: E402
from ssmttm.refiner import diffusion as D  # noqa: E402
from ssmttm.refiner.config import refiner_from_preset  # noqa: E402
from ssmttm.refiner.model import build_refiner  # noqa: E402
from ssmttm.train.schedule import WarmupCosine  # noqa: E402

STEPS = (100, 50, 25)
TEXT_DIM = 768


def corpus(codec, n_clips: int, seconds: float, seed: int) -> torch.Tensor:
    """DAC codes [n, K, T] of synthetic demo-corpus clips."""
    from ssmttm.demo.synth import random_spec, render

    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n_clips):
        x = render(random_spec(rng, seconds, seed * 1000 + i))
        clips.append(codec.prepare(x, 44100))
    audio = torch.from_numpy(np.stack(clips))  # [n, 1, N]
    return codec.encode(audio)


def train_tiny(codes: torch.Tensor, tables: torch.Tensor, text, steps: int, crop: int, seed: int):
    torch.manual_seed(seed)
    K = codes.shape[1]
    net = build_refiner(refiner_from_preset("tiny", n_codebooks=K, text_dim=text.shape[-1], d_model=64,
                                            n_layers=4, dilations=[1, 2, 4, 8]))
    net.set_codebooks(tables)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.0)
    sched = WarmupCosine(opt, 2e-3, max(1, steps // 20), steps, 0.05)
    g = np.random.default_rng(seed)
    B, T = 8, codes.shape[-1]
    mask = torch.ones(B, text.shape[1], dtype=torch.bool)
    losses = []
    net.train()
    for _ in range(steps):
        rows = g.integers(0, codes.shape[0], B)
        starts = g.integers(0, T - crop + 1, B)
        c = torch.stack([codes[r, :, s:s + crop] for r, s in zip(rows, starts)])
        x0 = net.normalise(net.latents(c[:, 1:], 1))
        sched.apply()
        loss = D.v_loss(net, x0, c[:, :1], text.expand(B, -1, -1), mask, torch.ones(B, crop, dtype=torch.bool))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss))
    return net.eval(), losses


def sampling_side(net, frames: int, steps: int, sampler: str, text_dim: int, audio_seconds: float):
    """A side of the protocol: one sample of ``frames`` frames in ``steps`` steps; returns seconds per audio second."""
    cond = torch.randint(0, 1024, (1, net.cfg.cond_codebooks, frames), generator=torch.Generator().manual_seed(0))
    text, mask = torch.randn(1, 12, text_dim), torch.ones(1, 12, dtype=torch.bool)

    def run() -> float:
        t0 = time.perf_counter()
        D.sample(net, cond, text, mask, torch.zeros_like(text), mask, D.SamplerConfig(steps, 3.0, sampler),
                 make_generators([0]))
        return (time.perf_counter() - t0) / audio_seconds

    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # 0.5 s: one 100-step sample of the 48.8M-parameter paper refiner costs about 10^12 FLOPs at that
    # length (CFG rows included), and every round samples 100 + 50 + 25 steps; the cost is linear in it.
    p.add_argument("--seconds", type=float, default=0.5, help="audio length of the timed samples")
    p.add_argument("--train-steps", type=int, default=600)
    p.add_argument("--clips", type=int, default=10, help="synthetic clips (the last 2 are held out)")
    p.add_argument("--clip-seconds", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tests: tiny sizes, still every code path")
    add_protocol_args(p, threads=2)
    args = p.parse_args(argv)
    begin(args)
    steps = (4, 2, 1) if args.quick else STEPS
    fps = 44100 / 512

    # --- speed ----------------------------------------------------------------------------------------
    frames = max(8, int(round(args.seconds * fps)))
    torch.manual_seed(0)
    paper = build_refiner(refiner_from_preset("paper" if not args.quick else "tiny", dropout=0.0)).eval()
    tiny = build_refiner(refiner_from_preset("tiny", text_dim=TEXT_DIM)).eval()
    audio_s = frames / fps
    sides = {f"{name}_{n}": sampling_side(net, frames, n, "ddpm", TEXT_DIM, audio_s)
             for name, net in (("paper", paper), ("tiny", tiny)) for n in steps}
    # warm-up: the cheapest step count of each network (allocator, thread pool; same shapes as the rest)
    print(f"warm-up: the {steps[-1]}-step sample of each network (the same shapes as the other step counts)", flush=True)
    rounds = alternate(sides, args.rounds, args.warmup, warm=[f"{name}_{steps[-1]}" for name in ("paper", "tiny")],
                       on_call=lambda i, name, s: print(f"  round {i + 1} {name} steps: {s:.4f} s per audio s", flush=True))
    speed = {(name, n): rounds.spread(f"{name}_{n}") for name in ("paper", "tiny") for n in steps}
    cost = {n: rounds.ratio(f"paper_{n}", f"paper_{steps[0]}") for n in steps[1:]}

    # --- quality ----------------------------------------------------------------------------------------
    from ssmttm.codec.dac import build_tiny_dac, load
    from ssmttm.tokens.ceiling import mel_distance
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        codec = load(build_tiny_dac(Path(tmp) / "dac_tiny.pth", seed=0), "cpu")
    clip_s = 3.0 if args.quick else args.clip_seconds
    n_clips = 3 if args.quick else args.clips
    codes = corpus(codec, n_clips, clip_s, args.seed)
    train, held = codes[:-2] if n_clips > 2 else codes, codes[-2:]
    text = torch.zeros(1, 4, 8)
    text[0, 0, 0] = 1.0  # one fixed prompt: the quality figure is about the codebooks, not the text
    net, losses = train_tiny(train, codec.codebook_tables(), text, 20 if args.quick else args.train_steps,
                             min(128, codes.shape[-1]), args.seed)
    ref_audio = codec.decode(held).numpy()[:, 0]
    k1_audio = codec.decode(held[:, :1]).numpy()[:, 0]
    sr = codec.sample_rate
    mel_k1 = float(np.mean([mel_distance(r, e, sr) for r, e in zip(ref_audio, k1_audio)]))
    B = held.shape[0]
    mask = torch.ones(B, text.shape[1], dtype=torch.bool)
    quality = {}
    for sampler in ("ddpm", "ddim"):
        for n in steps:
            t0 = time.perf_counter()
            x0 = D.sample(net, held[:, :1], text.expand(B, -1, -1), mask, text.expand(B, -1, -1), mask,
                          D.SamplerConfig(n, 3.0, sampler), make_generators(prompt_seeds(args.seed, [f"p{i}" for i in range(B)], "refiner")))
            dt = time.perf_counter() - t0
            rest = net.quantize(net.denormalise(x0))
            acc = float((rest == held[:, 1:]).float().mean())
            audio = codec.decode(torch.cat([held[:, :1], rest], 1)).numpy()[:, 0]
            mel = float(np.mean([mel_distance(r, e, sr) for r, e in zip(ref_audio, audio)]))
            quality[(sampler, n)] = (acc, mel, dt / (B * held.shape[-1] / fps))

    # --- table --------------------------------------------------------------------------------------
    print(f"refiner sampling, CPU, {audio_s:.2f} s of audio ({frames} frames), CFG batch of 2; "
          f"timings: median [min–max] over {args.rounds} rounds")
    for name in ("paper", "tiny"):
        for n in steps:
            print(figure_line(f"{name} refiner, {n} ddpm steps", speed[(name, n)], "s per audio s"))
    for n in steps[1:]:
        print(figure_line(f"paper refiner cost, {n} / {steps[0]} steps (per round)", cost[n]))
    print(f"{'steps':>5}  {'paper s/audio-s':>15}  {'tiny s/audio-s':>14}  "
          f"{'ddpm acc':>8}  {'ddpm mel':>8}  {'ddim acc':>8}  {'ddim mel':>8}  (timings: medians)")
    for n in steps:
        print(f"{n:>5}  {speed[('paper', n)].median:>15.3f}  {speed[('tiny', n)].median:>14.4f}  "
              f"{quality[('ddpm', n)][0]:>8.4f}  {quality[('ddpm', n)][1]:>8.4f}  "
              f"{quality[('ddim', n)][0]:>8.4f}  {quality[('ddim', n)][1]:>8.4f}")
    print(f"codebook 1 alone (no refiner): mel {mel_k1:.4f}; chance code accuracy {1 / 1024:.4f}")
    print(f"quality (acc, mel): one seeded run (seed {args.seed}); rounds would repeat the same numbers, so no spread")
    print(f"tiny refiner: {sum(p.numel() for p in net.parameters()):,} parameters, {len(losses)} steps, "
          f"v-loss first 20 {np.mean(losses[:20]):.4f} -> last 20 {np.mean(losses[-20:]):.4f}; "
          f"paper refiner: {sum(p.numel() for p in paper.parameters()) / 1e6:.2f}M parameters")
    kv = {f"s_per_audio_s_{n}": speed[("paper", n)] for n in steps}
    kv.update({f"cost_{n}_over_{steps[0]}": cost[n] for n in steps[1:]})
    kv.update({f"mel_{n}": f"{quality[('ddpm', n)][1]:.4f}" for n in steps})
    kv.update({f"acc_{n}": f"{quality[('ddpm', n)][0]:.4f}" for n in steps})
    kv.update({f"mel_ddim_{n}": f"{quality[('ddim', n)][1]:.4f}" for n in steps})
    kv.update(mel_codebook1_only=f"{mel_k1:.4f}", loss_first=f"{np.mean(losses[:20]):.4f}",
              loss_last=f"{np.mean(losses[-20:]):.4f}", rounds=args.rounds)
    print(figures_line(kv))
    return 0


if __name__ == "__main__":
    pin_allocator()
    sys.exit(main())
