"""Where the daemon for a database file listens: one rule shared by server and clients.

Rule: ``$FQDB_SOCKET`` if set; else ``<absolute db path>.sock`` beside the file
(for a ``dqlite://`` cluster URL, which names no file:
``<runtime dir>/fqdb-<first 16 hex of sha256(url)>.sock``);
if that path is longer than a Unix socket address can hold (107 bytes on
Linux), ``<runtime dir>/fqdb-<first 16 hex of sha256(absolute db path)>.sock``
where the runtime dir is ``$XDG_RUNTIME_DIR`` if set, else
``<system temp dir>/fqdb-<uid>``. Either must be a directory owned by this
user that nobody else may write (:func:`private_dir_problem`): a socket under
a predictable name in a world-writable directory could be taken first by
another local user. The daemon creates ``fqdb-<uid>`` (mode 0700); clients
check the same before they connect. Clients also check that the daemon
behind a socket runs as their own user.

This module reads the file system (``realpath``, ``lstat``) but never writes it.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile

__all__ = [
    "DQLITE_URL_SCHEME",
    "SOCKET_PATH_MAX",
    "default_socket_path",
    "private_dir_problem",
    "runtime_dir",
]

#: How a dqlite cluster's URL begins (``dqlite://h1:p1,h2:p2/app``).
DQLITE_URL_SCHEME = "dqlite://"

#: sun_path holds 108 bytes on Linux, one of which is the terminating NUL.
SOCKET_PATH_MAX = 107


def runtime_dir() -> str:
    """The private directory that holds sockets whose path beside the database is too long.

    ``$XDG_RUNTIME_DIR`` (the login session's own 0700 directory) if set, else
    ``<temp dir>/fqdb-<uid>``, which ``fqdb-server`` creates with mode 0700.
    """
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        return base
    return os.path.join(tempfile.gettempdir(), f"fqdb-{os.getuid()}")


def private_dir_problem(path: str) -> str | None:
    """Why ``path`` is not a safe home for our socket, or None when it is.

    Safe means: a real directory (not a symbolic link), owned by this user, that
    neither its group nor others may write. The answer is a sentence for an
    error message that also says what to do.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as exc:
        return f"cannot inspect {path}: {exc}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a directory (a symbolic link or a file); remove it or pass --socket"
    if info.st_uid != os.getuid():
        return (
            f"{path} belongs to uid {info.st_uid}, not to this user ({os.getuid()}): somebody "
            "else may have created it to intercept the socket; remove it, set "
            "XDG_RUNTIME_DIR, or pass --socket"
        )
    if info.st_mode & 0o022:
        return (
            f"{path} may be written by other users (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"chmod 700 {path}, or pass --socket"
        )
    return None


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
    name = os.fspath(db_path)
    if name.startswith(DQLITE_URL_SCHEME):
        # A cluster's per-host daemon: no file to sit beside.
        digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
        return os.path.join(runtime_dir(), f"fqdb-{digest}.sock")
    absolute = os.path.realpath(name)
    beside = absolute + ".sock"
    if len(os.fsencode(beside)) <= SOCKET_PATH_MAX:
        return beside
    digest = hashlib.sha256(os.fsencode(absolute)).hexdigest()[:16]
    return os.path.join(runtime_dir(), f"fqdb-{digest}.sock")
