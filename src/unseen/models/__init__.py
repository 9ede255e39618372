"""Trunks, heads and the embedder that maps images to named outputs."""
