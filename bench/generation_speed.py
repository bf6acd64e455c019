"""Generation speed with cached decoding: Prefix SiMBA vs Cross Transformer, tokens/s and per-token latency.

Run from the repository root: ``python bench/generation_speed.py [--d-model 128 --batches 1 4 16 ...]``.

Models: the real ssmttm.models LM of both variants at a small width (``--d-model``, default 128;
the paper's Mamba2 shape ratios, pure-PyTorch Mamba2, dropout 0, random init, fp32 on ``--device``), depths
matched in parameter count as in bench/backbone_speed.py (13 vs 12 layers unless ``--ssm-layers``).
Decoding is :func:`ssmttm.generate.generate.generate_cached` (the ``generate`` stage's loop): the
prompts and as many empty prompts in ONE batch through the decoding cache, the config's sampling
recipe (CFG 3.0, temperature 1.2, top-k 250), per-row seeds from :func:`ssmttm.rng.prompt_seeds`.

(1) Throughput: ``--n-tokens`` frames for ``--batches`` prompts at once (1, 4, 16; each prompt is 2
    rows with CFG); tokens/s = prompts x frames / seconds (kappa 1: a frame is one token).
(2) Per-token latency at positions ``--positions`` (100, 1000, 2500) of one prompt: the time
    between consecutive ``LM.step`` calls of one generation run (the step and the sampling of one
    token), median over ``--window`` consecutive tokens from each position. The SSM's cost per token
    is O(1) in the position; the Transformer's KV cache grows with it. Reported per model, with its
    growth from the first position to the last (per round); not as an SSM / Transformer ratio: at
    d_model 128 both take a few milliseconds per token, mostly Python and sampling, and that ratio
    moved by more than 10 % between two runs on the 2-core build machine (a figure that flips is not
    a result), while each model's growth agreed.

Correctness first: a greedy run (top-k 1) of both models through the cached path and the authors'
full-recompute path (:func:`generate_naive`) must give the same tokens.

Protocol (bench/_protocol.py): machine line first, threads pinned, one warm-up call of every side,
then ``--rounds`` rounds alternating the sides in one process (SiMBA then Transformer at each
batch size; then the latency runs the same way, warmed up by the throughput rounds). Ratios
SiMBA / Transformer are per round.
The last line holds ``key=value`` figures (medians).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _protocol import add_protocol_args, alternate, begin, figure_line, figures_line, pin_allocator  # noqa: E402
from backbone_speed import SSM, TRANSFORMER, configs, sync  # noqa: E402
from ssmttm import settings  # noqa: E402
from ssmttm.generate.generate import generate_cached, generate_naive  # noqa: E402
from ssmttm.generate.sampling import SamplingConfig  # noqa: E402
from ssmttm.models import build_lm  # noqa: E402
from ssmttm.rng import prompt_seeds  # noqa: E402

NAMES = {SSM: "ssm", TRANSFORMER: "transformer"}


def prompts(text_dim: int, text_len: int, batch: int, seed: int = 0):
    """``batch`` random 'T5' captions [text_len, D], their ids, and the empty prompt (one </s> state) [1, D]."""
    rng = np.random.default_rng(seed)
    cond = [rng.standard_normal((text_len, text_dim)).astype(np.float32) for _ in range(batch)]
    return cond, [f"p{i}" for i in range(batch)], rng.standard_normal((1, text_dim)).astype(np.float32)


def throughput_side(lm, batch: int, n_tokens: int, text_len: int, sampling, seed: int):
    """One call: generate ``n_tokens`` frames for ``batch`` prompts; returns tokens/s (prompts x frames / s)."""
    cond, ids, uncond = prompts(lm.cfg.text_dim, text_len, batch)
    seeds = prompt_seeds(seed, ids)

    device = next(lm.parameters()).device

    def run() -> float:
        sync(device)
        t0 = time.perf_counter()
        generate_cached(lm, cond, uncond, n_tokens, sampling, seeds)
        sync(device)
        return batch * n_tokens / (time.perf_counter() - t0)

    return run


def latency_side(lm, positions: tuple[int, ...], window: int, text_len: int, sampling, seed: int):
    """One call: one prompt generated past the last position; returns {position: median seconds per token
    over ``window`` tokens from it}, a token's time being from one ``LM.step`` call to the next (the
    sampling reads every token back to the host, so on a GPU each step has finished by the next call)."""
    cond, ids, uncond = prompts(lm.cfg.text_dim, text_len, 1)
    seeds = prompt_seeds(seed, ids)
    n_tokens = max(positions) + window + 2

    def run() -> dict:
        stamps = []
        step = lm.step

        def timed_step(*a, **k):
            stamps.append(time.perf_counter())
            return step(*a, **k)

        lm.step = timed_step  # an instance attribute: generate_cached calls lm.step(...)
        try:
            generate_cached(lm, cond, uncond, n_tokens, sampling, seeds)
        finally:
            del lm.step
        per_token = np.diff(np.asarray(stamps))  # per_token[j]: from step j (feeds position j) to step j + 1
        return {p: float(statistics.median(per_token[p:p + window])) for p in positions}

    return run


def greedy_equal(lm, n_tokens: int, text_len: int, sampling, seed: int) -> bool:
    cond, ids, uncond = prompts(lm.cfg.text_dim, text_len, 2)
    greedy = SamplingConfig(sampling.cfg_scale, 0.0, 1)
    a = generate_cached(lm, cond, uncond, n_tokens, greedy, prompt_seeds(seed, ids))
    b = generate_naive(lm, cond, uncond, n_tokens, greedy, prompt_seeds(seed, ids))
    return bool(torch.equal(a, b))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--ssm-layers", type=int, default=None, help="SiMBA depth (default: closest parameter match)")
    p.add_argument("--kappa", type=int, default=1, help="codebooks modelled (1: the two-stage system's LM)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16], help="prompts per generation call")
    p.add_argument("--n-tokens", type=int, default=128, help="frames per throughput call")
    p.add_argument("--positions", type=int, nargs="+", default=[100, 1000, 2500], help="latency positions")
    p.add_argument("--window", type=int, default=64, help="tokens per latency position (their median)")
    p.add_argument("--text-len", type=int, default=24, help="prompt length in T5 tokens")
    p.add_argument("--greedy-tokens", type=int, default=32, help="frames of the greedy cached == naive check")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda (the pure-PyTorch Mamba2 either way)")
    add_protocol_args(p, threads=2, rounds=7)
    args = p.parse_args(argv)
    begin(args)

    recipe = settings.defaults(("generate",))  # the config's sampling recipe (CFG 3.0, temperature 1.2, top-k 250)
    sampling = SamplingConfig(recipe["cfg_scale"], recipe["temperature"], recipe["top_k"])
    torch.manual_seed(0)
    models = {}
    for cfg in configs(args.d_model, 256, args.ssm_layers):
        cfg = dataclasses.replace(cfg, n_codebooks=args.kappa)
        models[NAMES[cfg.variant]] = build_lm(cfg, device=torch.device(args.device)).eval()
    print(f"models: d_model={args.d_model}, kappa={args.kappa}, {args.device} fp32; "
          + "; ".join(f"{m.cfg.variant} {m.cfg.n_layers} layers {m.num_parameters() / 1e6:.3f}M params"
                      for m in models.values())
          + f"; CFG {sampling.cfg_scale}, temperature {sampling.temperature}, top-k {sampling.top_k}", flush=True)

    equal = {n: greedy_equal(m, args.greedy_tokens, args.text_len, sampling, args.seed) for n, m in models.items()}
    print(f"greedy check (top-k 1, {args.greedy_tokens} frames, 2 prompts): cached == naive token for token: "
          + ", ".join(f"{n} {e}" for n, e in equal.items()), flush=True)

    def progress(i, name, r):
        shown = (", ".join(f"at {k}: {1e3 * v:.2f} ms" for k, v in r.items()) if isinstance(r, dict)
                 else f"{r:.1f} tokens/s")
        print(f"  round {i + 1} {name}: {shown}", flush=True)

    sides = {f"{n}_b{b}": throughput_side(m, b, args.n_tokens, args.text_len, sampling, args.seed)
             for b in args.batches for n, m in models.items()}
    thr = alternate(sides, args.rounds, args.warmup, on_call=progress)
    positions = tuple(args.positions)
    lat_sides = {f"{n}_lat": latency_side(m, positions, args.window, args.text_len, sampling, args.seed)
                 for n, m in models.items()}
    # The throughput rounds above ran the same models through the same loop: they are the latency runs'
    # warm-up (a run to position 2500 takes about 20 s per model on 2 CPU cores).
    print("latency runs: warmed up by the throughput rounds above (same models, same decoding loop)", flush=True)
    lat = alternate(lat_sides, args.rounds, args.warmup, warm=(), on_call=progress)

    last: dict = {}
    print(f"throughput, {args.n_tokens} frames per call (tokens/s = prompts x frames / s):")
    for b in args.batches:
        for n in models:
            s = thr.spread(f"{n}_b{b}")
            print("  " + figure_line(f"{n} batch {b}", s, "tokens/s"))
            last[f"tok_s_{n}_b{b}"] = s
        r = thr.ratio(f"ssm_b{b}", f"transformer_b{b}")
        print("  " + figure_line(f"ssm / transformer tokens/s, batch {b} (per round)", r))
        last[f"ssm_over_transformer_tok_s_b{b}"] = r
    print(f"per-token latency, batch 1 (median over {args.window} tokens from each position):")
    for n in models:
        for pos in positions:
            ms = lat.spread(f"{n}_lat", pos).scaled(1e3)
            print("  " + figure_line(f"{n} at {pos}", ms, "ms"))
            last[f"lat_ms_{n}_p{pos}"] = ms
    first, end = positions[0], positions[-1]
    for n in models:
        r = lat.ratio(f"{n}_lat", f"{n}_lat", end, first)
        print("  " + figure_line(f"{n} latency at {end} / at {first} (per round)", r))
        last[f"{n}_latency_{end}_over_{first}"] = r
    last["greedy_equal"] = str(all(equal.values()))
    last["d_model"] = args.d_model
    last["rounds"] = args.rounds
    print(figures_line(last))
    return 0 if all(equal.values()) else 1


if __name__ == "__main__":
    pin_allocator()
    sys.exit(main())
