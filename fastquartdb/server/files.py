"""The daemon's files on disk: the database, its WAL and SHM, the socket and its directory.

The database is as private as the socket: a missing file is created with mode
0600 (0640 and the first ``--allow-gid`` group with one) *whatever the umask*,
and SQLite gives ``-wal`` and ``-shm`` the database file's own mode when it
creates them (it ``fchmod``s them to match); with a group the daemon creates
those two itself, because SQLite copies the group only when it runs as root. Existing files are never changed
behind the operator's back; the daemon warns at start when one is readable by
every local user, with the ``chmod`` that fixes it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat

from ..protocol.address import private_dir_problem, runtime_dir

__all__ = [
    "DatabasePathError",
    "SocketInUseError",
    "check_database_path",
    "database_mode",
    "fix_group",
    "prepare_database",
    "prepare_socket_dir",
    "prepare_socket_path",
    "remove_socket",
    "warn_if_readable",
]

log = logging.getLogger("fastquartdb.server")

#: The files SQLite keeps for a database in WAL mode, besides the database itself.
_SIBLINGS = ("-wal", "-shm")


def database_mode(allow_gids: list[int]) -> int:
    """The mode new database files get: 0600, or 0640 when a group is admitted."""
    return 0o640 if allow_gids else 0o600


def _create(path: str, mode: int, gid: int | None) -> None:
    """Create ``path`` empty with exactly ``mode`` (and group ``gid``) unless it exists."""
    old_umask = os.umask(0o777 & ~mode)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        return
    finally:
        os.umask(old_umask)
    try:
        if gid is not None:
            os.fchown(fd, -1, gid)
    finally:
        os.close(fd)


def prepare_database(db: str, allow_gids: list[int]) -> None:
    """Create ``db`` private if missing (see :func:`warn_if_readable` for existing ones).

    With a group, ``-wal`` and ``-shm`` are created too (empty, which SQLite takes
    as "no log yet"): SQLite copies the database's group to them only when it runs
    as root, so a plain daemon's would get its own primary group and lock the
    group's readers out.
    """
    mode = database_mode(allow_gids)
    gid = allow_gids[0] if allow_gids else None
    _create(db, mode, gid)
    if gid is not None:
        for suffix in _SIBLINGS:
            _create(db + suffix, mode, gid)


def warn_if_readable(db: str, allow_gids: list[int]) -> None:
    """Log a warning for each of the database's files that every local user can read.

    Called once the file has opened as a database, so a start that fails says one
    thing only: why it failed.
    """
    mode = database_mode(allow_gids)
    for path in (db, *(db + suffix for suffix in _SIBLINGS)):
        with contextlib.suppress(FileNotFoundError):
            current = stat.S_IMODE(os.stat(path).st_mode)
            if current & 0o004:
                log.warning(
                    "%s is readable by every local user (mode %04o): anyone on this host can "
                    "read the data with sqlite3; run 'chmod %o %s*' (the daemon creates new "
                    "files %04o)",
                    path,
                    current,
                    mode,
                    db,
                    mode,
                )


def fix_group(db: str, allow_gids: list[int]) -> None:
    """Give ``-wal``/``-shm`` the admitted group, as the database has (SQLite does it only as root)."""
    if not allow_gids:
        return
    for suffix in _SIBLINGS:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            os.chown(db + suffix, -1, allow_gids[0])


def prepare_socket_dir(socket_path: str) -> str | None:
    """Create the private runtime directory if the socket lives there; why it is unsafe, or None.

    Only the default directory for long database paths is created and checked:
    a ``--socket`` elsewhere is the operator's choice.
    """
    directory = os.path.dirname(socket_path)
    if directory != runtime_dir():
        return None
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)  # the umask can only take bits away
    return private_dir_problem(directory)


class SocketInUseError(RuntimeError):
    """The socket path cannot be used: some other server listens there, or its directory is unsafe."""


class DatabasePathError(RuntimeError):
    """The database path cannot name a database file (a directory, or its directory is missing)."""


def check_database_path(path: str) -> None:
    """Refuse a path that cannot be a database file before anything is created.

    The file itself is created if missing; missing parent directories are not
    (a typo in a path must not quietly grow a directory tree).

    Raises:
        DatabasePathError: ``path`` is a directory, or its directory does not exist.
    """
    if os.path.isdir(path):
        raise DatabasePathError(
            f"{path} is a directory, not a database file; "
            f"name a file, e.g. {os.path.join(path, 'app.db')}"
        )
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        what = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise DatabasePathError(
            f"cannot create {path}: directory {parent} {what}; "
            f"create it first (mkdir -p {parent}) or choose another path"
        )


def prepare_socket_path(path: str) -> None:
    """Remove a stale socket left by a killed daemon; refuse one somebody still serves."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SocketInUseError(f"{path} exists and is not a socket; remove it or choose --socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            os.unlink(path)  # stale: nobody listens
            return
        raise
    else:
        raise SocketInUseError(
            f"another server is listening on {path}; stop it or choose another --socket"
        )
    finally:
        probe.close()


def remove_socket(path: str, ours: list[int]) -> None:
    """Unlink our socket (if we made one), unless another daemon has since put its own there."""
    with contextlib.suppress(FileNotFoundError):
        if ours and os.stat(path).st_ino == ours[0]:
            os.unlink(path)
