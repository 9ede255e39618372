"""The one error the evaluation engine raises for bad input: a single line naming the field or file."""

from unseen.errors import UnseenError


class EvaluationError(UnseenError, ValueError):
    """Bad evaluation input, e.g. `embeddings: 3 rows contain NaN or inf (first: row 17)`."""
