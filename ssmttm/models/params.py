"""``python -m ssmttm params``: trainable LM parameters of every preset x variant.

The models are built with the real classes on the meta device (no memory, no initialisation), so
the whole paper table takes about a second. Counts exclude the frozen T5 encoder (docs/reference.md
§1). Where the paper states a count (Prefix SiMBA 281.04M / 72.43M, Cross Transformer
305.08M / 78.44M) it is printed beside ours with the relative difference.

Output (stdout, and ``--out`` as a TSV) columns: preset, variant, n_layers, d_model, n_codebooks,
params (int), params_M (2 decimals), paper_M (empty when the paper gives none), rel_diff_pct.
"""

from __future__ import annotations

import argparse
import sys

from ssmttm.models import VARIANTS

COLUMNS = ("preset", "variant", "n_layers", "d_model", "n_codebooks", "params", "params_M", "paper_M",
           "rel_diff_pct")


def count_parameters(cfg, trainable_only: bool = True) -> int:
    """Trainable parameters of the LM of ``cfg`` (an LMConfig), built on the meta device."""
    import dataclasses

    import torch

    from ssmttm.models.lm import LM

    # The pure-PyTorch Mamba2 has mamba_ssm's parameter names and shapes, so counting never needs CUDA.
    cfg = dataclasses.replace(cfg, mamba_backend="torch")
    with torch.device("meta"):
        model = LM(cfg)
    return model.num_parameters(trainable_only=trainable_only)


def params_table(presets: list[str], variants: list[str], n_codebooks: int = 1) -> list[dict]:
    """One row per preset x variant (columns :data:`COLUMNS`)."""
    from ssmttm.models.config import PAPER_PARAMS_M, from_preset

    rows = []
    for preset in presets:
        for variant in variants:
            cfg = from_preset(preset, variant, n_codebooks=n_codebooks)
            n = count_parameters(cfg)
            paper = PAPER_PARAMS_M.get((preset, variant)) if n_codebooks == 1 else None
            rows.append({
                "preset": preset, "variant": variant, "n_layers": cfg.n_layers, "d_model": cfg.d_model,
                "n_codebooks": n_codebooks, "params": n, "params_M": f"{n / 1e6:.2f}",
                "paper_M": "" if paper is None else f"{paper:.2f}",
                "rel_diff_pct": "" if paper is None else f"{100 * (n / 1e6 - paper) / paper:+.3f}",
            })
    return rows


def format_table(rows: list[dict]) -> str:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in COLUMNS) for r in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    from ssmttm.models.config import PRESETS

    p = argparse.ArgumentParser(prog="ssmttm params", description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=list(PRESETS), help=f"of {list(PRESETS)} (default: all)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"of {list(VARIANTS)}")
    p.add_argument("--n-codebooks", type=int, default=1, help="kappa, codebooks modelled (default 1)")
    p.add_argument("--out", default=None, help="also write the table here (.tsv)")
    args = p.parse_args(argv)
    bad = [x for x in args.presets if x not in PRESETS] + [x for x in args.variants if x not in VARIANTS]
    if bad:
        p.error(f"unknown preset/variant {bad}; presets: {list(PRESETS)}; variants: {list(VARIANTS)}")
    if args.n_codebooks < 1:
        p.error("--n-codebooks must be >= 1")
    rows = params_table(args.presets, args.variants, args.n_codebooks)
    print(format_table(rows))
    if args.out:
        import pandas as pd

        from ssmttm.io import write_table

        write_table(args.out, pd.DataFrame(rows, columns=list(COLUMNS)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
