"""Name -> entry registries, one pattern for everything picked by name in a config: losses, miners, methods,
backbones, dataset readers and metrics.

An entry is registered once, under one name, either as the object itself or lazily as `"module:attribute"`
(imported the first time it is asked for, so reading a config never imports every dataset reader). A failed
lookup is one ConfigError line naming the config key and listing the known names. A registry may have a
`fallback` that resolves names it does not list (the backbones: any timm model name).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from unseen.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind; `kind` and the config `key` that picks one name it in errors."""

    def __init__(self, kind: str, key: str, fallback: Callable[[str], T | None] | None = None,
                 known_hint: str = "") -> None:
        self.kind = kind
        self.key = key
        self.fallback = fallback
        self.known_hint = known_hint
        self._entries: dict[str, T | str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator (or call) that adds `entry` under `name`; a second registration of a name is an error."""

        def add(entry: T) -> T:
            self._add(name, entry)
            return entry

        return add

    def register_lazy(self, name: str, target: str) -> None:
        """Add `"package.module:attribute"` under `name`; imported on first `get`."""
        if ":" not in target:
            raise ValueError(f"{self.kind} '{name}': lazy target must be 'module:attribute', got {target!r}")
        self._add(name, target)

    def _add(self, name: str, entry: T | str) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = entry

    def get(self, name: str) -> T:
        if name not in self._entries:
            found = self.fallback(name) if self.fallback is not None else None
            if found is not None:
                return found
            known = ", ".join(self.names())
            raise ConfigError(f"{self.key}: unknown {self.kind} '{name}'; known: {known}{self.known_hint}")
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attribute = entry.partition(":")
            entry = getattr(importlib.import_module(module), attribute)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
