"""After training: a gallery index of image embeddings (`index.py`), searching it (`search.py`), clustering a
folder (`cluster.py`) and the web page and JSON API over an index (`server.py`). docs/products.md shows them in
use."""

from unseen.retrieval.errors import IndexMismatchError, RetrievalError, UploadError

__all__ = ["IndexMismatchError", "RetrievalError", "UploadError"]
