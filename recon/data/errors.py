"""Errors raised when reading or writing data files."""


class DataError(ValueError):
    """A data file or array is missing, unreadable or malformed; the message names the file and the problem."""
