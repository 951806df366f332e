"""The daemon: own the file, listen on the socket, run every request through one worker.

``serve(config)`` is the whole life of a daemon and returns when
``shutdown_trigger`` fires (the CLI wires SIGTERM/SIGINT to it)::

    take <db>.server.lock ─> open the engine thread ─> [start Litestream]
    ─> start the worker ─> listen on the socket (0600) ─> print the ready line ─> wait
    ─> stop accepting ─> stop reading ─> run what is queued, answer it
    ─> roll back an open transaction ─> [sync and stop Litestream]
    ─> checkpoint, close ─> remove the socket

A SIGKILL skips all of that and loses nothing acknowledged: replies leave
only after COMMIT, and the next start replaces the stale socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from .._version import __version__
from ..engine import BatchWorker, EngineThread
from ..protocol import ALL_OPS, PROTOCOL_VERSION
from .config import ServerConfig
from .connection import ClientConnection
from .ownership import OwnerLock
from .replication import Replicator

__all__ = ["Daemon", "serve"]

#: How many recent requests the latency percentiles of ``stats`` cover.
LATENCY_WINDOW = 8192

log = logging.getLogger("fastquartdb.server")


class SocketInUseError(RuntimeError):
    """The socket path answers: some other server listens there."""


def _prepare_socket_path(path: str) -> None:
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


class Daemon:
    """A running daemon: its worker, connections and counters."""

    def __init__(
        self,
        config: ServerConfig,
        thread: EngineThread,
        worker: BatchWorker,
        replicator: Replicator | None = None,
    ) -> None:
        self.config = config
        self.thread = thread
        self.worker = worker
        self.replicator = replicator
        self.connections: set[ClientConnection] = set()
        self.started = time.monotonic()
        self.stopping = False
        self.stats_refused = 0
        self.stats_protocol_errors = 0
        self.clients_total = 0
        #: Seconds from arrival to reply of the most recent requests (for stats).
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._uid = os.getuid()
        self._allowed_gids = frozenset(config.allow_gids)

    def refuse_peer(self, peer: tuple[int, int, int] | None) -> str | None:
        """Why the peer may not connect, or None: same uid, root, or an allowed group."""
        self.clients_total += 1
        if peer is None:
            return None  # the OS does not tell; the socket's 0600 mode is the guard
        _pid, uid, gid = peer
        if uid in (self._uid, 0):
            return None
        if self._allowed_gids:
            if gid in self._allowed_gids:
                return None
            with contextlib.suppress(KeyError, ImportError):
                import grp
                import pwd

                name = pwd.getpwuid(uid).pw_name
                if any(name in grp.getgrgid(g).gr_mem for g in self._allowed_gids):
                    return None
        return (
            f"uid {uid} may not use this database (served by uid {self._uid}); "
            "start fqdb-server with --allow-gid for a shared group"
        )

    def hello(self) -> dict[str, Any]:
        """The result of the ``hello`` op."""
        return {
            "protocol": PROTOCOL_VERSION,
            "server": f"fastquartdb/{__version__}",
            "ops": sorted(ALL_OPS),
            "db": self.config.db,
            "pid": os.getpid(),
            "max_frame": self.config.max_frame,
            "read_only": self.config.read_only,
            "raw_sql": self.config.raw_sql,
            "local_reads": self.config.local_reads,
        }

    def stats(self) -> dict[str, Any]:
        """The result of the ``stats`` op."""
        stats = self.worker.stats
        return {
            "uptime_s": round(time.monotonic() - self.started, 3),
            "pid": os.getpid(),
            "db": self.config.db,
            "clients": len(self.connections),
            "clients_total": self.clients_total,
            "client_pids": sorted({c.peer[0] for c in self.connections if c.peer}),
            "per_client": self._per_client(),
            "requests": stats.requests,
            "batches": stats.batches,
            "batch_mean": round(stats.requests / stats.batches, 3) if stats.batches else 0.0,
            "batch_max": stats.batch_max,
            "queue_depth": self.worker.depth,
            "errors": stats.errors,
            "transactions": stats.transactions,
            "txn_timeouts": stats.txn_timeouts,
            "holder": self.worker.holder is not None,
            "latency_ms": self._latency_percentiles(),
            "refused": self.stats_refused,
            "protocol_errors": self.stats_protocol_errors,
            "replication": self.replicator.stats() if self.replicator else None,
        }

    def _per_client(self) -> list[dict[str, Any]]:
        """Each connected client: its requests here, and where its reads ran (as it reported)."""
        rows = []
        for conn in self.connections:
            report = conn.report
            rows.append(
                {
                    "pid": conn.peer[0] if conn.peer else None,
                    "requests": conn.requests,
                    "reads_local": report.get("reads_local") if report else None,
                    "reads_writer": report.get("reads_writer") if report else None,
                }
            )
        rows.sort(key=lambda row: (row["pid"] is None, row["pid"] or 0))
        return rows

    def _latency_percentiles(self) -> dict[str, float | None]:
        window = sorted(self.latencies)
        if not window:
            return {"p50": None, "p95": None, "p99": None, "max": None, "window": 0}
        last = len(window) - 1
        return {
            **{
                f"p{q}": round(window[min(last, int(q / 100 * len(window)))] * 1000, 3)
                for q in (50, 95, 99)
            },
            "max": round(window[-1] * 1000, 3),
            "window": len(window),
        }

    async def drain(self) -> None:
        """Stop reading, run and answer everything received, then stop the worker."""
        self.stopping = True
        for conn in list(self.connections):
            conn.stop_reading()
        # Requests received but not yet queued (backpressure) run too.
        for conn in list(self.connections):
            self.worker.adopt(conn.take_backlog())
        await self.worker.stop()
        await asyncio.sleep(0)  # let the last replies' flush callbacks run
        for conn in list(self.connections):
            conn.close()


async def serve(
    config: ServerConfig,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    ready: Callable[[Daemon], None] | None = None,
) -> None:
    """Run a daemon until ``shutdown_trigger`` returns (forever if None).

    Args:
        config: what to serve and how.
        shutdown_trigger: awaited; when it returns the daemon drains and exits.
        ready: called once the socket accepts connections.

    Raises:
        AlreadyServedError: another daemon owns the file.
        SocketInUseError: something else listens on the socket path.
        ReplicationError: ``config.replicate`` is set and Litestream cannot run.
    """
    os.makedirs(os.path.dirname(config.db) or ".", exist_ok=True)
    assert config.socket is not None
    # Everything opened below is closed in reverse order, however far start-up got.
    async with contextlib.AsyncExitStack() as stack:
        owner = OwnerLock(config.lock_path)
        owner.acquire(config.socket)
        stack.callback(owner.release)
        _prepare_socket_path(config.socket)
        # Removed after everything else has closed: until then clients find a socket
        # that refuses them, not none (and a restarting daemon cannot take the path).
        ours: list[int] = []  # the inode of our socket, once it exists
        stack.callback(_remove_socket, config.socket, ours)
        replicator = Replicator(config.db, config.replicate) if config.replicate else None
        thread = await EngineThread.open(
            config.db,
            synchronous=config.synchronous,
            busy_timeout=config.busy_timeout,
            read_only=config.read_only,
            raw_sql=config.raw_sql,
            # Replicating: Litestream checkpoints, never the daemon (see replication.py).
            wal_autocheckpoint=0 if replicator else None,
        )
        stack.push_async_callback(thread.close)  # last: the final checkpoint
        if replicator is not None:
            await replicator.start()
            # After the last commit, before the checkpoint.
            stack.push_async_callback(replicator.stop)
        worker = BatchWorker(
            thread,
            max_batch=config.max_batch,
            max_queue=config.max_queue,
            transaction_timeout=config.transaction_timeout,
            idle_timeout=config.transaction_idle_timeout,
            inline_reads="all",
        )
        worker.start()
        daemon = Daemon(config, thread, worker, replicator)
        stack.push_async_callback(daemon.drain)
        loop = asyncio.get_running_loop()
        # Created 0600 whatever the umask: no window in which others could connect.
        old_umask = os.umask(0o177)
        try:
            server = await loop.create_unix_server(
                lambda: ClientConnection(daemon), path=config.socket, backlog=1024
            )
        finally:
            os.umask(old_umask)
        ours.append(os.stat(config.socket).st_ino)
        stack.callback(server.close)  # first: accept no one new
        if config.allow_gids:
            os.chown(config.socket, -1, config.allow_gids[0])
            os.chmod(config.socket, 0o660)
        else:
            os.chmod(config.socket, 0o600)
        if ready is not None:
            ready(daemon)
        if shutdown_trigger is None:
            await asyncio.Event().wait()
        else:
            await shutdown_trigger()


def _remove_socket(path: str, ours: list[int]) -> None:
    """Unlink our socket (if we made one), unless another daemon has since put its own there."""
    with contextlib.suppress(FileNotFoundError):
        if ours and os.stat(path).st_ino == ours[0]:
            os.unlink(path)
