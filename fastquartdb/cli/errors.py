"""The CLI's own errors: what ``main`` turns into exit status 1 or 2.

Everything else the CLI expects to fail (``FQDBError``, ``OSError``,
``sqlite3.Error``) is caught in ``main`` too and printed as one line; only a
bug in ``fqdb`` itself shows a traceback.
"""

from __future__ import annotations

__all__ = ["CommandError", "UsageError"]


class CommandError(Exception):
    """The command could not do its work: exit status 1, the message on one line."""


class UsageError(ValueError):
    """The command line itself is wrong: exit status 2, with the command's usage."""
