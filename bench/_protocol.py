"""The protocol every bench in ``bench/`` follows, so two runs of a bench can be compared.

A bench's output, in order:

1. :func:`machine_line` (CPU model, cores, OS, python, torch, device, UTC date), the FIRST line;
2. :func:`protocol_line`: the threads it pinned (:func:`pin_threads`: ``torch.set_num_threads`` and
   the OpenMP / BLAS environment variables, which child processes inherit), the memory allocator's
   settings (:func:`pin_allocator`), the rounds and warm-up;
3. its measurements: the compared sides are run by :func:`alternate` in ONE process, warm-up calls
   first (not kept), then ``rounds`` rounds of every side in turn (A B A B ...), so slow drift of a
   shared machine (another job starting, frequency scaling) hits every side alike instead of the
   one that happened to run last. Each figure is printed by :func:`figure_line` as the median and
   the spread (min–max) over the rounds; a ratio of two sides is computed per round (A_i / B_i, one
   round's A against the same round's B) and summarised the same way;
4. ``key=value`` figures (the medians) on the LAST line, written by :func:`figures_line`.

Usage::

    if __name__ == "__main__":
        pin_allocator()                  # first: may re-execute the script once
    args = parser.parse_args()          # after add_protocol_args(parser)
    begin(args)                          # machine line, pins threads, protocol line
    r = alternate({"ssm": step_a, "transformer": step_b}, args.rounds, args.warmup)
    ratio = r.ratio("ssm", "transformer")
    print(figure_line("ssm / transformer", ratio))
    print(figures_line({"ssm_over_transformer": ratio.median}))

A side is a callable taking no arguments that returns its figure: a number (e.g. the seconds it
timed itself, leaving out its own set-up; :func:`timed` wraps a callable to return its wall time)
or a dict of named numbers (several figures from one call, e.g. the latency at several positions).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ssmttm import machine

MIN_ROUNDS = 5
DEFAULT_WARMUP = 1
# Variables the OpenMP / BLAS runtimes read at start-up: set before a child process starts (a
# subprocess bench) they pin it too; torch.set_num_threads pins this process.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
# glibc malloc keeps freed memory for reuse: no mmap for large blocks (each would be page-faulted in
# again on every step) and no trimming of the heap. With glibc's default (a dynamic mmap threshold)
# the pure-PyTorch Mamba2 training step at d_model 512 took 7.4 to 11 s depending on the allocator's
# history (up to 2.2M minor page faults and 6 s of system time per step), so the SSM / Transformer
# ratio moved from 1.31 to 1.73 between two runs of the same code; with these settings the faults
# stop after two steps.
ALLOCATOR_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"


# --- the machine -----------------------------------------------------------------------------------

def machine_line() -> str:
    """``machine: <cpu>, <n> cores, <os>, python X, torch Y, device Z, <UTC date>`` (torch only if
    importable): what a saved bench output needs to say where and when its figures were measured."""
    parts = [machine.cpu_model(), f"{os.cpu_count()} cores", platform.system(), f"python {platform.python_version()}"]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
        parts.append(f"device {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "device cpu")
    except ImportError:
        pass
    parts.append(f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d}")
    return "machine: " + ", ".join(parts)


# --- threads ---------------------------------------------------------------------------------------

def pin_threads(n: int) -> str:
    """Pin this process to ``n`` intra-op threads (torch, if importable) and set :data:`THREAD_ENV`
    for child processes; returns the line that says so."""
    if n < 1:
        raise ValueError(f"pin_threads: n={n}, expected >= 1")
    for var in THREAD_ENV:
        os.environ[var] = str(n)
    try:
        import torch
    except ImportError:
        return f"threads={n} ({', '.join(THREAD_ENV)}={n})"
    torch.set_num_threads(n)
    return f"threads={torch.get_num_threads()} (torch.set_num_threads; {', '.join(THREAD_ENV)}={n})"


def pin_allocator() -> None:
    """Re-execute this script once with :data:`ALLOCATOR_TUNABLES` in ``GLIBC_TUNABLES`` (read by glibc
    at process start only). Call it first thing under ``if __name__ == "__main__"``; it does nothing
    off Linux, or when ``GLIBC_TUNABLES`` is already set (the caller's own setting wins, and
    :func:`allocator` prints it)."""
    if platform.system() != "Linux" or "GLIBC_TUNABLES" in os.environ:
        return
    os.environ["GLIBC_TUNABLES"] = ALLOCATOR_TUNABLES
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *sys.argv])


def allocator() -> str:
    """``allocator: glibc tunables ...`` or ``allocator: default``: what :func:`pin_allocator` left in place."""
    tunables = os.environ.get("GLIBC_TUNABLES")
    return f"allocator: GLIBC_TUNABLES={tunables}" if tunables else "allocator: default"


# --- the command line ------------------------------------------------------------------------------

def _rounds(text: str) -> int:
    n = int(text)
    if n < MIN_ROUNDS:
        raise argparse.ArgumentTypeError(f"at least {MIN_ROUNDS} rounds (got {n})")
    return n


def _count(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected >= 0 (got {n})")
    return n


def add_protocol_args(parser: argparse.ArgumentParser, threads: int = 2, rounds: int = MIN_ROUNDS,
                      warmup: int = DEFAULT_WARMUP) -> argparse.ArgumentParser:
    """``--threads``, ``--rounds`` (at least :data:`MIN_ROUNDS`) and ``--warmup``, with a bench's defaults."""
    parser.add_argument("--threads", type=int, default=threads, help=f"threads to pin (default {threads})")
    parser.add_argument("--rounds", type=_rounds, default=rounds,
                        help=f"alternating rounds of the compared sides (>= {MIN_ROUNDS}; default {rounds})")
    parser.add_argument("--warmup", type=_count, default=warmup,
                        help=f"warm-up calls of each side before the rounds, not kept (default {warmup})")
    return parser


