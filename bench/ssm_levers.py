"""What the levers on the CPU SSM training step buy: one Mamba2 layer, forward + backward, at L 2588.

Run from the repository root: ``python bench/ssm_levers.py [--widths 256 512 --rounds 5 ...]``.

bench/backbone_speed.py measures the whole Prefix SiMBA step against the Cross Transformer; this
bench isolates the part the SSM adds, one pure-PyTorch Mamba2 layer (ssmttm.models.mamba2) of the
same shapes as that bench's pair (d_state = d_model / 2, headdim 64, expand 2, d_conv 4), forward and
backward of one sequence of ``--seq`` steps, and times the levers issue 14 named, side by side:

- ``chunk<Q>``: the SSD scan's tile on CPU (``CPU_SCAN_CHUNK``, default 64): 32, 64, 128, 256;
- ``compiled``: the chunked scan (``ssd_chunked``) through ``torch.compile`` (CPU inductor, static
  shapes) at the default tile; its one-off compile time is printed apart. When torch.compile cannot
  run here (no C++ compiler, an unsupported platform) the side is left out and the output says why.

Each side is compared per round with the default (``chunk64``, eager): ``<side>_over_default_d<W>``
below 1 is a lever that helps. The causal conv and the copies around the scan are already the
cheaper CPU forms (Mamba2.causal_conv; the inter-chunk recurrence as one pass into preallocated
buffers), so they are not sides here. The last line holds every ratio and the default's seconds.
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
from ssmttm.models import mamba2 as M  # noqa: E402

DEFAULT = "chunk64"
CHUNKS = (32, 64, 128, 256)


def layer_side(layer: M.Mamba2, u: torch.Tensor, chunk: int, scan):
    """A side: forward + backward of ``layer`` on ``u`` with the CPU tile ``chunk`` and scan function ``scan``."""

    def side() -> float:
        saved = M.CPU_SCAN_CHUNK, M.ssd_chunked
        M.CPU_SCAN_CHUNK, M.ssd_chunked = chunk, scan
        try:
            t = time.perf_counter()
            layer(u).sum().backward()
            return time.perf_counter() - t
        finally:
            M.CPU_SCAN_CHUNK, M.ssd_chunked = saved
            layer.zero_grad(set_to_none=True)
            u.grad = None

    return side


def compiled_scan(layer: M.Mamba2, u: torch.Tensor):
    """(torch.compile'd ssd_chunked, compile seconds) or (None, the reason it cannot run here)."""
    eager = M.ssd_chunked
    try:
        scan = torch.compile(eager, dynamic=False)
        t = time.perf_counter()
        layer_side(layer, u, M.CPU_SCAN_CHUNK, scan)()  # the first call compiles forward and backward
        return scan, time.perf_counter() - t
    except Exception as exc:  # no compiler, unsupported platform: a lever that is not available here
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[256, 512], help="d_model of the layer")
    ap.add_argument("--seq", type=int, default=2588, help="steps per sequence (30 s of DAC frames = 2588)")
    ap.add_argument("--no-compile", action="store_true", help="leave the torch.compile side out")
    add_protocol_args(ap, threads=2, warmup=2)
    args = ap.parse_args(argv)
    begin(args)
    print(f"one Mamba2 layer, fp32, batch 1, seq={args.seq}, forward + backward; default: eager scan, "
          f"CPU tile {M.CPU_SCAN_CHUNK}", flush=True)

    sides, last = {}, {}
    for d in args.widths:
        torch.manual_seed(0)
        layer = M.Mamba2(d, d_state=d // 2, headdim=64, chunk_size=256)
        u = torch.randn(1, args.seq, d, requires_grad=True)
        for q in CHUNKS:
            sides[f"chunk{q}_d{d}"] = layer_side(layer, u, q, M.ssd_chunked)
        if not args.no_compile:
            scan, info = compiled_scan(layer, u)
            if scan is None:
                print(f"d_model={d}: torch.compile side left out ({info})", flush=True)
            else:
                print(f"d_model={d}: torch.compile of ssd_chunked: first call (compile) {info:.1f} s", flush=True)
                sides[f"compiled_d{d}"] = layer_side(layer, u, M.CPU_SCAN_CHUNK, scan)
                last[f"compile_s_d{d}"] = info

    rounds = alternate(sides, args.rounds, args.warmup,
                       on_call=lambda i, name, s: print(f"  round {i + 1} {name}: {s:.3f} s", flush=True))
    for d in args.widths:
        base = f"{DEFAULT}_d{d}"
        print(figure_line(f"layer fwd+bwd {DEFAULT} (default) d{d}", rounds.spread(base), "s"))
        last[f"default_s_d{d}"] = rounds.spread(base)
        for name in [n for n in sides if n.endswith(f"_d{d}") and n != base]:
            side = name.rsplit("_d", 1)[0]
            print(figure_line(f"layer fwd+bwd {side} d{d}", rounds.spread(name), "s"))
            ratio = rounds.ratio(name, base)
            print(figure_line(f"{side} / {DEFAULT} d{d} (per round)", ratio))
            last[f"{side}_over_default_d{d}"] = ratio
    last["seq"] = args.seq
    last["rounds"] = args.rounds
    print(figures_line(last))
    return 0


if __name__ == "__main__":
    pin_allocator()
    sys.exit(main())
