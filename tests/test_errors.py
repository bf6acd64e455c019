"""One error base class: every exception class of the package derives from SsmttmError.

Every module of ``ssmttm`` is imported (importing is cheap: heavy libraries load inside functions,
and torch is installed for the modules that import it at the top) and every exception class it
defines is checked: it derives from :class:`ssmttm.errors.SsmttmError`, keeps its builtin base, and
its name has one definition in the whole package.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from collections import defaultdict
from pathlib import Path

import pytest

import ssmttm
from ssmttm import errors
from ssmttm.errors import CheckpointError, SsmttmError

SKIP = {"ssmttm.__main__"}  # runs the CLI when imported


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(ssmttm.__path__, "ssmttm.") if m.name not in SKIP)


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for name in _modules():
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == name:
                found.append(obj)
    return found


def test_the_walk_finds_the_named_errors():
    names = {cls.__name__ for cls in _exception_classes()}
    assert {"ConfigError", "FetchError", "MissingWeightError", "CheckpointError", "TokenStoreError",
            "GenerationError", "RefinerError"} <= names


def test_every_exception_class_derives_from_ssmttm_error():
    stray = [f"{cls.__module__}.{cls.__qualname__}" for cls in _exception_classes()
             if not issubclass(cls, SsmttmError)]
    assert not stray, f"exception classes outside the SsmttmError hierarchy: {stray}"


def test_every_error_name_has_one_definition():
    by_name = defaultdict(set)
    for cls in _exception_classes():
        by_name[cls.__name__].add(f"{cls.__module__}.{cls.__qualname__}")
    twice = {name: sorted(where) for name, where in by_name.items() if len(where) > 1}
    assert not twice, f"error classes defined more than once: {twice}"


@pytest.mark.parametrize("module, name, builtin", [
    ("ssmttm.config", "ConfigError", ValueError),
    ("ssmttm.audio", "AudioError", ValueError),
    ("ssmttm.data.fetch", "FetchError", RuntimeError),
    ("ssmttm.weights", "WeightError", RuntimeError),
    ("ssmttm.weight_cache", "MissingWeightError", FileNotFoundError),
    ("ssmttm.tokens.store", "TokenStoreError", ValueError),
    ("ssmttm.generate.generate", "GenerationError", RuntimeError),
])
def test_named_errors_keep_their_builtin_base(module, name, builtin):
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, SsmttmError) and issubclass(cls, builtin)
    with pytest.raises(builtin):  # `except ValueError` callers keep working
        raise cls("x")


def test_one_checkpoint_error():
    from ssmttm.data import vocals
    from ssmttm.models import checkpoint

    assert checkpoint.CheckpointError is vocals.CheckpointError is CheckpointError
    assert issubclass(CheckpointError, ValueError)


def test_errors_module_is_the_bottom():
    tree = ast.parse(Path(errors.__file__).read_text(encoding="utf-8"))
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.split(".")[0] == "ssmttm"], imported


def test_cli_turns_a_named_error_into_a_message_and_exit_code_2(monkeypatch, capsys):
    from ssmttm import cli

    monkeypatch.setitem(cli.STAGES, "probe", (__name__, "_failing_stage", "test stage"))
    assert cli.main(["probe"], own_numba_cache=False) == 2
    assert capsys.readouterr().err.strip() == "ssmttm probe: the input names what is wrong"


def _failing_stage(argv):
    from ssmttm.data.fetch import FetchError

    raise FetchError("the input names what is wrong")
