"""The one user-facing error class: bad input or an impossible request, printed as one line."""

from __future__ import annotations


class QuantwiseError(ValueError):
    """A user-facing failure: the CLI prints its message as one line and exits with status 2.

    A ValueError so library callers that already catch ValueError for bad arguments keep working."""


class TextWarning(UserWarning):
    """Input text that is readable but probably not what the user meant to give (the CLI shows it
    as one 'warning:' line)."""
