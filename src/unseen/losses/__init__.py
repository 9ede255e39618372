"""Metric losses: the conventional ones from pytorch-metric-learning by name, and the methods' own terms."""

from unseen.losses.factory import LOSSES, MINERS, build_loss, build_miner

__all__ = ["LOSSES", "MINERS", "build_loss", "build_miner"]
