"""The errors of the retrieval products: one line naming the file, field or upload and what was expected."""

from unseen.errors import UnseenError


class RetrievalError(UnseenError):
    """An index, a query or a clustering request cannot be served (`runs/x/index: no index.json there`)."""


class IndexMismatchError(RetrievalError):
    """The files of an index disagree, or its queries would be embedded by another checkpoint than its gallery."""


class UploadError(RetrievalError):
    """An uploaded query is not an acceptable image; `status` is the HTTP status the server answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