def protocol_line(threads: str, rounds: int, warmup: int, alloc: str = "") -> str:
    return (f"protocol: {threads}; {alloc or allocator()}; {warmup} warm-up call(s) per side, then {rounds} "
            f"rounds alternating the sides (A B A B ...) in one process; every figure is the median "
            f"[min–max] over the rounds, ratios per round (A_i / B_i)")


def begin(args: argparse.Namespace, out=None) -> None:
    """Print the machine line (first), pin ``args.threads``, print the protocol line."""
    out = out or sys.stdout
    print(machine_line(), file=out, flush=True)
    print(protocol_line(pin_threads(args.threads), args.rounds, args.warmup), file=out, flush=True)


# --- alternating rounds ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Spread:
    """Median and range of one figure over ``n`` rounds."""

    median: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> "Spread":
        xs = [float(v) for v in values]
        if not xs:
            raise ValueError("Spread.of: no values")
        return cls(statistics.median(xs), min(xs), max(xs), len(xs))

    def scaled(self, k: float) -> "Spread":
        """The same figure in another unit (e.g. ``scaled(1e3)``: seconds to milliseconds)."""
        return Spread(self.median * k, self.lo * k, self.hi * k, self.n)

    def text(self, fmt: str = "{}", unit: str = "") -> str:
        """``'0.412 s [0.401–0.430] over 5 rounds'``; ``fmt`` formats each number (default: :func:`num`)."""
        f = (lambda x: num(x)) if fmt == "{}" else fmt.format
        u = f" {unit}" if unit else ""
        return f"{f(self.median)}{u} [{f(self.lo)}–{f(self.hi)}] over {self.n} rounds"


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    """A side that returns the wall seconds of one call of ``fn``."""

    def side() -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    return side


@dataclass
class Rounds:
    """What :func:`alternate` measured: ``results[side][i]`` is side's figure (a number, or a dict of
    numbers) in round i; ``order`` is every kept call's side, in the order the calls ran."""

    sides: tuple[str, ...]
    results: dict[str, list] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    def values(self, side: str, key: object = None) -> list[float]:
        """The figure of ``side`` (its ``key`` when the side returns a dict), one per round."""
        if side not in self.results:
            raise KeyError(f"no side {side!r}; sides: {', '.join(self.sides)}")
        out = []
        for r in self.results[side]:
            if isinstance(r, Mapping):
                if key is None:
                    raise KeyError(f"side {side!r} returns several figures; name one of {', '.join(map(str, r))}")
                r = r[key]
            elif key is not None:
                raise KeyError(f"side {side!r} returns one figure, not {key!r}")
            out.append(float(r))
        return out

    def spread(self, side: str, key: object = None) -> Spread:
        return Spread.of(self.values(side, key))

    def ratio(self, a: str, b: str, key: object = None, key_b: object = None) -> Spread:
        """Per-round ratio ``a_i / b_i`` (``key`` of a, ``key_b`` of b, default the same key)."""
        return ratio_spread(self.values(a, key), self.values(b, key if key_b is None else key_b))


