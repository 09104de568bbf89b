"""The one public exception type."""


class CodecError(Exception):
    """Any failure the user can cause: bad input, bad file, unknown model, ..."""


class BudgetError(CodecError):
    """A file (or, in the encoder, an image at a rate) beyond a decoder budget
    (docs/format.md, "Decoder limits"): the work budget of the coding tables."""


def printable(text):
    """``text`` for a terminal or a log: every character that is not printable (control
    characters such as newlines and escape sequences, bidirectional overrides, ...) is
    written as its Python escape, so a name read from a file cannot forge lines or
    reach the terminal."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in s)


def short(text, limit=200):
    """``text`` (a path or a value in a message) cut to about ``limit`` characters."""
    s = str(text)
    return s if len(s) <= limit else f"{s[:limit // 2]}...{s[-(limit // 2 - 3):]}"
