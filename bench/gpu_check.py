"""One-call GPU check: what only a CUDA machine can show, in one run of under 10 minutes on one H100.

Run from the repository root: ``python bench/gpu_check.py`` (``make gpu-check``); on a machine
without CUDA, ``python bench/gpu_check.py --device cpu --size tiny`` runs every part that can run
there and names the ones it skips. ``--parts parity,train,generate,refiner`` picks parts (each runs
alone); ``--size paper`` (default) or ``tiny`` (the test preset, seconds on a CPU).

Parts, each its own function (``PARTS``):

1. ``parity``: the pure-PyTorch Mamba2 (ssmttm.models.mamba2.Mamba2) against the mamba_ssm kernel
   path (the adapter ``make_mamba2(backend="mamba_ssm")`` returns) at the preset's Mamba2 width
   (paper: d_model 1024, d_state 512, d_conv 4, expand 2, headdim 64, ngroups 1, chunk 256), both
   holding the same weights, all in fp32 (weights, inputs, states; TF32 off for torch's own matmuls
   and cuDNN while it runs). Compared: forward outputs (training path: 2 sequences of 2588 steps,
   not a multiple of the chunk), the gradients of the input and of every parameter for one random
   cotangent, the left-padded forward (the adapter's ``seq_idx`` path), and decoding: a prefill with
   a cache (outputs and the conv / SSM states it leaves), then single-token ``step`` calls, once
   from each side's own prefill and once with the kernel stepping from OUR state (the step kernels
   alone). Each is reported as ``max |kernel - ours|`` (abs) and that divided by ``max |ours|``
   (rel: normwise, so elements near zero do not blow it up), with a pass/fail threshold on rel
   (:data:`PARITY_TOL`, justified there). Needs CUDA and mamba_ssm; skipped otherwise.
2. ``train``: one bf16 training step (torch.autocast bf16 over the forward, as ssmttm.train.loop
   does; backward, grad clip and AdamW with the recipe's settings from config.yaml ``train``) of
   Prefix SiMBA and Cross Transformer at the preset's size (paper: 24 layers each, 281.04M and
   305.22M parameters), ``--batch`` sequences (default: the recipe's micro-batch, 4; tiny: 1) of ``--seq``
   delayed steps (2588) with a ``--text-len`` caption (32). Timed with CUDA events (wall clock with
   synchronize elsewhere). FLOPs of a step: 3 x the forward FLOPs counted by
   :func:`ssmttm.train.flops.lm_forward_cost` (backward ~ 2 x forward, that module's convention);
   MFU = those FLOPs / step time / the card's dense bf16 peak (:data:`PEAK_BF16_TFLOPS`, keyed by
   ``torch.cuda.get_device_name``; ``--peak-tflops`` for another card; unknown: MFU n/a). On CPU the
   same bf16-autocast step runs (its speed says nothing about a GPU; MFU n/a).
3. ``generate``: tokens/s of cached decoding (the ``generate`` stage's decoding step: ``LM.step``, CFG,
   sampling; bench/generation_speed.py's ``throughput_side``, both models in lockstep) for both
   models at the preset's size, fp32 as the stage runs, the config's sampling recipe, batches of 1
   and the stage's ``batch_size`` prompts (each 2 rows with CFG).
4. ``refiner``: seconds of sampling per second of audio of the preset's refiner (paper: 48.8M
   parameters) at 100 / 50 / 25 DDPM steps (bench/refiner_speed.py's ``STEPS``), CFG in one batch of
   2 rows, fp32 as the pipeline samples.

The Mamba2 backend of parts 2 and 3 is ``--mamba-backend`` (default auto: mamba_ssm when it imports
and the device is CUDA, the kernels the paper trained with; else the pure-PyTorch layer), printed
on the setup line and in the figures.

Protocol (bench/_protocol.py): the machine line first, the protocol line second (threads and
allocator pinned), then a ``setup:`` line (torch and CUDA versions, the card, whether mamba_ssm
imported and its version). Every part runs its sides with :func:`alternate`: ``--warmup`` calls of
each side (not kept; the first compiles and autotunes the Triton kernels), then ``--rounds`` (>= 5)
rounds A B A B ... in this one process; every figure is the median [min–max] over the rounds,
ratios per round. Parity rounds draw fresh random inputs each (seeded per round), and pass/fail
reads the WORST round. The last line holds ``key=value`` figures: ``checks`` (pass / fail),
``skipped`` (the parts that did not run, or none), ``mamba_ssm`` (its version, ``absent`` or
``import-error``), the parts' medians, ``rounds`` and ``elapsed_s``.

Exit status: 0 when every part that ran passed (skipped parts do not fail), 1 when a parity
threshold failed or a part raised (its traceback is printed, the other parts still run), 2 when
``--device cuda`` was asked on a machine without CUDA (nothing runs) or ``--mamba-backend
mamba_ssm`` cannot be had.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import itertools
import math
import os
import re
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _protocol import (Spread, add_protocol_args, alternate, begin, figure_line, figures_line, num,  # noqa: E402
                       pin_allocator)
from backbone_speed import SSM, TRANSFORMER  # noqa: E402
from generation_speed import throughput_side  # noqa: E402
from refiner_speed import STEPS  # noqa: E402
from ssmttm import settings  # noqa: E402
from ssmttm.constants import CODEBOOK_SIZE, FRAME_RATE  # noqa: E402
from ssmttm.models import build_lm  # noqa: E402
from ssmttm.models.config import MAMBA_BACKENDS, PRESETS, from_preset  # noqa: E402

SIZES = ("paper", "tiny")

# Dense (no sparsity) bf16 tensor-core peak, TFLOPS, from NVIDIA's datasheets, keyed by a pattern of
# torch.cuda.get_device_name(); the first match wins. SXM5 H100s name themselves "NVIDIA H100 80GB
# HBM3"; the H100 NVL and H200 NVL run at lower clocks than the SXM parts and are not listed, so they
# (like every card not here) get MFU n/a unless --peak-tflops says their peak.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"\bH100\b.*\bPCIe\b", 756.0),
    (r"\bH100\b.*\b(HBM3|SXM)", 989.0),
    (r"\bH200\b(?!.*\bNVL\b)", 989.0),
    (r"\bA100\b", 312.0),  # SXM and PCIe alike
)

# --- parity thresholds -------------------------------------------------------------------------------
# On rel = max|kernel - ours| / max|ours|, everything fp32 (weights, inputs, states; torch's matmuls and
# cuDNN with TF32 off while the part runs, so OUR side is IEEE fp32).
# mamba_ssm's Triton SSD kernels (the B.C bmm, chunk state, chunk scan, and their backward) run their
# tl.dot products on fp32 inputs in TF32, Triton's default input precision: operands rounded to 10
# mantissa bits (unit roundoff u = 2^-11 = 4.9e-4), accumulated in fp32. Unbiased rounding errors of a
# K-term dot product grow like sqrt(K) u times the terms' root-sum-square, i.e. about u relative to a
# result that is not a heavy cancellation, and the out_proj sum over d_inner terms averages them further.
# - forward (also the padded forward, the prefill, the states it leaves, and decoding that continues
#   from each side's own prefilled state): three chained TF32 products (C.B, (C.B o decay) x, C h);
#   5e-3 is ~10 u.
# - backward (input and parameter gradients): about twice as many chained products, and the parameter
#   gradients (A_log, dt_bias, D, conv, norm) are reductions over every (sequence, position); 1e-2 is ~20 u.
# - step from the same state: causal_conv1d_update and selective_state_update are plain fp32 arithmetic
#   (elementwise products and tl.sum, no tensor-core dot), so they differ from ours only in the order of
#   the sums over d_state / d_inner terms; 1e-4 is ~800 fp32 ulps (2^-23 = 1.2e-7).
# Sensitivity, measured with the pure-PyTorch layer against a copy changed in one place (paper width, one
# sequence of 600 steps, on a CPU): a dropped conv bias, flipped conv taps, a dropped D skip or dt_bias off by
# 1 move the forward by 0.12 to 1.4 and the parameter gradients by 0.9 to 9.6 (10 to 1000x the thresholds);
# even A = -exp(A_log) 10 % off moves the forward by 1.3e-2 (2.5x) and the parameter gradients by 0.1 (10x).
# The gated RMSNorm divides out the scale of y, so a change that only rescales y (D doubled: forward 8e-2,
# parameter gradients 0.5) shows most in the gradients: read the backward rows first when one fails.
PARITY_TOL = {"forward": 5e-3, "backward": 1e-2, "step": 1e-4}
# (figure key, what it compares, threshold class), in print order.
PARITY_CHECKS = (
    ("fwd", "forward outputs", "forward"),
    ("grad_input", "backward: input gradient", "backward"),
    ("grad_params", "backward: parameter gradients (worst tensor)", "backward"),
    ("masked", "forward, left-padded rows (seq_idx path), real positions", "forward"),
    ("prefill", "prefill with a cache: outputs", "forward"),
    ("state", "prefill with a cache: conv and SSM states left", "forward"),
    ("decode", "step decoding, each from its own prefill", "forward"),
    ("step", "step decoding, kernel stepping from our state", "step"),
)
# Layer-level shapes of the parity part: (sequences, training length, left padding of row 0, prefill
# length, steps). Paper: 2588 steps (30 s of delayed frames: 10 chunks of 256 and a partial one), a
# 300-step prefill (also a partial chunk).
PARITY_SHAPES = {"paper": dict(batch=2, length=2588, pad=77, prefill=300, steps=32),
                 "tiny": dict(batch=2, length=50, pad=13, prefill=20, steps=6)}
# Per-size defaults of the other parts: sequences per training step (paper: None, the recipe's micro-batch;
# tiny: 1, so the CPU run stays short), generated frames per throughput call (paper: 512 of the stage's
# 2200, so 5 rounds of both models at two batch sizes fit the 10 minutes), the refiner preset and the
# audio it samples per call.
PART_SIZES = {"paper": dict(train_batch=None, gen_tokens=512, refiner="paper", refiner_seconds=10.0),
              "tiny": dict(train_batch=1, gen_tokens=16, refiner="tiny", refiner_seconds=0.5)}


class Env:
    """What every part needs besides the arguments. (Plain classes, not dataclasses: the tests load this
    file with importlib without registering it in sys.modules, which dataclasses need.)"""

    def __init__(self, device: torch.device, backend: str, mamba_ssm: str, cuda_kernels: bool):
        self.device = device
        self.backend = backend  # the Mamba2 backend of the train and generate parts: "mamba_ssm" or "torch"
        self.mamba_ssm = mamba_ssm  # its version, "absent" or "import-error"
        self.cuda_kernels = cuda_kernels  # CUDA device and mamba_ssm imported: the parity part can run


class Outcome:
    """A part's figures for the last line; ok False when a check failed; skipped: why it did not run."""

    def __init__(self, figures: dict, ok: bool = True, skipped: str = ""):
        self.figures, self.ok, self.skipped = figures, ok, skipped


