"""The one public exception type."""


class CodecError(Exception):
    """Any failure the user can cause: bad input, bad file, unknown model, ..."""
