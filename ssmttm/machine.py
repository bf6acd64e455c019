"""What a CPU run's floating-point results depend on besides the code and its inputs.

The demo is bitwise reproducible on one machine (any core count), but not across CPUs: PyTorch picks
its vectorised kernels (AVX2, AVX-512, ...) and its BLAS picks its GEMM code path by what the CPU
offers, and each path rounds differently. Measured on two 2-core build machines with the same lock
file: the tiny PaSST weights that `demo_mirror` draws (``normal_``, which is vectorised) already
differ between an AMD EPYC and an Intel Xeon, and 200 training steps carry such last-bit
differences into every generated clip and score. :func:`numerics` names the pieces that decide
this, so a number can be reported together with what produced it (``ssmttm docs-results`` writes
it beside the demo's tables, and the staleness test compares numbers exactly only on a machine
that matches it).
"""

from __future__ import annotations

import functools
import platform

# CPU features that change which kernels PyTorch and its BLAS run (and so the float rounding).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} off Linux)."""
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                out[key.strip()] = value.strip()
    except OSError:
        pass
    return out


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what :mod:`platform` knows."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


@functools.cache
def numerics() -> str:
    """``<cpu model>; <ISA flags>; torch <version>, ATen CPU capability <cap>``: one line that two
    machines share when their CPU runs give the same floats (fixed for a process, so read once:
    ``docs-results`` writes it into two blocks)."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    isa = "+".join(f for f in ISA_FLAGS if f in flags) or platform.machine()
    import torch

    return (f"{cpu_model()}; {isa}; torch {torch.__version__}, ATen CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}")
