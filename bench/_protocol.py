"""What every bench prints first: the machine its figures were measured on."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """``machine: <cpu>, <n> cores, <os>, python X, torch Y, device Z, <UTC date>`` (torch only if
    importable): what a saved bench output needs to say where and when its figures were measured."""
    parts = [cpu_model(), f"{os.cpu_count()} cores", platform.system(), f"python {platform.python_version()}"]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
        parts.append(f"device {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "device cpu")
    except ImportError:
        pass
    parts.append(f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d}")
    return "machine: " + ", ".join(parts)


if __name__ == "__main__":
    print(machine_line())
    sys.exit(0)
