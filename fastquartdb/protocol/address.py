"""Where the daemon for a database file listens: one rule shared by server and clients.

Rule: ``$FQDB_SOCKET`` if set; else ``<absolute db path>.sock`` beside the file;
if that path is longer than a Unix socket address can hold (107 bytes on
Linux), ``$XDG_RUNTIME_DIR`` (or the system temp directory) /
``fqdb-<uid>-<first 16 hex of sha256(absolute db path)>.sock``.
Clients check that the daemon behind a socket runs as their own user.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

__all__ = ["SOCKET_PATH_MAX", "default_socket_path"]

#: sun_path holds 108 bytes on Linux, one of which is the terminating NUL.
SOCKET_PATH_MAX = 107


def default_socket_path(db_path: str | os.PathLike[str], *, use_env: bool = True) -> str:
    """Return the socket path the daemon serving ``db_path`` listens on by default.

    Example::

        >>> default_socket_path("/srv/app/data/app.db", use_env=False)
        '/srv/app/data/app.db.sock'
    """
    if use_env:
        override = os.environ.get("FQDB_SOCKET")
        if override:
            return override
    absolute = os.path.realpath(os.fspath(db_path))
    beside = absolute + ".sock"
    if len(os.fsencode(beside)) <= SOCKET_PATH_MAX:
        return beside
    digest = hashlib.sha256(os.fsencode(absolute)).hexdigest()[:16]
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(base, f"fqdb-{os.getuid()}-{digest}.sock")
