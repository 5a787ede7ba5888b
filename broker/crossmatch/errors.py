"""The one exception type catalog code raises, so a worker can catch it without catching bugs."""


class CatalogError(Exception):
    """A catalog file or index is unusable; the message names the file (and row/column when known)."""
