"""Backbone speed on CPU (fp32), measured side by side in one run.

Run from the repository root: ``python bench/backbone_speed.py [--d-model 256 --threads 2 ...]``.

(1) Training step (forward + backward + AdamW step) of Prefix SiMBA vs Cross Transformer at equal
    parameter count: the same width, depths chosen so the two trainable counts match within 5 %
    (both printed), one 30 s sequence (2588 delayed steps, kappa = 1, batch 1) and a 32-token
    caption; median of ``--steps`` steps after one warm-up step.
    ssm_over_transformer = t(SiMBA) / t(Transformer); target <= 1.0.
(2) Per-token decode time with caches (``LM.step``) at positions ~100 and ~2000 (median over
    ``--window`` consecutive tokens), for the same two models.
    decode_flatness = t(2000) / t(100) of Prefix SiMBA; target <= 1.3 (O(1) per token). The
    Transformer's ratio is printed for contrast (its KV cache grows with the position).

Both models are the real ssmttm.models.lm.LM with the pure-PyTorch Mamba2 (CPU), dropout 0 and the
paper's Mamba2 shape ratios (d_state = d_model / 2, headdim 64, expand 2, d_conv 4). The scan chunk
is 256 as in the paper unless ``--chunk-size`` says otherwise. The last line holds ``key=value`` pairs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from ssmttm.models.config import from_preset  # noqa: E402
from ssmttm.models.lm import LM  # noqa: E402
from ssmttm.models.params import count_parameters  # noqa: E402


def configs(d_model: int, chunk_size: int, ssm_layers: int | None):
    """(Prefix SiMBA cfg, Cross Transformer cfg) of width d_model with matched parameter counts."""
    kw = dict(d_model=d_model, d_state=d_model // 2, headdim=64, chunk_size=chunk_size,
              n_heads=max(1, d_model // 64), dropout=0.0, mamba_backend="torch")
    def count(variant, n):
        return count_parameters(from_preset("paper", variant, n_layers=n, **kw))

    def match(n_ssm):  # (relative mismatch, transformer depth) closest to n_ssm SiMBA layers
        target = count("prefix-simba", n_ssm)
        n_tr = min(range(1, 4 * n_ssm + 1), key=lambda n: abs(count("cross-transformer", n) - target))
        return abs(count("cross-transformer", n_tr) / target - 1), n_tr

    # Without --ssm-layers: the SiMBA depth (4..14) whose best Transformer partner has the closest
    # parameter count, so neither model gets a size advantage (at d_model 256: 13 vs 12 layers).
    n_ssm = ssm_layers or min(range(4, 15), key=lambda n: match(n)[0])
    return (from_preset("paper", "prefix-simba", n_layers=n_ssm, **kw),
            from_preset("paper", "cross-transformer", n_layers=match(n_ssm)[1], **kw))


def train_step_times(cfg, seq: int, text_len: int, steps: int) -> list[float]:
    torch.manual_seed(0)
    lm = LM(cfg).train()
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=0.02, eps=1e-7)
    codes = torch.randint(0, 1024, (1, cfg.n_codebooks, seq))
    text = torch.randn(1, text_len, cfg.text_dim)
    mask = torch.ones(1, text_len, dtype=torch.bool)
    times = []
    for _ in range(steps + 1):  # the first is warm-up
        t = time.perf_counter()
        loss = lm.loss(lm(codes, text, mask), codes)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return times[1:]


@torch.no_grad()
def decode_times(cfg, positions: tuple[int, ...], window: int, text_len: int) -> dict[int, float]:
    """Median seconds per LM.step over ``window`` tokens starting at each position."""
    torch.manual_seed(0)
    lm = LM(cfg).eval()
    text = torch.randn(1, text_len, cfg.text_dim)
    cache = lm.allocate_cache(1, text, torch.ones(1, text_len, dtype=torch.bool))
    lm.prefill(cache)
    tok = torch.randint(0, 1024, (1, cfg.n_codebooks, 1))
    per_pos: dict[int, list[float]] = {p: [] for p in positions}
    for t in range(max(positions) + window):
        t0 = time.perf_counter()
        lm.step(tok, cache)
        dt = time.perf_counter() - t0
        for p in positions:
            if p <= t < p + window:
                per_pos[p].append(dt)
    return {p: statistics.median(v) for p, v in per_pos.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--ssm-layers", type=int, default=None,
                    help="Prefix SiMBA depth (default: the depth with the closest parameter match); the Transformer's is matched")
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--seq", type=int, default=2588, help="delayed steps per sequence (30 s, kappa 4 = 2588)")
    ap.add_argument("--text-len", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--window", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ssm, tr = configs(args.d_model, args.chunk_size, args.ssm_layers)
    n_ssm, n_tr = count_parameters(ssm), count_parameters(tr)
    print(f"width d_model={args.d_model}, seq={args.seq}, text_len={args.text_len}, kappa=1, batch=1, "
          f"fp32, threads={args.threads}, chunk={args.chunk_size}")
    print(f"prefix-simba: {ssm.n_layers} layers, {n_ssm / 1e6:.3f}M params; cross-transformer: {tr.n_layers} "
          f"layers, {n_tr / 1e6:.3f}M params (ratio {n_ssm / n_tr:.3f})")

    t_train = {}
    for name, cfg in (("prefix-simba", ssm), ("cross-transformer", tr)):
        times = train_step_times(cfg, args.seq, args.text_len, args.steps)
        t_train[name] = statistics.median(times)
        print(f"train step  {name:<18} median {t_train[name]:.3f} s  ({', '.join(f'{t:.3f}' for t in times)})")

    positions = (100, 2000)
    flat = {}
    for name, cfg in (("prefix-simba", ssm), ("cross-transformer", tr)):
        d = decode_times(cfg, positions, args.window, args.text_len)
        flat[name] = d[2000] / d[100]
        print(f"decode step {name:<18} t(100) {1e3 * d[100]:.2f} ms  t(2000) {1e3 * d[2000]:.2f} ms  "
              f"ratio {flat[name]:.3f}")

    ratio = t_train["prefix-simba"] / t_train["cross-transformer"]
    print(f"transformer_decode_flatness={flat['cross-transformer']:.3f}")
    print(f"ssm_over_transformer={ratio:.3f} decode_flatness={flat['prefix-simba']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
