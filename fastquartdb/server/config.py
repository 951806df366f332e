"""The daemon's settings, as ``fqdb-server`` options and as a dataclass for tests."""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field

from ..engine.changelog import DEFAULT_CHANGES_MAX_AGE, DEFAULT_CHANGES_MAX_ROWS
from ..engine.config import DAEMON, DAEMON_IDLE_TIMEOUT
from ..engine.deadline import DEFAULT_MAX_STATEMENT_TIMEOUT, DEFAULT_STATEMENT_TIMEOUT
from ..engine.requestkeys import (
    DEFAULT_IDEMPOTENCY_MAX,
    DEFAULT_IDEMPOTENCY_WINDOW,
    DEFAULT_KEY_WINDOW,
)
from ..protocol import DEFAULT_MAX_FRAME, default_socket_path
from ..protocol.address import DQLITE_URL_SCHEME
from .metrics import check_metrics_address

__all__ = [
    "DEFAULT_MAX_CLIENTS",
    "DEFAULT_MAX_DECODED",
    "DEFAULT_MAX_REPLY",
    "DEFAULT_MAX_UNSENT",
    "FD_RESERVE",
    "ServerConfig",
]

#: Descriptors never given to clients: SQLite's files (database, WAL, SHM, temp files), the
#: lock files, Litestream's pipes, and the one a refused connection needs while it is told why.
FD_RESERVE = 64
#: Connections served at once at most when the open-files limit would allow more.
DEFAULT_MAX_CLIENTS = 4096
#: Largest reply sent: a result beyond it is the error ``result_too_large`` for that request.
DEFAULT_MAX_REPLY = 64 * 1024 * 1024
#: Unread reply bytes after which the daemon stops reading that connection's requests.
DEFAULT_MAX_UNSENT = 4 * 1024 * 1024
#: What one request may decode to (estimated bytes of Python objects).
DEFAULT_MAX_DECODED = 512 * 1024 * 1024


