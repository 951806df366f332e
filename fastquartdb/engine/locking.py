"""The cross-process lock of ``use_filelock=True``, taken on the sqlite thread.

Embedded processes that share a file and ask for it run every batch (and
every interactive transaction) under an exclusive lock on ``<db>.lock``. It
is taken by the engine on its own thread, inside the same hop as the batch,
so the event loop never waits on it and never pays for it in syscalls.

On POSIX it is ``flock`` on a descriptor opened once (about a microsecond
uncontended; ``filelock.FileLock`` costs ~150 us per acquire here: it opens,
locks and closes the file each time). ``flock`` is also what filelock uses on
POSIX, so the two interoperate. Elsewhere it falls back to filelock.
"""

from __future__ import annotations

import os
import time

from ..protocol.errors import DatabaseBusyError

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["ProcessLock"]


class ProcessLock:
    """An exclusive lock on ``path`` shared by processes. Not reentrant; one thread uses it."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.held = False
        self._fd: int | None = None
        self._fallback = None
        if fcntl is None:
            import filelock

            self._fallback = filelock.FileLock(path, thread_local=False)

    def acquire(self) -> None:
        """Wait for the lock, at most ``timeout`` seconds.

        Raises:
            DatabaseBusyError: another process held it the whole time.
        """
        if self._fallback is not None:
            try:
                self._fallback.acquire(timeout=self.timeout, poll_interval=0.001)
            except Exception as exc:  # filelock.Timeout
                raise DatabaseBusyError(f"{self.path} stayed locked: {exc}") from None
            self.held = True
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = None
        delay = 0.00005
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.held = True
                return
            except BlockingIOError:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.timeout
                elif now >= deadline:
                    raise DatabaseBusyError(
                        f"{self.path} stayed locked by another process for {self.timeout:g} s"
                    ) from None
                # Short sleeps: holders keep it for one batch, about a millisecond.
                time.sleep(delay)
                delay = min(delay * 2, 0.001)

    def release(self) -> None:
        """Let the next process in."""
        if not self.held:
            return
        self.held = False
        if self._fallback is not None:
            self._fallback.release()
        elif self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Release and close the descriptor."""
        self.release()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
