"""The values of the configuration dataclasses: checked against their field types, frozen, and made plain.

YAML and ``key=value`` overrides give lists and dicts; a config holds them as tuples and read-only
mappings (:func:`freeze`), so that a config shared by several stages cannot be changed by accident
(``cfg.model.names.append("x")`` raises AttributeError). :func:`to_plain` turns a config back into
the lists and dicts that ``config.yaml``, JSON files and the stages' cache keys are made of, exactly
as they were before configs were frozen. Type names read as YAML does: ``tuple[str, ...]`` is
``list[str]``, ``Mapping[str, int]`` is ``dict[str, int]``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from medauc.errors import ConfigError


def freeze(value: Any) -> Any:
    """Lists and tuples -> tuples, mappings -> read-only ``MappingProxyType``, nested; other values unchanged."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, Mapping):
        return types.MappingProxyType({k: freeze(v) for k, v in value.items()})
    return value


def to_plain(value: Any) -> Any:
    """A config (or section, or value) as plain nested dicts and lists, as ``dataclasses.asdict`` gave
    before tuples and read-only mappings: what YAML and JSON can write."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    return value


class Frozen:
    """Base of the config sections: list and dict values, however the section was built (YAML, the
    constructor, ``dataclasses.replace``), are stored as tuples and read-only mappings."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, (list, tuple, Mapping)):
                object.__setattr__(self, f.name, freeze(value))  # frozen dataclass: the one way to set it


def type_name(tp: Any) -> str:
    """``tp`` as a YAML user writes it: ``list[str]``, ``dict[str, int]``, ``str | list[float]``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is tuple:
        return f"list[{type_name(args[0])}]"
    if origin in (dict, Mapping):
        return f"dict[{type_name(args[0])}, {type_name(args[1])}]"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` as type ``tp`` (frozen) or raise ConfigError naming ``key`` and the expected type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = ConfigError(f"{key}: expected {type_name(tp)}, got {value!r} ({type(value).__name__})")
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is type(None) and value is None:
                return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError:
                pass
        raise bad
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        return tuple(coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise bad
        return types.MappingProxyType({coerce(k, args[0], key): coerce(v, args[1], f"{key}.{k}") for k, v in value.items()})
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-4" (no dot) as a string: accept any text Python reads as a number.
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    raise bad  # pragma: no cover - every field type is handled above


def build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """``cls(**values)`` with every value checked and converted to its field's type, sections built
    recursively; ConfigError names an unknown key (listing the valid ones) or a value of the wrong type."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        where = prefix.rstrip(".") or "top level"
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]!s} ({where}); valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in values.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name}: expected a mapping of {sorted(f.name for f in dataclasses.fields(tp))}, got {value!r}")
            kwargs[name] = build(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(value, tp, f"{prefix}{name}")
    return cls(**kwargs)
