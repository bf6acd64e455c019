"""Backbone training-step speed (fp32, CPU by default): Prefix SiMBA vs Cross Transformer at equal parameter count.

Run from the repository root: ``python bench/backbone_speed.py [--widths 256 512 --rounds 5 ...]``.

For each width (``--widths``, default 256 and 512): the real ssmttm.models LM of both variants
(``from_preset("paper", ...)`` with the width overridden, the pure-PyTorch Mamba2, dropout 0, the
paper's Mamba2 shape ratios: d_state = d_model / 2, headdim 64, expand 2, d_conv 4, scan chunk 256),
depths chosen so the two trainable counts match (both printed). One training step = forward +
backward + AdamW step on one sequence of ``--seq`` delayed steps (2588: 30 s of DAC frames) with a
32-token caption, batch 1 (``--batch``).

Protocol (bench/_protocol.py): machine line first; threads and allocator pinned; two warm-up steps of
every model; then ``--rounds`` rounds, each one step of every model in turn (SiMBA 256, Transformer
256, SiMBA 512, Transformer 512, ...), all in one process. ssm_over_transformer_d<W> = t(SiMBA) / t(Transformer)
per round, median [min–max]; target <= 1.0 (the paper's training-efficiency claim at equal size).
Per-token decoding cost (O(1) per token for the SSM) is bench/generation_speed.py's.

The last line: ``ssm_over_transformer_d256=... ssm_over_transformer_d512=...`` and each model's step
seconds and parameter counts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _protocol import add_protocol_args, alternate, begin, figure_line, figures_line, pin_allocator  # noqa: E402
from ssmttm.models import build_lm  # noqa: E402
from ssmttm.models.config import from_preset  # noqa: E402
from ssmttm.models.params import count_parameters  # noqa: E402

SSM, TRANSFORMER = "prefix-simba", "cross-transformer"


def configs(d_model: int, chunk_size: int, ssm_layers: int | None):
    """(Prefix SiMBA cfg, Cross Transformer cfg) of width d_model with matched parameter counts."""
    kw = dict(d_model=d_model, d_state=d_model // 2, headdim=64, chunk_size=chunk_size,
              n_heads=max(1, d_model // 64), dropout=0.0, mamba_backend="torch")

    def count(variant, n):
        return count_parameters(from_preset("paper", variant, n_layers=n, **kw))

    def match(n_ssm):  # (relative mismatch, transformer depth) closest to n_ssm SiMBA layers
        target = count(SSM, n_ssm)
        n_tr = min(range(1, 4 * n_ssm + 1), key=lambda n: abs(count(TRANSFORMER, n) - target))
        return abs(count(TRANSFORMER, n_tr) / target - 1), n_tr

    # Without --ssm-layers: the SiMBA depth (4..14) whose best Transformer partner has the closest
    # parameter count, so neither model gets a size advantage (13 vs 12 layers at d_model 256 and 512;
    # at small depths the embeddings and text projection leave a 5-7 % gap).
    n_ssm = ssm_layers or min(range(4, 15), key=lambda n: match(n)[0])
    return (from_preset("paper", SSM, n_layers=n_ssm, **kw),
            from_preset("paper", TRANSFORMER, n_layers=match(n_ssm)[1], **kw))


def sync(device: torch.device) -> None:
    """Wait for queued GPU work before reading the clock (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step_side(cfg, seq: int, text_len: int, batch: int, device: torch.device):
    """A side of the protocol: one training step (forward, backward, AdamW) per call, returning its seconds."""
    torch.manual_seed(0)
    lm = build_lm(cfg, device=device).train()
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=0.02, eps=1e-7)
    codes = torch.randint(0, 1024, (batch, cfg.n_codebooks, seq), device=device)
    text = torch.randn(batch, text_len, cfg.text_dim, device=device)
    mask = torch.ones(batch, text_len, dtype=torch.bool, device=device)

    def step() -> float:
        sync(device)
        t = time.perf_counter()
        loss = lm.loss(lm(codes, text, mask), codes)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        return time.perf_counter() - t

    return step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[256, 512], help="d_model of each pair")
    ap.add_argument("--ssm-layers", type=int, default=None,
                    help="Prefix SiMBA depth (default: the depth with the closest parameter match); the Transformer's is matched")
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--seq", type=int, default=2588, help="delayed steps per sequence (30 s = 2588)")
    ap.add_argument("--text-len", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the pure-PyTorch Mamba2 either way)")
    # Two warm-up steps: the allocator settles in two (bench/_protocol.py, ALLOCATOR_TUNABLES).
    add_protocol_args(ap, threads=2, warmup=2)
    args = ap.parse_args(argv)
    begin(args)
    device = torch.device(args.device)
    print(f"seq={args.seq}, text_len={args.text_len}, kappa=1, batch={args.batch}, fp32, chunk={args.chunk_size}, "
          f"device {device}")

    sides, figures = {}, {}
    for d in args.widths:
        ssm, tr = configs(d, args.chunk_size, args.ssm_layers)
        n_ssm, n_tr = count_parameters(ssm), count_parameters(tr)
        print(f"d_model={d}: {SSM} {ssm.n_layers} layers, {n_ssm / 1e6:.3f}M params; {TRANSFORMER} {tr.n_layers} "
              f"layers, {n_tr / 1e6:.3f}M params (ratio {n_ssm / n_tr:.4f})", flush=True)
        sides[f"ssm_d{d}"] = train_step_side(ssm, args.seq, args.text_len, args.batch, device)
        sides[f"transformer_d{d}"] = train_step_side(tr, args.seq, args.text_len, args.batch, device)
        figures[d] = (n_ssm, n_tr)

    rounds = alternate(sides, args.rounds, args.warmup,
                       on_call=lambda i, name, s: print(f"  round {i + 1} {name}: {s:.3f} s", flush=True))
    last = {}
    for d in args.widths:
        a, b = rounds.spread(f"ssm_d{d}"), rounds.spread(f"transformer_d{d}")
        ratio = rounds.ratio(f"ssm_d{d}", f"transformer_d{d}")
        print(figure_line(f"train step {SSM} d{d}", a, "s"))
        print(figure_line(f"train step {TRANSFORMER} d{d}", b, "s"))
        print(figure_line(f"ssm / transformer d{d} (per round)", ratio))
        last[f"ssm_over_transformer_d{d}"] = ratio
    for d in args.widths:
        last[f"ssm_step_s_d{d}"] = rounds.spread(f"ssm_d{d}")
        last[f"transformer_step_s_d{d}"] = rounds.spread(f"transformer_d{d}")
        last[f"params_ratio_d{d}"] = figures[d][0] / figures[d][1]
    last["seq"] = args.seq
    last["batch"] = args.batch
    last["rounds"] = args.rounds
    print(figures_line(last))
    return 0


if __name__ == "__main__":
    pin_allocator()
    sys.exit(main())
