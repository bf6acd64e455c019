"""One home per setting: the config schema holds every default, a stage's dataclass is filled from its
validated config section, and the stage's command-line flags are generated from that same dataclass.

A stage declares its settings as a dataclass whose field names are config keys, and the schema nodes
those keys live in (``SCHEMA_NODES``, e.g. ``("train", "experiments.*")``: the shared recipe, then an
experiment's own keys). Then

- a Snakemake rule hands the stage one JSON object, the resolved section (``--settings '{...}'``,
  built by :mod:`ssmttm.rule_params` from the validated config), so no flag string is kept by
  hand in a rule and a changed value reruns exactly the jobs whose section changed;
- a person running the stage by hand gets one flag per field, named like the key (``warmup_steps`` ->
  ``--warmup-steps``), whose default is the schema's;
- both paths end in the same check: each value is validated against its key's schema, and an error
  names the flag and the config key.

Fields that are not config keys (input and output paths, a wildcard such as the seed of a run) stay
ordinary argparse arguments of the stage. This module imports nothing heavy (Snakemake imports it
at DAG-build time through ssmttm.workflow).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import types
import typing
from functools import lru_cache
from typing import Any

from ssmttm.schema import SCHEMA_PATH, ConfigError, load_schema


@lru_cache(maxsize=1)
def _root() -> dict:
    return load_schema(SCHEMA_PATH)


def _deref(node: dict) -> dict:
    ref = node.get("$ref")
    if ref and ref.startswith("#/$defs/"):
        return {**_root()["$defs"][ref.split("/")[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def schema_node(dotted: str) -> dict:
    """The schema of a config section: ``"train"``, ``"text"``, ``"experiments.*"`` (one experiment),
    ``"tokens.ceiling"``; ``*`` steps into a mapping's values (``additionalProperties``), or into any one
    property of an object whose properties all share one ``$ref`` (``"source.metadata.*"``: one remote file);
    ``""`` is the whole config (its keys: the top-level sections, e.g. ``studies``)."""
    node = _root()
    for part in dotted.split(".") if dotted else ():
        node = _deref(node)
        node = _any_value(node, dotted) if part == "*" else node["properties"][part]
    return _deref(node)


def _any_value(node: dict, dotted: str) -> dict:
    """The schema of any one value of ``node`` (the ``*`` step of :func:`schema_node`)."""
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        return extra
    refs = {sub.get("$ref") for sub in node.get("properties", {}).values()}
    if len(refs) == 1 and None not in refs:
        return {"$ref": refs.pop()}
    raise KeyError(f"{dotted}: '*' needs a mapping (additionalProperties) or properties that share one $ref")


def key_schemas(nodes: tuple[str, ...]) -> dict[str, tuple[str, dict]]:
    """key -> (dotted config key, its schema) over ``nodes``; a later node's key wins."""
    out: dict[str, tuple[str, dict]] = {}
    for dotted in nodes:
        for key, sub in schema_node(dotted).get("properties", {}).items():
            out[key] = (f"{dotted}.{key}" if dotted else key, _deref(sub))
    return out


def defaults(nodes: tuple[str, ...]) -> dict[str, Any]:
    """The schema defaults of every key of ``nodes`` that has one (a later node's wins)."""
    out = {}
    for key, (_, sub) in key_schemas(nodes).items():
        if "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
    return out


def setting_fields(cls) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are config keys of its ``SCHEMA_NODES`` (the rest are paths/wildcards)."""
    keys = key_schemas(cls.SCHEMA_NODES)
    return [f for f in dataclasses.fields(cls) if f.name in keys and f.name not in getattr(cls, "FIXED", ())]


def flag(name: str, prefix: str = "") -> str:
    return "--" + prefix + name.replace("_", "-")


def _dest(name: str, prefix: str) -> str:
    return prefix.replace("-", "_") + name


def _hint(cls, name: str):
    return typing.get_type_hints(cls)[name]


def _parser_type(hint) -> tuple[Any, Any]:
    """(argparse type, nargs) for a field's type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _parser_type(rest[0])
        return _first_of(tuple(rest)), None
    if origin in (list, tuple):
        inner = args[0] if args else str
        return inner, (len(args) if origin is tuple and args and args[-1] is not Ellipsis else "*")
    if hint is bool:
        return _bool, None
    if origin is dict or hint is dict:
        return _json_object, None
    return hint, None


