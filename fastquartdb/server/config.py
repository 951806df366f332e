"""The daemon's settings, as ``fqdb-server`` options and as a dataclass for tests."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..engine.deadline import DEFAULT_MAX_STATEMENT_TIMEOUT, DEFAULT_STATEMENT_TIMEOUT
from ..protocol import DEFAULT_MAX_FRAME, default_socket_path

__all__ = ["ServerConfig"]


@dataclass
class ServerConfig:
    """Everything ``serve()`` needs.

    Attributes:
        db: the SQLite file to own (created if missing).
        socket: the Unix socket to listen on; default from the DB path (see PROTOCOL.md).
        synchronous: ``"full"`` (survives power loss) or ``"normal"`` (faster; a power
            cut may lose the last commits, never corrupts).
        max_batch: most requests in one group commit.
        max_queue: requests waiting before the daemon stops reading sockets (backpressure).
        max_frame: largest request frame accepted, in bytes.
        transaction_timeout: seconds an interactive transaction may stay open in all.
        transaction_idle_timeout: seconds it may wait for its holder's next request
            (default: 10 s, or ``transaction_timeout`` if that is shorter).
        allow_gids: groups whose members may connect besides the daemon's own user and root.
        read_only: serve reads only.
        raw_sql: accept the ``execute`` op (raw SQL); ``--no-raw-sql`` turns it off.
        busy_timeout: seconds to wait for another process's write lock on the file.
        statement_timeout: seconds any one request's statements may run before they are
            stopped with ``StatementTimeoutError`` (None: no limit).
        max_statement_timeout: the longest ``timeout`` one raw ``execute`` may ask for.
        replicate: a Litestream replica URL (``file:///backups/app``, ``s3://bucket/app``)
            or a directory; the daemon runs Litestream for the file while it serves.
    """

    db: str
    socket: str | None = None
    synchronous: str = "full"
    max_batch: int = 256
    max_queue: int = 8192
    max_frame: int = DEFAULT_MAX_FRAME
    transaction_timeout: float = 30.0
    transaction_idle_timeout: float | None = None
    allow_gids: list[int] = field(default_factory=list)
    read_only: bool = False
    raw_sql: bool = True
    busy_timeout: float = 5.0
    replicate: str | None = None
    statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT
    max_statement_timeout: float = DEFAULT_MAX_STATEMENT_TIMEOUT

    def __post_init__(self) -> None:
        self.db = os.path.realpath(self.db)
        if self.socket is None:
            self.socket = default_socket_path(self.db)
        self.socket = os.path.abspath(self.socket)
        if self.synchronous.lower() not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', got {self.synchronous!r}")
        for name in ("max_batch", "max_queue", "max_frame"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.transaction_timeout <= 0:
            raise ValueError("transaction_timeout must be positive")
        if self.statement_timeout is not None and self.statement_timeout <= 0:
            raise ValueError("statement_timeout must be positive")
        if self.max_statement_timeout <= 0:
            raise ValueError("max_statement_timeout must be positive")
        if self.transaction_idle_timeout is None:
            self.transaction_idle_timeout = min(10.0, self.transaction_timeout)
        if self.transaction_idle_timeout <= 0:
            raise ValueError("transaction_idle_timeout must be positive")
        if self.replicate is not None and self.read_only:
            raise ValueError(
                "--replicate needs a daemon that writes (Litestream checkpoints the file); "
                "drop --read-only"
            )

    @property
    def lock_path(self) -> str:
        """The file whose exclusive lock makes this daemon the file's one owner."""
        return self.db + ".server.lock"
