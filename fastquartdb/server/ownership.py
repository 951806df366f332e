"""One daemon per database file, whatever the path it is named by.

Two locks, both released by the OS on any exit:

* an exclusive ``flock`` on ``<db>.server.lock`` beside the (symlink-resolved)
  path. It records the owner's pid and socket, so a second daemon on the same
  path can say which one runs; ``fqdb restore`` checks it too.
* a lock on the database file's own inode, so a hard link (``ln app.db
  other.db``), a bind mount or any other path to the same file is refused as
  well: a path-keyed lock alone let two daemons write one file and corrupt it.
  It is an open-file-description lock (``F_OFD_SETLK``) on one byte far past
  anything SQLite locks (SQLite uses bytes from 1 GiB up to 1 GiB + 512). Why an
  OFD lock: closing a descriptor drops the *process's* POSIX locks on that
  inode (SQLite's), while an OFD lock belongs to our descriptor alone; and we
  close that descriptor only after SQLite has closed the database (it is the
  last thing ``serve()`` releases), so SQLite's locks are never touched.
  A missing database file is created (empty, which SQLite treats as a new
  database) so that it has an inode to lock.

Where ``F_OFD_SETLK`` does not exist (not Linux), only the path lock is taken.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct

__all__ = ["AlreadyServedError", "OwnerLock"]

#: The byte the inode lock covers: far beyond SQLite's lock bytes (1 GiB .. 1 GiB + 512).
_INODE_LOCK_OFFSET = 1 << 62
#: ``struct flock`` on Linux (l_type, l_whence, l_start, l_len, l_pid), native alignment.
_FLOCK = struct.Struct("hhqqi4x")


class AlreadyServedError(RuntimeError):
    """Another ``fqdb-server`` owns the database file."""


class OwnerLock:
    """Holds the owner locks for as long as the daemon lives (released by the OS on any exit).

    Args:
        path: the path lock file (``<db>.server.lock``).
        db: the database file; its inode is locked too. ``None``: the path lock only.
        mode: permission bits for a database file this creates (0600, 0640 with a group).
    """

    def __init__(self, path: str, db: str | None = None, *, mode: int = 0o600) -> None:
        self.path = path
        self.db = db
        self.mode = mode
        self._fd: int | None = None
        self._db_fd: int | None = None

    def acquire(self, socket_path: str) -> None:
        """Take both locks or raise :class:`AlreadyServedError` naming the running daemon."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                owner = os.read(fd, 4096).decode("utf-8", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise AlreadyServedError(
                f"another fqdb-server already serves this database ({owner}); "
                "stop it first, or point clients at its socket"
            ) from None
        try:
            if self.db is not None:
                self._db_fd = _lock_inode(self.db, self.mode)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, socket {socket_path}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the locks (the lock file stays; removing it could race a starting daemon)."""
        if self._db_fd is not None:
            os.close(self._db_fd)
            self._db_fd = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Remove the lock file, then drop the lock: a failed start-up leaves nothing behind.

        Only for a lock file this daemon created. It is unlinked while the lock is
        held, so no other daemon holds a lock on it at that moment.
        """
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self.release()


def _lock_inode(db: str, mode: int) -> int | None:
    """Open ``db`` (creating it with ``mode``) and lock one byte of its inode; returns the fd."""
    command = getattr(fcntl, "F_OFD_SETLK", None)
    if command is None:
        return None
    old_umask = os.umask(0o777 & ~mode)  # created with exactly ``mode``, whatever the umask
    try:
        fd = os.open(db, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    finally:
        os.umask(old_umask)
    request = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, _INODE_LOCK_OFFSET, 1, 0)
    try:
        fcntl.fcntl(fd, command, request)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):  # somebody holds it
            info = os.stat(db)
            raise AlreadyServedError(
                f"another fqdb-server already serves {db} under another path (a hard link, "
                f"symlink or mount of the same file: device {info.st_dev}, inode "
                f"{info.st_ino}); stop it first, or point clients at its socket"
            ) from None
        raise
    return fd
