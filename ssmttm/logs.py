"""Logging and progress bars for stages: a stage logs to stderr, which each rule redirects to its log.

On a terminal :func:`progress` is tqdm's bar. In a log file a bar would be one endless line of
carriage-return redraws, so there it writes plain, newline-terminated lines instead, at most one every
``SSMTTM_PROGRESS_INTERVAL`` seconds (default 10) plus a final one, e.g.::

    2026-12-06 22:41:03 train: 1200/5000 it (24%) 3.1 it/s, ETA 0:20:25, loss=3.2109, lr=1.00e-04
    2026-12-06 23:07:56 train: 5000/5000 it (100%) 3.1 it/s, done in 0:26:53, loss=2.0114, lr=1.00e-05
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import time
from typing import Any, Iterable, Iterator

INTERVAL_ENV = "SSMTTM_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 10.0


def setup(name: str = "ssmttm", level: int = logging.INFO) -> logging.Logger:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    return logging.getLogger(name)


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(seconds))))


class PlainProgress:
    """The part of tqdm's interface the stages use (iteration, ``update``, ``set_postfix``,
    ``set_description``, ``write``, ``close``, context manager), writing plain timestamped lines.

    A line is written by :meth:`update` when ``interval`` seconds have passed since the last one, and
    by :meth:`close` (also at the end of iteration): ``<date> <time> <desc>: <n>/<total> <unit>
    (<pct>%) <rate>, ETA <h:mm:ss>[, <postfix>]``; the final line has ``done in <h:mm:ss>`` instead of
    the ETA. Without a known total there is no percentage and no ETA. ``leave=False`` still gets its
    final line: in a log file there is no bar to erase.
    """

    def __init__(self, iterable: Iterable | None = None, desc: str | None = None, total: float | None = None,
                 leave: bool = True, file=None, unit: str = "it", unit_scale: bool | float = False,
                 initial: float = 0, disable: bool = False, interval: float | None = None, postfix: Any = None,
                 **_tqdm_only: Any):
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except (TypeError, AttributeError):
                total = None
        self.total = total
        self.desc = desc or ""
        self.leave = leave
        self.file = file if file is not None else sys.stderr
        self.unit = unit
        self.unit_scale = unit_scale
        self.initial = self.n = initial
        self.disable = disable
        self.interval = _interval() if interval is None else float(interval)
        self.postfix = ""
        if isinstance(postfix, dict):
            self.set_postfix(postfix)
        elif postfix is not None:
            self.set_postfix_str(str(postfix))
        self.start_t = self.last_print_t = time.monotonic()
        self.closed = False

    # -- tqdm interface -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("PlainProgress without an iterable is not iterable")
        try:
            for obj in self.iterable:
                yield obj
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total) if self.total is not None else len(self.iterable)  # type: ignore[arg-type]

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        if self.disable or self.closed:
            return
        self.n += n
        now = time.monotonic()
        if now - self.last_print_t >= self.interval:
            self._line(now, final=False)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    set_description_str = set_description

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        """Lines are rate-bounded; a refresh request does not force one."""

    def clear(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to clear in a log file."""

    def reset(self, total: float | None = None) -> None:
        self.n = self.initial = 0
        if total is not None:
            self.total = total
        self.start_t = self.last_print_t = time.monotonic()

    def write(self, s: str, file=None, end: str = "\n", nolock: bool = False) -> None:
        self._emit(str(s) + end, file)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.disable:
            self._line(time.monotonic(), final=True)

    # -- formatting -----------------------------------------------------------------------------------
    def _amount(self, x: float) -> str:
        if self.unit_scale:
            from tqdm import tqdm

            scale = 1.0 if self.unit_scale is True else float(self.unit_scale)
            return tqdm.format_sizeof(x * scale)
        return f"{x:g}" if isinstance(x, float) else str(x)

    def format(self, now: float, final: bool = False) -> str:
        elapsed = now - self.start_t
        done = self.n - self.initial
        count = f"{self._amount(self.n)}/{self._amount(self.total)}" if self.total is not None else self._amount(self.n)
        parts = [f"{count}{self.unit}" if self.unit_scale else f"{count} {self.unit}"]  # 2.00M/3.00MB, 12/40 clip
        if self.total:
            parts[0] += f" ({100.0 * self.n / self.total:.0f}%)"
        rate = done / elapsed if elapsed > 0 and done > 0 else None
        if rate is None:
            speed = f"? {self.unit}/s"
        elif self.unit_scale:
            speed = f"{self._amount(rate)}{self.unit}/s"
        elif rate >= 100:
            speed = f"{rate:.0f} {self.unit}/s"
        elif rate >= 1 or final:
            speed = f"{rate:.3g} {self.unit}/s"
        else:
            speed = f"{1.0 / rate:.3g} s/{self.unit}"
        parts[0] += f" {speed}"
        if final:
            parts.append(f"done in {_duration(elapsed)}")
        elif self.total is not None:
            parts.append(f"ETA {_duration((self.total - self.n) / rate)}" if rate else "ETA ?")
        if self.postfix:
            parts.append(self.postfix)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        return f"{stamp} {self.desc + ': ' if self.desc else ''}{', '.join(parts)}"

    def _line(self, now: float, final: bool) -> None:
        self.last_print_t = now
        self._emit(self.format(now, final) + "\n")

    def _emit(self, text: str, file=None) -> None:
        f = file if file is not None else self.file
        try:
            f.write(text)
            f.flush()
        except (OSError, ValueError):  # closed or broken log stream: progress is not worth a crash
            pass


def _is_tty(f) -> bool:
    try:
        return bool(f.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def progress(iterable=None, **kwargs):
    """A progress bar on stderr (or ``file=``): tqdm on a terminal, :class:`PlainProgress` lines
    (no carriage-return redraws) when it is not one, e.g. a rule's log file."""
    kwargs.setdefault("file", sys.stderr)
    if not _is_tty(kwargs["file"]):
        return PlainProgress(iterable, **kwargs)
    from tqdm import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