# --- the machine -----------------------------------------------------------------------------------

def peak_tflops(device_name: str | None) -> float | None:
    """Dense bf16 peak of a card from its ``torch.cuda.get_device_name`` (None: not in the table)."""
    for pattern, peak in PEAK_BF16_TFLOPS:
        if device_name and re.search(pattern, device_name):
            return peak
    return None


def _version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def probe_mamba_ssm() -> tuple[str, str]:
    """(figure, words): figure is mamba_ssm's version when ``mamba_ssm.modules.mamba2`` imports,
    ``absent`` when it is not installed, ``import-error`` when it is but does not import."""
    try:
        import mamba_ssm.modules.mamba2  # noqa: F401  (Triton and the CUDA extensions)
    except Exception as e:  # ImportError, or a broken Triton / CUDA extension build raising something else
        if isinstance(e, ModuleNotFoundError) and (e.name or "").split(".")[0] == "mamba_ssm":
            return "absent", ("mamba_ssm absent (not installed; pip install mamba-ssm causal-conv1d "
                              "--no-build-isolation on a CUDA machine)")
        version = _version("mamba_ssm", "mamba-ssm")
        return "import-error", f"mamba_ssm {version} did not import ({type(e).__name__}: {e})"
    import mamba_ssm

    version = getattr(mamba_ssm, "__version__", None) or _version("mamba_ssm", "mamba-ssm") or "unknown"
    extras = ", ".join(f"{n} {_version(n, n.replace('_', '-')) or 'absent'}" for n in ("triton", "causal_conv1d"))
    return version, f"mamba_ssm {version} imported ({extras})"


