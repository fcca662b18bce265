"""The one exception type the CLI turns into a one-line message."""


class KdqatError(Exception):
    """A user-facing error: bad input, a bad option or an unusable file. The message says how to fix it."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (its type's name when the message is empty): how a
    library's error is quoted inside a one-line kdqat message."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__
