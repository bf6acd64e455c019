"""The root of every error ssmttm raises on purpose, and the errors several layers share.

Each named error of the package (``ConfigError``, ``FetchError``, ``CheckpointError``,
``MissingWeightError``, ...) derives from :class:`SsmttmError` *and* from the builtin it always was
(``ValueError``, ``RuntimeError``, ``FileNotFoundError``), so ``except SsmttmError`` catches every
failure the pipeline reports by name, while ``except ValueError`` and friends keep working.

This module is the bottom of the package: it imports nothing from ssmttm, so any module may import
it without creating a dependency cycle.
"""

from __future__ import annotations


class SsmttmError(Exception):
    """A failure the pipeline detected and named: bad config or flags, a missing or corrupt input,
    checkpoint or weight, a download that did not verify. The message says what and where, so a stage
    reports it in one paragraph with no traceback. Anything else escaping a stage is a bug."""


class CheckpointError(SsmttmError, ValueError):
    """A checkpoint that cannot be used (an LM or refiner checkpoint folder, a Demucs package file):
    missing, unsafe to unpickle, or not matching its config; the message names the path and why."""