@dataclass
class ServerConfig:
    """Everything ``serve()`` needs.

    Attributes:
        db: the SQLite file to own (created if missing), or a dqlite cluster's URL
            (``dqlite://h1:p1,h2:p2/app``): the daemon then group-commits onto the cluster.
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
        local_reads: clients may read the file on their own read-only connections
            (advertised in ``hello``); ``--no-local-reads`` sends every read here.
        busy_timeout: seconds to wait for another process's write lock on the file.
        statement_timeout: seconds any one request's statements may run before they are
            stopped with ``StatementTimeoutError`` (None: no limit).
        max_statement_timeout: the longest ``timeout`` one raw ``execute`` may ask for.
        replicate: a Litestream replica URL (``file:///backups/app``, ``s3://bucket/app``)
            or a directory; the daemon runs Litestream for the file while it serves.
        metrics: ``HOST:PORT`` (or a port) to serve Prometheus metrics on; None: off.
        metrics_public: allow ``metrics`` on a non-loopback address.
        max_clients: most connections served at once; one more is refused with
            ``too_many_clients``. Default: the open-files limit minus :data:`FD_RESERVE`
            (descriptors kept for SQLite, Litestream and refusing the excess; half the
            limit when it is below 128).
        max_clients_per_uid: most connections of one peer uid at once (None: only
            ``max_clients``), so one user admitted by ``--allow-gid`` cannot take every slot.
        hello_timeout: seconds a new connection has to send ``hello`` before it is closed.
        max_reply: largest reply (encoded bytes); a bigger result fails that request
            alone with ``result_too_large``.
        max_unsent: reply bytes a connection may leave unread before the daemon stops
            reading its requests (on top of the kernel's socket buffer).
        max_decoded: estimated memory one request may decode to (bytes); beyond it the
            frame is refused like an oversized one.
        request_key_window: seconds a request key's record is kept at most (its client
            usually lets it go much sooner; see ``engine/requestkeys.py``).
        idempotency_window: seconds a caller's ``idempotency_key`` is remembered.
        idempotency_max: most ``idempotency_key`` records kept (the oldest go first).
        changes_max_age: seconds a change stays in the change log (``__changes__`` tables).
        changes_max_rows: most changes the change log keeps (the oldest go first).
    """

    db: str
    socket: str | None = None
    synchronous: str = DAEMON.synchronous
    max_batch: int = DAEMON.max_batch
    max_queue: int = DAEMON.max_queue
    max_frame: int = DEFAULT_MAX_FRAME
    transaction_timeout: float = DAEMON.transaction_timeout
    transaction_idle_timeout: float | None = None
    allow_gids: list[int] = field(default_factory=list)
    read_only: bool = False
    raw_sql: bool = True
    local_reads: bool = True
    busy_timeout: float = DAEMON.busy_timeout
    replicate: str | None = None
    statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT
    max_statement_timeout: float = DEFAULT_MAX_STATEMENT_TIMEOUT
    metrics: str | None = None
    metrics_public: bool = False
    max_clients: int | None = None
    max_clients_per_uid: int | None = None
    hello_timeout: float = 5.0
    max_reply: int = DEFAULT_MAX_REPLY
    max_unsent: int = DEFAULT_MAX_UNSENT
    request_key_window: float = DEFAULT_KEY_WINDOW
    idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW
    idempotency_max: int = DEFAULT_IDEMPOTENCY_MAX
    changes_max_age: float = DEFAULT_CHANGES_MAX_AGE
    changes_max_rows: int = DEFAULT_CHANGES_MAX_ROWS
    max_decoded: int = DEFAULT_MAX_DECODED

    def __post_init__(self) -> None:
        if not self.on_cluster:
            self.db = os.path.realpath(self.db)
        if self.socket is None:
            self.socket = default_socket_path(self.db)
        self.socket = os.path.abspath(self.socket)
        if self.synchronous.lower() not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', got {self.synchronous!r}")
        for name in ("max_batch", "max_queue", "max_frame", "max_reply", "max_unsent"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.max_decoded < self.max_frame:
            raise ValueError(
                f"max_decoded ({self.max_decoded}) must be at least max_frame ({self.max_frame})"
            )
        for name in ("max_clients", "max_clients_per_uid"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be positive")
        if self.hello_timeout <= 0:
            raise ValueError("hello_timeout must be positive")
        if self.transaction_timeout <= 0:
            raise ValueError("transaction_timeout must be positive")
        if self.statement_timeout is not None and self.statement_timeout <= 0:
            raise ValueError("statement_timeout must be positive")
        if self.max_statement_timeout <= 0:
            raise ValueError("max_statement_timeout must be positive")
        if self.request_key_window <= 0 or self.idempotency_window <= 0:
            raise ValueError("request_key_window and idempotency_window must be positive")
        if self.idempotency_max < 1:
            raise ValueError("idempotency_max must be at least 1")
        if self.changes_max_age <= 0 or self.changes_max_rows < 1:
            raise ValueError("changes_max_age must be positive and changes_max_rows at least 1")
        if self.transaction_idle_timeout is None:
            self.transaction_idle_timeout = min(DAEMON_IDLE_TIMEOUT, self.transaction_timeout)
        if self.transaction_idle_timeout <= 0:
            raise ValueError("transaction_idle_timeout must be positive")
        if self.metrics is not None:
            check_metrics_address(self.metrics, self.metrics_public)
        if self.on_cluster and self.replicate is not None:
            raise ValueError(
                "--replicate backs up a file; a dqlite cluster is replicated by dqlite itself"
            )
        if self.on_cluster and self.read_only:
            raise ValueError(
                "--read-only serves a file read-only (SQLite's query_only); a daemon on a "
                "dqlite cluster cannot be read-only yet: drop --read-only"
            )
        if self.replicate is not None and self.read_only:
            raise ValueError(
                "--replicate needs a daemon that writes (Litestream checkpoints the file); "
                "drop --read-only"
            )

    @property
    def on_cluster(self) -> bool:
        """Whether ``db`` is a dqlite cluster's URL: the daemon is the cluster's client."""
        return self.db.startswith(DQLITE_URL_SCHEME)

    def client_limit(self) -> int:
        """``max_clients``, or what the open-files limit allows after :data:`FD_RESERVE`."""
        if self.max_clients is not None:
            return self.max_clients
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            soft = 1 << 20
        # Under a tiny limit (ulimit -n 64) keep half, so some clients still fit.
        reserve = min(FD_RESERVE, soft // 2)
        return max(1, min(soft - reserve, DEFAULT_MAX_CLIENTS))

    @property
    def lock_path(self) -> str:
        """The file whose exclusive lock makes this daemon the file's one owner."""
        return self.db + ".server.lock"
