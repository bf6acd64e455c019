"""The config schema file (rules/schemas/config.schema.yaml) and the error a wrong value raises.

The bottom layer of configuration: ssmttm.config validates whole configs with it, and
ssmttm.settings builds each stage's settings from it. Stage modules import ssmttm.settings, while
ssmttm.config imports stage registries to cross-check names, so the schema lives here, below both.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ssmttm.errors import SsmttmError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "rules" / "schemas" / "config.schema.yaml"
NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # the schema's $defs/name; a test checks they agree


class ConfigError(SsmttmError, ValueError):
    """A configuration value is wrong; the message names every offending key."""


def load_schema(path: str | os.PathLike = SCHEMA_PATH) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)