def setup_line(env: Env, mamba_words: str, args) -> str:
    cuda = torch.version.cuda
    parts = [f"torch {torch.__version__} ({f'CUDA {cuda} build' if cuda else 'CPU build, no CUDA'})"]
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(env.device if env.device.type == "cuda" else 0)
        parts.append(f"CUDA available: {torch.cuda.device_count()} device(s), {p.name}, compute "
                     f"{p.major}.{p.minor}, {p.total_memory / 2**30:.1f} GiB")
        parts.append(f"cuDNN {torch.backends.cudnn.version()}")
    else:
        parts.append("CUDA available: no")
    parts.append(mamba_words)
    parts.append(f"device {env.device}, size {args.size}, parts {','.join(args.parts)}, "
                 f"Mamba2 backend of train/generate: {env.backend}")
    return "setup: " + "; ".join(parts)


def resolve_backend(requested: str, device: torch.device, kernels: bool) -> str:
    """The Mamba2 backend the train and generate parts build (make_mamba2's rule for "auto")."""
    if requested == "torch":
        return "torch"
    if requested == "mamba_ssm" and not kernels:
        raise RuntimeError("--mamba-backend mamba_ssm needs --device cuda and an importable mamba_ssm "
                           "(pip install mamba-ssm causal-conv1d --no-build-isolation)")
    return "mamba_ssm" if kernels else "torch"


