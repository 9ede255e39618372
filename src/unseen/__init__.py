"""unseen: deep metric learning that generalizes to classes never seen in training.

`unseen.load(run_dir)` gives a trained `unseen.Embedder` from its run folder alone (imported on first use, so
`import unseen` stays light).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from unseen.artifact import Embedder, load

__all__ = ["Embedder", "__version__", "load"]


def __getattr__(name: str) -> Any:
    if name in ("Embedder", "load"):
        from unseen import artifact

        return getattr(artifact, name)
    raise AttributeError(f"module 'unseen' has no attribute {name!r}")
