"""User-facing errors.

Anything a user can cause (bad data, bad options, a mismatched cache) raises
:class:`EgkdError` with a one-line message naming the problem. The CLI turns it
into that line on stderr and exit code 2, without a traceback.
"""


class EgkdError(Exception):
    """A problem with the user's input, reported as one line (CLI exit code 2)."""
