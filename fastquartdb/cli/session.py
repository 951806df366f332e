"""Opening the database for one command: through its daemon if one runs, else embedded.

``fqdb`` never creates a database: the file must exist before anything
opens it (``init_engine`` would create a missing one). A ``dqlite://`` URL
names a cluster instead of a file and is opened as it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..client import AsyncDatabaseManager
from ..protocol import default_socket_path
from ..protocol.errors import DaemonUnavailableError
from .catalog import Catalog
from .errors import CommandError
from .maintenance import require_file

__all__ = ["Session", "no_daemon", "open_session"]


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


@contextlib.asynccontextmanager
async def open_session(path: str, *, mode: str, socket: str | None) -> AsyncIterator[Session]:
    """Open ``path`` (which must exist) in ``mode`` and close it when the block ends.

    Raises:
        CommandError: the file does not exist, or ``mode="daemon"`` and no daemon runs.
    """
    if path.startswith("dqlite://"):
        if mode != "auto":
            raise CommandError(f"--mode {mode} is for a file; a dqlite:// URL names a cluster")
    else:
        require_file(path)
    try:
        db = await AsyncDatabaseManager.init_engine(path, mode=mode, socket=socket)
    except DaemonUnavailableError:
        raise no_daemon(path, socket, "--mode daemon needs one") from None
    catalog = Catalog(db)
    try:
        yield Session(db, catalog)
    finally:
        catalog.close()
        await AsyncDatabaseManager.close()
