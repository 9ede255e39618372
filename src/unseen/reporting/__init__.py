"""The run report (`unseen report RUN_DIR`): one self-contained HTML page with curves, metrics, a retrieval grid
and a 2-D map of the test embeddings (`report.py`), drawn by `plots.py`."""