def ratio_spread(a: Iterable[float], b: Iterable[float]) -> Spread:
    """Median and range of the per-round ratios ``a_i / b_i`` (equal-length, paired by round)."""
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"ratio_spread: {len(a)} rounds against {len(b)}: ratios pair round i with round i")
    return Spread.of(x / y for x, y in zip(a, b))


def alternate(sides: Mapping[str, Callable[[], object]], rounds: int = MIN_ROUNDS, warmup: int = DEFAULT_WARMUP,
              warm: Iterable[str] | None = None, on_call: Callable[[int, str, object], None] | None = None) -> Rounds:
    """Run ``warmup`` rounds of the sides in ``warm`` (default: every side; results dropped), then
    ``rounds`` rounds of every side in the mapping's order: A B A B ... ``on_call(round, side, result)``
    is called after each kept call (progress lines)."""
    names = tuple(sides)
    if not names:
        raise ValueError("alternate: no sides")
    if rounds < 1 or warmup < 0:
        raise ValueError(f"alternate: rounds={rounds}, warmup={warmup}")
    warm_names = names if warm is None else tuple(warm)
    unknown = set(warm_names) - set(names)
    if unknown:
        raise ValueError(f"alternate: warm names unknown sides {sorted(unknown)}")
    for _ in range(warmup):
        for name in warm_names:
            sides[name]()
    out = Rounds(names, {n: [] for n in names})
    for i in range(rounds):
        for name in names:
            result = sides[name]()
            if not isinstance(result, (int, float, Mapping)) or isinstance(result, bool):
                raise TypeError(f"alternate: side {name!r} returned {type(result).__name__}, expected a number "
                                f"or a dict of numbers (wrap a plain callable in timed())")
            out.results[name].append(result)
            out.order.append(name)
            if on_call is not None:
                on_call(i, name, result)
    return out


# --- printing --------------------------------------------------------------------------------------

def num(x: float | int) -> str:
    """Three significant digits without an exponent for everyday magnitudes (0.00123, 0.923, 12.3,
    1234); integers as they are; nan/inf as Python writes them."""
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    x = float(x)
    if not math.isfinite(x) or x == 0:
        return "0" if x == 0 else str(x)
    decimals = max(0, 2 - math.floor(math.log10(abs(x))))
    if decimals > 8:
        return f"{x:.3g}"
    return f"{x:.{decimals}f}"


def figure_line(name: str, spread: Spread, unit: str = "", fmt: str = "{}") -> str:
    """``'<name>: <median> [<min>–<max>] over n rounds'``: the line every figure gets."""
    return f"{name}: {spread.text(fmt, unit)}"


def figures_line(figures: Mapping[str, object]) -> str:
    """The last line: ``key=value`` pairs in the given order. Keys are ``[a-z][a-z0-9_]*``; a
    :class:`Spread` is written as its median; numbers via :func:`num`; strings must hold no blank or '='."""
    parts = []
    for key, value in figures.items():
        if not _KEY.match(key):
            raise ValueError(f"figures_line: key {key!r} is not [a-z][a-z0-9_]*")
        if isinstance(value, Spread):
            value = value.median
        text = value if isinstance(value, str) else num(value)
        if not text or any(c.isspace() for c in text) or "=" in text:
            raise ValueError(f"figures_line: value of {key!r} ({text!r}) must be one word without '='")
        parts.append(f"{key}={text}")
    if not parts:
        raise ValueError("figures_line: no figures")
    return " ".join(parts)


def parse_figures(line: str) -> dict[str, str]:
    """The inverse of :func:`figures_line` (values as strings)."""
    out = {}
    for kv in line.split():
        key, sep, value = kv.partition("=")
        if not sep or not _KEY.match(key):
            raise ValueError(f"parse_figures: {kv!r} is not key=value")
        out[key] = value
    return out


if __name__ == "__main__":
    print(machine_line())
    sys.exit(0)
