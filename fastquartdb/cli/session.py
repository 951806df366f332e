"""Opening the database for one command: through its daemon if one runs, else embedded.

``fqdb`` never creates a database: the file must exist before anything
opens it (``init_engine`` would create a missing one).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..client import AsyncDatabaseManager
from ..protocol import default_socket_path
from ..protocol.errors import DaemonUnavailableError
from .catalog import Catalog
from .errors import CommandError
from .maintenance import require_file

__all__ = ["Session", "no_daemon", "open_session"]

_OPEN_ATTEMPTS = 4


@dataclass
class Session:
    """An open database and its catalog, for the length of one command."""

    db: AsyncDatabaseManager
    catalog: Catalog


def no_daemon(path: str, socket: str | None, why: str) -> CommandError:
    """The error for a command that needs a daemon when none serves ``path``."""
    where = socket or default_socket_path(path)
    return CommandError(
        f"no fqdb-server is running for {path} (nothing answers on {where}); {why}: "
        f"start one with 'fqdb-server {path}'"
    )


async def _init_engine(path: str, *, mode: str, socket: str | None) -> AsyncDatabaseManager:
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            return await AsyncDatabaseManager.init_engine(path, mode=mode, socket=socket)
        except Exception as exc:
            await _threads_finished()
            # Two processes opening a file that is not in WAL mode yet can deadlock on the
            # switch to WAL; SQLite then answers one of them "database is locked" at once,
            # without waiting for busy_timeout. The other finishes the switch, so a retry works.
            locked = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
            if not locked or attempt == _OPEN_ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


async def _threads_finished(timeout: float = 2.0) -> None:
    """Keep the event loop running until the engine's threads have ended.

    When opening fails, aiosqlite's connection thread still hands the result of
    closing back to this loop; if ``asyncio.run`` has closed the loop by then,
    that thread dies with a traceback on stderr.
    """
    main = threading.main_thread()
    workers = [t for t in threading.enumerate() if t is not main and not t.daemon]
    deadline = time.monotonic() + timeout
    for thread in workers:
        # Joined from another thread so that this loop keeps serving callbacks meanwhile.
        await asyncio.to_thread(thread.join, max(deadline - time.monotonic(), 0.0))


@contextlib.asynccontextmanager
async def open_session(path: str, *, mode: str, socket: str | None) -> AsyncIterator[Session]:
    """Open ``path`` (which must exist) in ``mode`` and close it when the block ends.

    Raises:
        CommandError: the file does not exist, or ``mode="daemon"`` and no daemon runs.
    """
    require_file(path)
    try:
        db = await _init_engine(path, mode=mode, socket=socket)
    except DaemonUnavailableError:
        raise no_daemon(path, socket, "--mode daemon needs one") from None
    catalog = Catalog(db)
    try:
        yield Session(db, catalog)
    finally:
        catalog.close()
        await AsyncDatabaseManager.close()
