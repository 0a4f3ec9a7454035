"""One registry shape for every extension point (scoring methods, sketch kinds, embedding kinds,
launchers): a name maps to "module:attribute", imported on first use.

Adding an implementation is its module plus one line in its layer's table. Lazy loading keeps the
tables cheap to import (the `iprox-ray` CLI lists names without loading torch), and the table is
plain strings, so a test can walk every target and check the arrows of the import graph.
"""

from __future__ import annotations

import importlib
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownName(ValueError):
    """A name no implementation is registered under."""


class Registry(Generic[T]):
    def __init__(self, what: str, table: dict[str, str]) -> None:
        self.what = what  # e.g. "scoring method", in error messages
        self._table = dict(table)
        self._loaded: dict[str, T] = {}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._table)

    def targets(self) -> dict[str, str]:
        """name -> "module:attribute" (what the import-graph test walks)."""
        return dict(self._table)

    def add(self, name: str, target: str) -> None:
        """Register one more implementation (plugins and tests; the table is the usual place)."""
        if name in self._table and self._table[name] != target:
            raise ValueError(f"{self.what} {name!r} is already registered as {self._table[name]}")
        self._table[name] = target
        self._loaded.pop(name, None)

    def remove(self, name: str) -> None:
        self._table.pop(name, None)
        self._loaded.pop(name, None)

    def check(self, name: str) -> None:
        if name not in self._table:
            raise UnknownName(f"unknown {self.what} {name!r} (known: {', '.join(self._table)})")

    def load(self, name: str) -> T:
        """The registered attribute itself (a class, or a function)."""
        self.check(name)
        if name not in self._loaded:
            module, attr = self._table[name].split(":")
            self._loaded[name] = getattr(importlib.import_module(module), attr)
        return self._loaded[name]

    def __contains__(self, name: Any) -> bool:
        return name in self._table
