"""Training: the loop, checkpoints, and opening runs for evaluation."""
