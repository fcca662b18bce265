"""The one exception type the CLI turns into a one-line message."""


class KdqatError(Exception):
    """A user-facing error: bad input, a bad option or an unusable file. The message says how to fix it."""
