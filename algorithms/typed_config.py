"""Typed configs: a dataclass built from a plain mapping (JSON, YAML, flags), refusing unknown keys
and values that do not fit, with one-line errors (:class:`ConfigError`) meant for the user.

Used by the trainers' hyperparameters and the architectures' arguments alike; it imports nothing
from the rest of ``algorithms``, so that both can import it.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """An impossible or unknown setting; the message is one line meant for the user."""


def dataclass_from_dict(cls: type, values: dict[str, Any], what: str):
    """Build dataclass ``cls`` from ``values``, refusing keys it does not declare and values that do
    not fit a field's annotation (``int``, ``float`` (finite), ``bool``, ``str``, ``X | None``,
    ``list[X]``, ``tuple[X, ...]``, ``dict``; ``Any`` takes anything)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{what}s must be a mapping of keys to values, got {values!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown {what} key(s) {unknown}; valid keys: {sorted(names)}")
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an annotation that cannot be resolved here is not checked
        hints = {}
    for key, value in values.items():
        expected = hints.get(key, Any)
        if not _fits(value, expected):
            raise ConfigError(f"{what} {key} must be {_describe_type(expected)}, got {value!r}")
    obj = cls(**values)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


def _fits(value: Any, annotation: Any) -> bool:
    """Whether ``value`` (as read from JSON/YAML/flags) fits a dataclass field's annotation."""
    if annotation is Any or annotation is object:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
        item = args[0] if args else Any
        return all(_fits(v, item) for v in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True  # an annotation this checker does not know: the dataclass's own validate decides


def _describe_type(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe_type(a) for a in args)
    if annotation is type(None):
        return "null"
    if origin in (list, tuple, collections.abc.Sequence):
        plural = {int: "integers", float: "finite numbers", str: "strings", bool: "booleans"}
        return f"a list of {plural.get(args[0], 'values') if args else 'values'}"
    if origin is dict or annotation is dict:
        return "a mapping"
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def check(cond: bool, message: str) -> None:
    """Raise a one-line ConfigError with ``message`` unless ``cond``."""
    if not cond:
        raise ConfigError(message)
