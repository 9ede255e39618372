"""The plain base loss: the configured metric loss on the class embedding, nothing else (the contract's defaults)."""

from __future__ import annotations

from unseen.methods.base import Method


class Baseline(Method):
    name = "baseline"
