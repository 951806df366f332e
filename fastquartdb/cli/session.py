"""Opening the database for one command: through its daemon if one runs, else in-process.

``fqdb`` never creates a database: the file must exist before anything
opens it (``init_engine`` would create a missing one). A ``dqlite://`` URL
names a cluster instead of a file and is opened as it is.

An inspection command (``read_only=True``) never changes the file: without a
daemon it runs the engine's ops on a read-only connection of its own
(:class:`ReadOnlyFile`), which neither switches a rollback-journal file to WAL
nor writes anything. Embedded mode proper (``init_engine``) is for commands
that write.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..client import AsyncDatabaseManager
from ..engine import Engine
from ..protocol import default_socket_path
from ..protocol.errors import DaemonUnavailableError, DatabaseError
from .catalog import Catalog, Database
from .errors import CommandError
from .maintenance import open_read_only, require_file

__all__ = ["Database", "ReadOnlyFile", "Session", "no_daemon", "open_session"]


class ReadOnlyFile:
    """The engine's ops on a read-only connection to the file, in this process.

    The connection is opened ``mode=ro``: SQLite refuses every write with
    SQLITE_READONLY (a ``ReadOnlyError``) before it changes anything, and the
    journal mode stays what it was.
    """

    mode = "embedded"

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._conn = open_read_only(path)
        self._engine = Engine(self._conn)

    def info(self) -> dict[str, Any]:
        """``{"mode": "embedded", "read_only": True, "raw_sql": True}``."""
        return {"mode": self.mode, "read_only": True, "raw_sql": True}

    async def request(self, request: dict[str, Any]) -> Any:
        """Run ``request`` with the engine, on this thread (one command, one statement)."""
        return self._engine.execute(request)

    async def execute(
        self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run one raw SQL statement; a write is refused with ``ReadOnlyError``."""
        request: dict[str, Any] = {"op": "execute", "sql": sql}
        if params is not None:
            request["params"] = params if isinstance(params, dict) else list(params)
        result: dict[str, Any] = await self.request(request)
        return result

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


@dataclass
class Session:
    """An open database and its catalog, for the length of one command."""

    db: Database
    catalog: Catalog


def no_daemon(path: str, socket: str | None, why: str) -> CommandError:
    """The error for a command that needs a daemon when none serves ``path``."""
    where = socket or default_socket_path(path)
    return CommandError(
        f"no fqdb-server is running for {path} (nothing answers on {where}); {why}: "
        f"start one with 'fqdb-server {path}'"
    )


async def _open(path: str, mode: str, socket: str | None, read_only: bool) -> Database:
    if read_only and not path.startswith("dqlite://"):
        if mode != "embedded":
            try:
                return await AsyncDatabaseManager.init_engine(path, mode="daemon", socket=socket)
            except DaemonUnavailableError:
                if mode == "daemon":
                    raise no_daemon(path, socket, "--mode daemon needs one") from None
        return ReadOnlyFile(path)
    try:
        return await AsyncDatabaseManager.init_engine(path, mode=mode, socket=socket)
    except DaemonUnavailableError:
        raise no_daemon(path, socket, "--mode daemon needs one") from None
    except DatabaseError as exc:  # not a database, cannot open it: say which file
        raise CommandError(f"{path}: {exc}") from None


@contextlib.asynccontextmanager
async def open_session(
    path: str, *, mode: str, socket: str | None, read_only: bool = False
) -> AsyncIterator[Session]:
    """Open ``path`` (which must exist) in ``mode`` and close it when the block ends.

    ``read_only``: the command only reads; without a daemon the file is opened
    read-only (:class:`ReadOnlyFile`) and left exactly as it was.

    Raises:
        CommandError: the file does not exist, or ``mode="daemon"`` and no daemon runs.
    """
    if path.startswith("dqlite://"):
        if mode != "auto":
            raise CommandError(f"--mode {mode} is for a file; a dqlite:// URL names a cluster")
    else:
        require_file(path)
    db = await _open(path, mode, socket, read_only)
    try:
        yield Session(db, Catalog(db))
    finally:
        if isinstance(db, ReadOnlyFile):
            db.close()
        else:
            await AsyncDatabaseManager.close()
