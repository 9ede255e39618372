"""Generalization methods by name (`method.name`).

A method is one module in this package: a `Method` subclass with a `name` registers itself when its module is
imported, and every module of the package is imported here, so adding a method is adding its file (and a
config); nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil

from unseen.methods.base import METHODS, Batch, LossOutput, Method, MethodContext

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Batch", "LossOutput", "Method", "MethodContext"]
