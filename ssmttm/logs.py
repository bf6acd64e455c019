"""Logging and progress bars for stages: a stage logs to stderr, which each rule redirects to its log."""

from __future__ import annotations

import logging
import os
import sys


def setup(name: str = "ssmttm", level: int = logging.INFO) -> logging.Logger:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    return logging.getLogger(name)


def progress(iterable=None, **kwargs):
    """tqdm on stderr; plain (no carriage-return redraws) when stderr is not a terminal."""
    from tqdm import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", float(os.environ.get("SSMTTM_PROGRESS_INTERVAL", "10")))
    return tqdm(iterable, **kwargs)
