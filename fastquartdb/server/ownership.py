"""One daemon per database file: an exclusive lock on ``<db>.server.lock``.

The lock is taken on a separate file, never on the database itself: closing
any second descriptor of the database file would drop the POSIX locks SQLite
holds on it. The lock file records the owner's pid and socket so a second
daemon can say which one is running.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

__all__ = ["AlreadyServedError", "OwnerLock"]


class AlreadyServedError(RuntimeError):
    """Another ``fqdb-server`` owns the database file."""


class OwnerLock:
    """Holds the exclusive lock for as long as the daemon lives (released by the OS on any exit)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, socket_path: str) -> None:
        """Take the lock or raise :class:`AlreadyServedError` naming the running daemon."""
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
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, socket {socket_path}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays; removing it could race a starting daemon)."""
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
