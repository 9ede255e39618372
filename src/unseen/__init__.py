"""unseen: deep metric learning that generalizes to classes never seen in training."""

__version__ = "0.1.0"