def device_seconds(fn, device: torch.device) -> float:
    """Seconds of one call of ``fn``: CUDA events around it on a GPU (after a synchronize, so only its
    own work is timed), the wall clock elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def free(device: torch.device) -> None:
    """Give cached GPU memory back between parts (the next part's models need it)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- 1. parity -------------------------------------------------------------------------------------

def diff(a: torch.Tensor | None, b: torch.Tensor | None) -> tuple[float, float]:
    """(max |a - b|, max |a - b| / max |b|); b is the reference (ours). A missing tensor (a gradient one
    side never produced) is an infinite difference."""
    if a is None or b is None:
        return math.inf, math.inf
    d = float((a.detach().double() - b.detach().double()).abs().max())
    scale = float(b.detach().double().abs().max())
    return d, (d / scale if scale > 0 else (0.0 if d == 0 else math.inf))


def _worse(x: tuple[float, float], y: tuple[float, float]) -> tuple[float, float]:
    return max(x[0], y[0]), max(x[1], y[1])


@contextlib.contextmanager
def ieee_fp32():
    """torch's own matmuls and cuDNN convolutions in IEEE fp32 (no TF32) while the block runs."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def mamba_widths(size: str) -> dict:
    """The Mamba2 shape of a preset (ssmttm.models.config.PRESETS): d_model, d_state, d_conv, ..."""
    return {k: PRESETS[size][k] for k in ("d_model", "d_state", "d_conv", "expand", "headdim", "ngroups",
                                          "chunk_size")}


def parity_sides(ours, theirs, shape: dict, device: torch.device, worst: dict) -> dict:
    """The parity part's sides: each call draws fresh inputs (seeded per call) and returns
    {check_abs, check_rel} for its checks; ``worst`` counts which parameter's gradient differed most."""
    B, L, P, S, pad = shape["batch"], shape["length"], shape["prefill"], shape["steps"], shape["pad"]
    d = ours.d_model
    calls = itertools.count()

    def gen() -> torch.Generator:
        return torch.Generator(device=device).manual_seed(1000 + next(calls))

    def randn(g, *s):
        return torch.randn(*s, generator=g, device=device)

    def train() -> dict:
        # u ~ N(0, 1): the mixer's input is RMS-normalised (unit scale) in the LM.
        g = gen()
        u, cot = randn(g, B, L, d), randn(g, B, L, d)
        out, grads = {}, {}
        for name, m in (("ours", ours), ("kernel", theirs)):
            m.zero_grad(set_to_none=True)
            x = u.clone().requires_grad_(True)
            y = m(x)
            (y * cot).sum().backward()  # a random cotangent: every output element gets a gradient
            out[name] = y.detach()
            grads[name] = {"input": x.grad, **{n: p.grad for n, p in m.named_parameters()}}
        per = {n: diff(grads["kernel"].get(n), g_ours) for n, g_ours in grads["ours"].items() if n != "input"}
        name = max(per, key=lambda n: per[n][1])
        if per[name][1] > 0:
            worst[name] = worst.get(name, 0) + 1
        fwd, gin = diff(out["kernel"], out["ours"]), diff(grads["kernel"]["input"], grads["ours"]["input"])
        gpar = (max(a for a, _ in per.values()), per[name][1])
        return {"fwd_abs": fwd[0], "fwd_rel": fwd[1], "grad_input_abs": gin[0], "grad_input_rel": gin[1],
                "grad_params_abs": gpar[0], "grad_params_rel": gpar[1]}

    def masked() -> dict:
        g = gen()
        u = randn(g, B, L, d)
        mask = torch.ones(B, L, dtype=torch.bool, device=device)
        mask[0, :pad] = False  # left padding only (the LM left-aligns its text prefix)
        with torch.no_grad():
            a, b = ours(u, mask=mask), theirs(u, mask=mask)
        m = diff(b[mask], a[mask])
        return {"masked_abs": m[0], "masked_rel": m[1]}

    def decode() -> dict:
        g = gen()
        u = randn(g, B, P + S, d)
        with torch.no_grad():
            c_ours, c_kernel = ours.allocate_inference_cache(B), theirs.allocate_inference_cache(B)
            pre = diff(theirs(u[:, :P], cache=c_kernel), ours(u[:, :P], cache=c_ours))
            state = _worse(diff(c_kernel.conv_state, c_ours.conv_state), diff(c_kernel.ssm_state, c_ours.ssm_state))
            shared = theirs.allocate_inference_cache(B)  # the kernel continues from OUR prefilled state
            shared.conv_state.copy_(c_ours.conv_state)
            shared.ssm_state.copy_(c_ours.ssm_state)
            own = same = (0.0, 0.0)
            for t in range(P, P + S):
                x = u[:, t:t + 1]
                ref = ours.step(x, c_ours)
                own = _worse(own, diff(theirs.step(x, c_kernel), ref))
                same = _worse(same, diff(theirs.step(x, shared), ref))
        return {"prefill_abs": pre[0], "prefill_rel": pre[1], "state_abs": state[0], "state_rel": state[1],
                "decode_abs": own[0], "decode_rel": own[1], "step_abs": same[0], "step_rel": same[1]}

    return {"train": train, "masked": masked, "decode": decode}


def parity_part(args, env: Env, kernel_backend: str = "mamba_ssm") -> Outcome:
    """Pure-PyTorch Mamba2 vs the mamba_ssm kernel path on shared weights (module docstring, part 1).
    ``kernel_backend="torch"`` compares the pure-PyTorch layer with itself: the tests run the whole
    part that way on a CPU (every difference 0)."""
    from ssmttm.models.mamba2 import make_mamba2

    if kernel_backend == "mamba_ssm" and not env.cuda_kernels:
        why = f"device {env.device}" if env.device.type != "cuda" else "CUDA present"
        print(f"parity: skipped: needs a CUDA device and mamba_ssm ({why}; mamba_ssm {env.mamba_ssm})", flush=True)
        return Outcome({"parity": "skipped"}, skipped="needs CUDA and mamba_ssm")
    device, shape, widths = env.device, PARITY_SHAPES[args.size], mamba_widths(args.size)
    print(f"parity: pure-PyTorch Mamba2 vs {kernel_backend} path, shared weights, fp32 (TF32 off in torch); "
          + ", ".join(f"{k} {v}" for k, v in widths.items())
          + f"; {shape['batch']} sequences of {shape['length']} steps (row 0 left-padded by {shape['pad']} in the "
          f"padded forward), prefill {shape['prefill']} then {shape['steps']} steps; rel = max|diff| / max|ours|",
          flush=True)
    worst: dict[str, int] = {}
    with ieee_fp32():
        torch.manual_seed(0)
        ours = make_mamba2(backend="torch", device=device, **widths)
        theirs = make_mamba2(backend=kernel_backend, device=device, **widths)
        theirs.load_state_dict(ours.state_dict(), strict=True)  # identical parameter names and shapes
        print(f"  ours: {type(ours).__module__}.{type(ours).__name__}; kernel side: "
              f"{type(theirs).__module__}.{type(theirs).__name__}", flush=True)

        def progress(i, name, r):
            print(f"  round {i + 1} {name}: " + ", ".join(f"{k} {num(v)}" for k, v in r.items() if k.endswith("_rel")),
                  flush=True)

        rounds = alternate(parity_sides(ours, theirs, shape, device, worst), args.rounds, args.warmup,
                           on_call=progress)
    del ours, theirs
    free(device)
    side_of = {"fwd": "train", "grad_input": "train", "grad_params": "train", "masked": "masked",
               "prefill": "decode", "state": "decode", "decode": "decode", "step": "decode"}
    figures, ok = {}, True
    for key, what, tol_class in PARITY_CHECKS:
        tol = PARITY_TOL[tol_class]
        rel, ab = rounds.spread(side_of[key], f"{key}_rel"), rounds.spread(side_of[key], f"{key}_abs")
        passed = rel.hi <= tol  # the worst round decides
        ok &= passed
        print(f"  {what}: rel {rel.text()}; abs {ab.text()}; threshold {num(tol)} on the worst round: "
              f"{'pass' if passed else 'FAIL'}")
        figures[f"parity_{key}_rel"] = rel
        figures[f"parity_{key}_abs"] = ab
    counts = ", ".join(f"{n} ({c} call{'s' if c > 1 else ''})" for n, c in sorted(worst.items(), key=lambda x: -x[1]))
    print(f"  largest parameter-gradient difference in: {counts or 'none (every gradient equal)'} "
          f"(warm-up calls included)")
    figures["parity"] = "pass" if ok else "fail"
    return Outcome(figures, ok)


# --- 2. bf16 training step -------------------------------------------------------------------------

def train_side(cfg, seq: int, text_len: int, batch: int, device: torch.device, recipe: dict, bf16: bool):
    """A side: builds ``LM(cfg)``, its AdamW (the recipe's param groups) and a random batch once; each call
    is one training step (autocast bf16 over the forward as ssmttm.train.loop runs it, loss, backward,
    grad-norm clip, optimizer step), returning its seconds (:func:`device_seconds`)."""
    from ssmttm.train.loop import param_groups

    torch.manual_seed(0)
    lm = build_lm(cfg, device=device).train()
    opt = torch.optim.AdamW(param_groups(lm, recipe["weight_decay"]), lr=recipe["lr"],
                            betas=tuple(recipe["betas"]), eps=recipe["eps"])
    codes = torch.randint(0, CODEBOOK_SIZE, (batch, cfg.n_codebooks, seq), device=device)
    text = torch.randn(batch, text_len, cfg.text_dim, device=device)
    mask = torch.ones(batch, text_len, dtype=torch.bool, device=device)

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = lm(codes, text, mask)
        loss = lm.loss(logits, codes, None, recipe["label_smoothing"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), recipe["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)

    return lambda: device_seconds(step, device)


def train_part(args, env: Env) -> Outcome:
    """bf16 training step time, achieved TFLOP/s and MFU of Prefix SiMBA vs Cross Transformer (part 2)."""
    from ssmttm.train.flops import lm_forward_cost

    device = env.device
    recipe = settings.defaults(("train",))
    batch = args.batch or PART_SIZES[args.size]["train_batch"] or int(recipe["batch_size"])
    cfgs = {"ssm": from_preset(args.size, SSM, dropout=recipe["dropout"], mamba_backend=env.backend),
            "transformer": from_preset(args.size, TRANSFORMER, dropout=recipe["dropout"])}
    cost = {n: lm_forward_cost(cfg, positions=args.seq, text_len=args.text_len) for n, cfg in cfgs.items()}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    peak = args.peak_tflops or peak_tflops(name)
    print(f"train: bf16 autocast (forward; backward, clip and AdamW as ssmttm.train.loop) on {device}"
          + (" (CPU: runs, but its speed says nothing about a GPU)" if device.type != "cuda" else "")
          + f"; {args.size} size, dropout {recipe['dropout']}, seq {args.seq}, text {args.text_len}; "
          + "; ".join(f"{cfgs[n].variant} {cfgs[n].n_layers} layers {cost[n]['n_params'] / 1e6:.2f}M params, "
                      f"{num(3 * cost[n]['forward_flops'] / 1e9)} GFLOP per sequence per step (3 x counted forward)"
                      for n in cfgs)
          + f"; Mamba2 backend {env.backend}; peak {f'{num(peak)} TFLOPS dense bf16' if peak else 'unknown (MFU n/a)'}"
          + (f" ({name})" if name else ""), flush=True)
    while True:
        oom = False
        try:
            sides = {n: train_side(cfg, args.seq, args.text_len, batch, device, recipe, True)
                     for n, cfg in cfgs.items()}
            rounds = alternate(sides, args.rounds, args.warmup,
                               on_call=lambda i, n, s: print(f"  round {i + 1} {n}: {s:.4f} s", flush=True))
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            oom = True
        sides = None
        free(device)  # outside the except block: its traceback no longer holds the models
        if not oom:
            break
        print(f"  out of GPU memory at batch {batch}: again with batch {batch // 2} (the rounds above are dropped)",
              flush=True)
        batch //= 2
    figures = {}
    for n in cfgs:
        step_flops = 3 * cost[n]["forward_flops"] * batch
        t = rounds.spread(n)
        tflops = Spread.of(step_flops / s / 1e12 for s in rounds.values(n))
        print("  " + figure_line(f"{n} train step, batch {batch}", t, "s"))
        print("  " + figure_line(f"{n} achieved", tflops, "TFLOP/s"))
        figures[f"train_{n}_step_s"] = t
        figures[f"train_{n}_tflops"] = tflops
        if peak:
            mfu = tflops.scaled(1 / peak)
            print("  " + figure_line(f"{n} MFU (counted FLOPs / time / {num(peak)} TFLOPS)", mfu))
            figures[f"train_{n}_mfu"] = mfu
        else:
            figures[f"train_{n}_mfu"] = "n/a"
    ratio = rounds.ratio("ssm", "transformer")
    print("  " + figure_line("ssm / transformer step time (per round)", ratio))
    figures.update(train_ssm_over_transformer=ratio, train_batch=batch, train_seq=args.seq, train_precision="bf16")
    if not peak:
        print(f"  MFU n/a: no dense bf16 peak known for {name or device.type} (--peak-tflops gives one)")
    return Outcome(figures)


# --- 3. generation -----------------------------------------------------------------------------------

def generate_part(args, env: Env) -> Outcome:
    """Tokens/s of cached decoding, Prefix SiMBA vs Cross Transformer (part 3)."""
    from ssmttm.generate.sampling import SamplingConfig

    device = env.device
    recipe = settings.defaults(("generate",))  # the stage's sampling recipe and prompts per call
    sampling = SamplingConfig(recipe["cfg_scale"], recipe["temperature"], recipe["top_k"])
    n_tokens = args.gen_tokens or PART_SIZES[args.size]["gen_tokens"]
    batches = args.gen_batches or sorted({1, 2 if args.size == "tiny" else int(recipe["batch_size"])})
    torch.manual_seed(0)
    cfgs = {"ssm": from_preset(args.size, SSM, dropout=0.0, mamba_backend=env.backend),
            "transformer": from_preset(args.size, TRANSFORMER, dropout=0.0)}
    models = {n: build_lm(cfg, device=device).eval() for n, cfg in cfgs.items()}
    print(f"generate: cached decoding (the generate stage's step: LM.step, CFG, sampling; models in lockstep), fp32, {n_tokens} frames per call "
          f"(positions 0..{n_tokens - 1}), batches {batches} prompts (2 rows each with CFG), CFG {sampling.cfg_scale}, "
          f"temperature {sampling.temperature}, top-k {sampling.top_k}; "
          + "; ".join(f"{m.cfg.variant} {m.cfg.n_layers} layers {m.num_parameters() / 1e6:.2f}M params"
                      for m in models.values()) + f"; Mamba2 backend {env.backend}", flush=True)
    # both models in lockstep, token by token, per batch size (bench/generation_speed.py's throughput side)
    sides = {f"b{b}": throughput_side(models, b, n_tokens, args.text_len, sampling, 0) for b in batches}
    rounds = alternate(sides, args.rounds, args.warmup, on_call=lambda i, n, r: print(
        f"  round {i + 1} {n}: " + ", ".join(f"{m}: {v:.1f} tokens/s" for m, v in r.items()), flush=True))
    del models, sides
    free(device)
    figures = {}
    for b in batches:
        for n in ("ssm", "transformer"):
            s = rounds.spread(f"b{b}", n)
            print("  " + figure_line(f"{n} batch {b}", s, "tokens/s"))
            figures[f"gen_tok_s_{n}_b{b}"] = s
        r = rounds.ratio(f"b{b}", f"b{b}", "ssm", "transformer")
        print("  " + figure_line(f"ssm / transformer tokens/s, batch {b} (per round)", r))
        figures[f"gen_ssm_over_transformer_b{b}"] = r
    figures["gen_tokens"] = n_tokens
    return Outcome(figures)


# --- 4. refiner --------------------------------------------------------------------------------------

def refiner_side(net, frames: int, steps: int, device: torch.device, audio_seconds: float):
    """A side: one DDPM sample of ``frames`` frames in ``steps`` steps on ``device`` (CFG: 2 rows);
    returns seconds per second of audio."""
    from ssmttm.refiner import diffusion as D
    from ssmttm.rng import make_generators

    g = torch.Generator().manual_seed(0)
    cond = torch.randint(0, CODEBOOK_SIZE, (1, net.cfg.cond_codebooks, frames), generator=g).to(device)
    text = torch.randn(1, 12, net.cfg.text_dim, generator=g).to(device)
    mask = torch.ones(1, 12, dtype=torch.bool, device=device)
    sampler = D.SamplerConfig(steps, 3.0, "ddpm")

    def run() -> float:
        gens = make_generators([0], device)
        return device_seconds(lambda: D.sample(net, cond, text, mask, torch.zeros_like(text), mask, sampler, gens),
                              device) / audio_seconds

    return run


def refiner_part(args, env: Env) -> Outcome:
    """Refiner sampling seconds per audio second at 100 / 50 / 25 steps (part 4)."""
    from ssmttm.refiner.config import refiner_from_preset
    from ssmttm.refiner.model import build_refiner

    device = env.device
    preset = PART_SIZES[args.size]["refiner"]
    seconds = args.refiner_seconds or PART_SIZES[args.size]["refiner_seconds"]
    frames = max(8, int(round(seconds * FRAME_RATE)))
    audio_s = frames / FRAME_RATE
    steps = sorted(set(args.refiner_steps), reverse=True)
    torch.manual_seed(0)
    net = build_refiner(refiner_from_preset(preset, dropout=0.0), device=device).eval()
    print(f"refiner: {preset} preset ({sum(p.numel() for p in net.parameters()) / 1e6:.2f}M params), ddpm, CFG 3.0 "
          f"(one batch of 2 rows), fp32 as the pipeline samples, {audio_s:.2f} s of audio ({frames} frames) per "
          f"call, steps {steps}; warm-up: the {steps[-1]}-step sample (same shapes as the others)", flush=True)
    sides = {f"steps_{n}": refiner_side(net, frames, n, device, audio_s) for n in steps}
    rounds = alternate(sides, args.rounds, args.warmup, warm=[f"steps_{steps[-1]}"],
                       on_call=lambda i, n, s: print(f"  round {i + 1} {n}: {s:.4f} s per audio s", flush=True))
    del net, sides
    free(device)
    figures = {}
    for n in steps:
        s = rounds.spread(f"steps_{n}")
        print("  " + figure_line(f"{n} steps", s, "s per audio s"))
        figures[f"refiner_s_per_audio_s_{n}"] = s
    for n in steps[1:]:
        r = rounds.ratio(f"steps_{n}", f"steps_{steps[0]}")
        print("  " + figure_line(f"cost {n} / {steps[0]} steps (per round)", r))
        figures[f"refiner_cost_{n}_over_{steps[0]}"] = r
    return Outcome(figures)


PARTS = {"parity": parity_part, "train": train_part, "generate": generate_part, "refiner": refiner_part}


# --- the command line --------------------------------------------------------------------------------

def _parts(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in names if p not in PARTS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown part(s) {bad or text!r}; parts: {','.join(PARTS)}")
    return list(dict.fromkeys(names))


def _device(text: str) -> str:
    try:
        torch.device(text)
    except RuntimeError as e:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} ({e})") from None
    return text


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected >= 1 (got {n})")
    return n


def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=_parts, default=list(PARTS), help=f"comma-separated (default {','.join(PARTS)})")
    ap.add_argument("--device", type=_device, default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--size", choices=SIZES, default="paper", help="model preset of every part (default paper)")
    ap.add_argument("--mamba-backend", choices=MAMBA_BACKENDS, default="auto",
                    help="Mamba2 of the train and generate parts (default auto: mamba_ssm on CUDA when it imports)")
    ap.add_argument("--seq", type=_positive, default=2588, help="train: delayed steps per sequence (30 s = 2588)")
    ap.add_argument("--text-len", type=_positive, default=32, help="train and generate: caption length in T5 tokens")
    ap.add_argument("--batch", type=_positive, default=None,
                    help="train: sequences per step (default: the recipe's train.batch_size, 4; tiny 1; "
                         "halved on OOM)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="train: dense bf16 peak of a card not in the table")
    ap.add_argument("--gen-tokens", type=_positive, default=None, help="generate: frames per call (paper 512, tiny 16)")
    ap.add_argument("--gen-batches", type=_positive, nargs="+", default=None,
                    help="generate: prompts per call (default 1 and the stage's batch_size; tiny 1 2)")
    ap.add_argument("--refiner-seconds", type=float, default=None, help="refiner: audio per call (paper 10, tiny 0.5)")
    ap.add_argument("--refiner-steps", type=_positive, nargs="+", default=list(STEPS),
                    help=f"refiner: step counts (default {' '.join(map(str, STEPS))})")
    # Two warm-up calls: the first compiles and autotunes the Triton kernels, the allocator settles in two.
    add_protocol_args(ap, threads=min(4, os.cpu_count() or 1), warmup=2)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        print(f"gpu_check: error: --device {args.device} asked, but CUDA is not available here (torch "
              f"{torch.__version__}, {build}); run it on a CUDA machine, or pass --device cpu --size tiny for "
              "the parts a CPU can run", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    begin(args)
    mamba, mamba_words = probe_mamba_ssm()
    kernels = device.type == "cuda" and mamba not in ("absent", "import-error")
    try:
        backend = resolve_backend(args.mamba_backend, device, kernels)
    except RuntimeError as e:
        print(f"gpu_check: error: {e} ({mamba_words})", file=sys.stderr)
        return 2
    env = Env(device, backend, mamba, kernels)
    print(setup_line(env, mamba_words, args), flush=True)

    results: dict[str, Outcome] = {}
    for name in args.parts:
        t_part = time.perf_counter()
        try:
            results[name] = PARTS[name](args, env)
        except Exception:
            traceback.print_exc(file=sys.stdout)
            print(f"{name}: ERROR (traceback above); the other parts still run", flush=True)
            results[name] = Outcome({name: "error"}, ok=False)
            free(device)
        print(f"{name}: {time.perf_counter() - t_part:.1f} s", flush=True)
    skipped = [n for n, r in results.items() if r.skipped]
    ok = all(r.ok for r in results.values())
    for n in skipped:
        print(f"skipped: {n} ({results[n].skipped})")
    last: dict = {"checks": "pass" if ok else "fail", "skipped": ",".join(skipped) or "none", "mamba_ssm": mamba,
                  "mamba2_backend": backend, "device": device.type, "size": args.size}
    for r in results.values():
        last.update(r.figures)
    last["rounds"] = args.rounds
    last["elapsed_s"] = time.perf_counter() - t0
    print(figures_line(last), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    pin_allocator()
    sys.exit(main())
