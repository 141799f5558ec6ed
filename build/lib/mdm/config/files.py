"""Configs from and to YAML: the shipped presets, a user's file, ``section.key=value`` overrides.

Overrides are parsed as YAML scalars. Unknown or mistyped keys are errors that
name the file, the key and the valid keys.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mdm.config.sections import ADDED_FIELDS, REMOVED_FIELDS, ConfigError, MDMConfig, _enum


PRESETS = ("tiny", "quickstart", "small", "base", "paper-7b", "shapesworld", "shapesworld-medium", "digits", "coco",
           "captionfolder", "imagefolder", "moving-digits", "dim-digits", "dim-shapesworld")


class _YAMLLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e-3`` is a float (YAML 1.1 wants ``1.0e-3``)."""


_YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _parse_yaml(text: str):
    return yaml.load(text, Loader=_YAMLLoader)


T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any], source: str = "<dict>", prefix: str = "") -> T:
    """Build dataclass ``cls`` from nested dicts, rejecting unknown keys and wrong types by name.

    A removed field (``REMOVED_FIELDS``) still loads when it holds the value that behaves as the code does now.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'the top level'} must be a mapping, "
                          f"got {type(data).__name__}")
    removed = REMOVED_FIELDS.get(cls, {})
    for name in sorted(set(data) & set(removed)):
        if data[name] != removed[name]:
            raise ConfigError(f"{source}: {prefix + name} was removed; only {removed[name]!r}, which the code does "
                              f"now, can still be read, got {data[name]!r}")
    data = {k: v for k, v in data.items() if k not in removed}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(prefix + k for k in unknown)}; valid keys in "
                          f"{prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, source, prefix + name)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def added_keys() -> dict[str, Any]:
    """``section.key -> value`` of every field added since configs were first saved (``ADDED_FIELDS``), at the
    value a config saved without it behaves as."""
    hints = typing.get_type_hints(MDMConfig)
    return {f"{section}.{key}": value for section, hint in hints.items()
            for key, value in ADDED_FIELDS.get(hint, {}).items()}


def from_saved_dict(data: dict[str, Any], source: str = "<dict>") -> MDMConfig:
    """An :class:`MDMConfig` from a config a run saved (``to_dict`` of a whole config, e.g. a checkpoint's
    ``config.json``). A saved config names every field it had, so a field it lacks was added after it was
    saved: it takes the value that behaves as the saving code did (``ADDED_FIELDS``), not today's default.
    A user's YAML file names only what it changes, so it is read with :func:`from_dict`."""
    if isinstance(data, dict):
        data = dict(data)
        for key, value in added_keys().items():
            section, name = key.split(".")
            if isinstance(data.get(section), dict) and name not in data[section]:
                data[section] = {**data[section], name: value}
    return from_dict(MDMConfig, data, source)


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, source, key + ".")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, source, key)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return _enum(hint, value, f"{source}: {key}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not (isinstance(value, hint) and
                                                 not (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{source}: {key} must be {hint.__name__}, got {value!r} ({type(value).__name__})")
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """Nested plain dict (enums as their values), ready for YAML or JSON."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        return v.value if isinstance(v, Enum) else v
    return plain(config)


def apply_overrides(config: T, overrides: list[str], source: str = "command line") -> T:
    """Return a copy of ``config`` with ``section.key=value`` overrides (values parsed as YAML)."""
    data = to_dict(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{source}: {'.'.join(parts[: i + 1])!r} is not a config section; sections: "
                                  f"{', '.join(k for k, v in node.items() if isinstance(v, dict))}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"{source}: unknown key {key!r}; valid keys here: {', '.join(sorted(node))}")
        node[parts[-1]] = _parse_yaml(raw)
    return from_dict(type(config), data, source)


def load_config(name_or_path: str | Path, overrides: list[str] | None = None) -> MDMConfig:
    """A shipped preset by name (``tiny``, ``small``, ``base``, ``paper-7b``) or a YAML file by path."""
    path = Path(name_or_path)
    if str(name_or_path) in PRESETS:
        text = resources.files("mdm.configs").joinpath(f"{name_or_path}.yaml").read_text()
        source = f"preset {name_or_path}"
    elif path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (presets: {', '.join(PRESETS)})")
        text, source = path.read_text(), str(path)
    else:
        raise ConfigError(f"unknown config {str(name_or_path)!r}: give a preset ({', '.join(PRESETS)}) "
                          f"or a path to a .yaml file")
    try:
        data = _parse_yaml(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    config = from_dict(MDMConfig, data, source)
    return apply_overrides(config, overrides) if overrides else config


def save_config(config: MDMConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