def _first_of(kinds: tuple) -> Any:
    """Parser of a key that takes several types (``offset: float | str``): the value of the first type, in
    the hint's order, that reads the text."""

    def parse(text: str):
        for kind in kinds:
            try:
                return _bool(text) if kind is bool else kind(text)
            except (TypeError, ValueError, argparse.ArgumentTypeError):
                continue
        raise argparse.ArgumentTypeError(f"expected {' or '.join(k.__name__ for k in kinds)}, got {text!r}")

    parse.__name__ = " or ".join(k.__name__ for k in kinds)
    return parse


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "yes", "1", "on"):
        return True
    if low in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def add_arguments(parser: argparse.ArgumentParser, cls, prefix: str = "") -> None:
    """``--settings JSON`` plus one flag per setting field of ``cls`` (defaults come later, from the schema).
    ``prefix``: for a second group of settings in one stage (``"refiner-"`` -> ``--refiner-settings``,
    ``--refiner-steps``)."""
    keys = key_schemas(cls.SCHEMA_NODES)
    parser.add_argument(flag("settings", prefix), dest=_dest("settings", prefix), type=_json_object, default=None,
                        help="JSON object of the resolved config section (what the Snakemake rule passes); flags "
                             "given as well override its keys")
    for f in setting_fields(cls):
        dotted, sub = keys[f.name]
        kind, nargs = _parser_type(_hint(cls, f.name))
        default = "the checkpoint's" if f.name in getattr(cls, "FROM_CHECKPOINT", ()) else \
            json.dumps(sub.get("default", "required"))
        text = f"{sub.get('description', '')} [config {dotted}; default: {default}]".strip()
        parser.add_argument(flag(f.name, prefix), dest=_dest(f.name, prefix), type=kind, nargs=nargs,
                            default=argparse.SUPPRESS, help=text.replace("%", "%%"))  # argparse formats help with %


def _check_value(label: str, dotted: str, sub: dict, value: Any) -> str | None:
    import jsonschema

    schema = {"$defs": _root()["$defs"], **sub}
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(value))
    if errors:
        return f"{label} / config key {dotted}: {errors[0].message}"
    return None


def resolve(cls, settings: dict | None = None, given: dict | None = None, prefix: str = "", **fixed: Any):
    """``cls`` from schema defaults <- ``settings`` (a rule's JSON) <- ``given`` (flags typed by hand) <-
    ``fixed`` (paths, wildcards, values the stage sets itself). Raises ConfigError naming every bad key.
    Fields in ``cls.FROM_CHECKPOINT`` take no schema default: None unless given (the stage then uses the
    value its checkpoint recorded, and checks a given one against it)."""
    keys = key_schemas(cls.SCHEMA_NODES)
    names = {f.name for f in setting_fields(cls)}
    optional = set(getattr(cls, "FROM_CHECKPOINT", ()))
    values = {k: v for k, v in defaults(cls.SCHEMA_NODES).items() if k in names and k not in optional}
    errors = []
    unknown = sorted(set(settings or {}) - names)
    if unknown:
        errors.append(f"{flag('settings', prefix)}: unknown key(s) {unknown} (known: {sorted(names)})")
    values.update({k: v for k, v in (settings or {}).items() if k in names})
    values.update(given or {})
    for name in sorted(names):
        if name not in values:
            if name in optional:
                values[name] = None
            else:
                errors.append(f"{flag(name, prefix)} / config key {keys[name][0]}: required")
            continue
        value = list(values[name]) if isinstance(values[name], tuple) else values[name]
        problem = _check_value(flag(name, prefix), keys[name][0], keys[name][1], value)
        if problem:
            errors.append(problem)
    if errors:
        raise ConfigError("invalid settings:\n  " + "\n  ".join(errors))
    return cls(**values, **fixed)


def from_args(parser: argparse.ArgumentParser, cls, args: argparse.Namespace, prefix: str = "", **fixed: Any):
    """Build ``cls`` from parsed arguments (see :func:`resolve`); a bad value ends in ``parser.error``."""
    names = {f.name for f in setting_fields(cls)}
    ns = vars(args)
    given = {k: ns[_dest(k, prefix)] for k in names if _dest(k, prefix) in ns}
    try:
        return resolve(cls, ns.get(_dest("settings", prefix)), given, prefix, **fixed)
    except ConfigError as exc:
        parser.error(str(exc))


def section_json(values: dict) -> str:
    """The ``--settings`` text a rule passes: sorted keys, so an unchanged section is byte-identical."""
    return json.dumps(values, sort_keys=True, separators=(",", ":"))
