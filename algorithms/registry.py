"""Name registries: the single source of truth for what can be selected by name.

A module adds itself with a decorator (``@ALGORITHMS.register("mf")``); callers look names up
with ``ALGORITHMS.get(name)``, which fails with the list of valid names, and list them with
``ALGORITHMS.names("ff*")`` (shell-style wildcards).
"""

from __future__ import annotations

import fnmatch
import warnings
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; its message lists the valid names."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                warnings.warn(f"{self.kind} {name!r} registered twice; the later one wins", stacklevel=2)
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        return name in self._entries


ALGORITHMS: Registry[type] = Registry("algorithm")
ARCHITECTURES: Registry[Callable] = Registry("architecture")
