"""Generation speed with cached decoding: Prefix SiMBA vs Cross Transformer, tokens/s and per-token latency.

Run from the repository root: ``python bench/generation_speed.py [--d-model 128 --batches 1 4 16 ...]``.

Models: the real ssmttm.models LM of both variants at a small width (``--d-model``, default 128;
the paper's Mamba2 shape ratios, pure-PyTorch Mamba2, dropout 0, random init, fp32 on ``--device``), depths
matched in parameter count as in bench/backbone_speed.py (13 vs 12 layers unless ``--ssm-layers``).
Decoding is the ``generate`` stage's cached loop (:func:`ssmttm.generate.generate.generate_cached`):
the prompts and as many empty prompts in ONE batch through the decoding cache, the config's sampling
recipe (CFG 3.0, temperature 1.2, top-k 250), per-row seeds from :func:`ssmttm.rng.prompt_seeds`.
Each token is timed alone: ``LM.step`` plus guidance and sampling (see :func:`lockstep`), with the
models in LOCKSTEP, token by token, so both sides of every ratio are measured at the same moments.
(Timed as one whole run per side, the batch-1 ratios moved by more than 10 % between two runs on the
2-core build machine: at d_model 128 a token takes a few milliseconds, mostly Python and sampling,
and the machine's drift between two runs of a second or more was larger than the difference.)

(1) Throughput: ``--n-tokens`` frames for ``--batches`` prompts at once (1, 4, 16; each prompt is 2
    rows with CFG), from a freshly prefilled cache; tokens/s = prompts x frames / the summed token
    times (kappa 1: a frame is one token).
(2) Per-token latency at positions ``--positions`` (100, 1000, 2500) of one prompt: from the cache
    of one decoding run copied at each position, ``--window`` tokens each, all positions and both
    models interleaved; the median over the window. The SSM's cost per token is O(1) in the
    position; the Transformer's KV cache grows with it. Reported per model, as SSM / Transformer
    at each position, and as each model's growth from the first position to the last (per round).

Correctness first: a greedy run (top-k 1) of both models through the cached path and the authors'
full-recompute path (:func:`generate_naive`) must give the same tokens.

Protocol (bench/_protocol.py): machine line first, threads pinned, one warm-up call of every side,
then ``--rounds`` rounds in one process, each round one lockstep call per batch size and one for
the latencies. Ratios are per round (the two figures of one lockstep call).
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
from ssmttm.constants import SPECIAL_TOKEN  # noqa: E402
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


def lockstep(lms: dict, batch: int, positions: tuple[int, ...], window: int, text_len: int, sampling, seed: int):
    """A side that times every model at every position in LOCKSTEP; per call it returns
    ``{(model, position): [seconds of each of the window's tokens]}``.

    Set-up, untimed and once: ``batch`` prompts decoded by each model through its cache, with their
    empty prompts in the same batch (:func:`ssmttm.generate.generate.generate_cached`'s layout and
    recipe: CFG, temperature, top-k, per-row seeds), the cache copied when it reaches each position
    (0: just prefilled). Per call: a fresh copy of every (model, position) cache, then ``window``
    tokens of each, interleaved token by token over all of them (model A at 100, B at 100, A at
    1000, ..., then the next token of each), each token timed alone: ``LM.step`` on the previous
    token plus the guidance and sampling of the next (the work of one step of
    :func:`ssmttm.generate.generate.decode_pattern`, without its bookkeeping of the output sequence).

    Why lockstep: timed as one long run per model, a figure at position 100 and one at 2500 (or one
    model's and the other's) came from different stretches of wall-clock time, and at d_model 128 (a
    few ms per token, mostly Python and sampling) a shared machine's drift between stretches moved
    the ratios by more than 10 % between two runs; interleaved per token, every figure sees the same drift."""
    import copy

    from ssmttm.generate import sampling as smp
    from ssmttm.generate.generate import pad_states

    cond, ids, uncond = prompts(next(iter(lms.values())).cfg.text_dim, text_len, batch)
    seeds = prompt_seeds(seed, ids)

    def next_token(lm, cache, tok, gens):
        logits = lm.step(torch.cat([tok, tok], dim=0), cache)  # [2B, K, 1024]: the prompts, then the empty ones
        logits = smp.cfg_combine(logits[:batch].float(), logits[batch:].float(), sampling.cfg_scale)
        return smp.sample(logits, sampling.temperature, sampling.top_k, gens)  # [B, K]

    snapshots = {}  # (model, position) -> (cache at that position, the token to feed)
    with torch.no_grad():
        for name, lm in lms.items():
            device = next(lm.parameters()).device
            text, mask = pad_states(list(cond) + [uncond] * batch, device)
            cache = lm.allocate_cache(2 * batch, text, mask)
            gens = smp.make_generators(seeds, device)
            lm.prefill(cache)
            # the first token fed is the BOS column, as in decode_pattern
            tok = torch.full((batch, lm.cfg.n_codebooks), SPECIAL_TOKEN, dtype=torch.long, device=device)
            for t in range(max(positions) + 1):
                if t in positions:
                    snapshots[name, t] = (copy.deepcopy(cache), tok.clone())
                tok = next_token(lm, cache, tok, gens)

    def run() -> dict:
        slots = []
        for (name, p), (cache, tok) in snapshots.items():
            lm = lms[name]
            device = next(lm.parameters()).device
            slots.append([(name, p), lm, copy.deepcopy(cache), tok, smp.make_generators(seeds, device), device, []])
        with torch.no_grad():
            for _ in range(window):
                for slot in slots:
                    _, lm, cache, tok, gens, device, times = slot
                    t0 = time.perf_counter()
                    slot[3] = next_token(lm, cache, tok, gens)
                    sync(device)
                    times.append(time.perf_counter() - t0)
        return {slot[0]: slot[6] for slot in slots}

    return run


def throughput_side(lms: dict, batch: int, n_tokens: int, text_len: int, sampling, seed: int):
    """Per call: ``n_tokens`` frames of ``batch`` prompts from the start, every model in lockstep;
    returns ``{model: tokens/s}`` (prompts x frames / the sum of the tokens' times)."""
    run = lockstep(lms, batch, (0,), n_tokens, text_len, sampling, seed)
    return lambda: {name: batch * n_tokens / sum(times) for (name, _), times in run().items()}


def latency_side(lms: dict, positions: tuple[int, ...], window: int, text_len: int, sampling, seed: int):
    """Per call: ``{(model, position): median seconds per token over window tokens}``, one prompt, lockstep."""
    run = lockstep(lms, 1, positions, window, text_len, sampling, seed)
    return lambda: {key: float(statistics.median(times)) for key, times in run().items()}


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
        shown = ", ".join(f"{k[0]} at {k[1]}: {1e3 * v:.2f} ms" if isinstance(k, tuple) else f"{k}: {v:.1f} tokens/s"
                          for k, v in r.items())
        print(f"  round {i + 1} {name}: {shown}", flush=True)

    sides = {f"b{b}": throughput_side(models, b, args.n_tokens, args.text_len, sampling, args.seed)
             for b in args.batches}
    thr = alternate(sides, args.rounds, args.warmup, on_call=progress)
    positions = tuple(args.positions)
    # Decoding each model to the last position (the caches each round starts from) also warms them up.
    print(f"latency runs: every model at every position in lockstep, token by token, from caches decoded once "
          f"to positions {', '.join(map(str, positions))}", flush=True)
    lat = alternate({"lockstep": latency_side(models, positions, args.window, args.text_len, sampling, args.seed)},
                    args.rounds, args.warmup, on_call=progress)
    last: dict = {}
    print(f"throughput, {args.n_tokens} frames per call (tokens/s = prompts x frames / s):")
    for b in args.batches:
        for n in models:
            s = thr.spread(f"b{b}", n)
            print("  " + figure_line(f"{n} batch {b}", s, "tokens/s"))
            last[f"tok_s_{n}_b{b}"] = s
        r = thr.ratio(f"b{b}", f"b{b}", "ssm", "transformer")
        print("  " + figure_line(f"ssm / transformer tokens/s, batch {b} (per round)", r))
        last[f"ssm_over_transformer_tok_s_b{b}"] = r
    print(f"per-token latency, batch 1, lockstep (median over {args.window} tokens from each position):")
    for n in models:
        for pos in positions:
            ms = lat.spread("lockstep", (n, pos)).scaled(1e3)
            print("  " + figure_line(f"{n} at {pos}", ms, "ms"))
            last[f"lat_ms_{n}_p{pos}"] = ms
    for pos in positions:
        r = lat.ratio("lockstep", "lockstep", ("ssm", pos), ("transformer", pos))
        print("  " + figure_line(f"ssm / transformer latency at {pos} (per round)", r))
        last[f"ssm_over_transformer_latency_p{pos}"] = r
    first, end = positions[0], positions[-1]
    for n in models:
        r = lat.ratio("lockstep", "lockstep", (n, end), (n, first))
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
