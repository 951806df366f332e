"""The daemon: own the file, listen on the socket, run every request through one worker.

``serve(config)`` is the whole life of a daemon and returns when
``shutdown_trigger`` fires (the CLI wires SIGTERM/SIGINT to it)::

    take <db>.server.lock ─> open the engine thread ─> [start Litestream]
      (a dqlite:// URL instead: find the cluster's leader, no lock, no file)
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
import logging
import os
import sqlite3
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

from .._version import __version__
from ..engine import BatchWorker, EngineThread
from ..engine.dqlite.writer import DqliteBackend, DqliteWriter
from ..engine.histogram import LATENCY_BOUNDS, Buckets
from ..engine.work import Backend
from ..protocol import ALL_OPS, PROTOCOL_VERSION
from .config import ServerConfig
from .connection import ClientConnection
from .files import (
    DatabasePathError,
    SocketInUseError,
    check_database_path,
    database_mode,
    fix_group,
    prepare_database,
    prepare_socket_dir,
    prepare_socket_path,
    remove_socket,
    warn_if_readable,
)
from .host import ConnectionCounters
from .metrics import MetricsExporter, parse_metrics_address
from .ownership import OwnerLock
from .replication import Replicator

__all__ = ["Daemon", "DatabasePathError", "SocketInUseError", "serve"]

#: Seconds a statement still running at SIGTERM may go on before it is stopped.
STOP_GRACE = 2.0

#: How many recent requests the latency percentiles of ``stats`` cover.
LATENCY_WINDOW = 8192
#: Seconds between checks that the socket file is still there (and still ours).
SOCKET_CHECK_INTERVAL = 1.0

log = logging.getLogger("fastquartdb.server")


class Daemon:
    """A running daemon: its worker, connections and counters."""

    def __init__(
        self,
        config: ServerConfig,
        thread: Backend,
        worker: BatchWorker,
        replicator: Replicator | None = None,
    ) -> None:
        self.config = config
        #: Where the worker's batches run: the file's engine thread, or a cluster's writer.
        self.thread = thread
        self.worker = worker
        self.replicator = replicator
        self.connections: set[ClientConnection] = set()
        #: Connections that sent ``subscribe``: told after each commit that logged changes.
        self.subscribers: set[ClientConnection] = set()
        #: The change log's tip as last pushed to subscribers.
        self.changes_tip = 0
        #: Refusals, protocol errors, ``changes`` events: bumped by the connections.
        self.counters = ConnectionCounters()
        self.started = time.monotonic()
        self.stopping = False
        #: Connections served at once; one more is refused with ``too_many_clients``.
        self.client_limit = config.client_limit()
        #: Open connections per peer uid (for ``max_clients_per_uid``).
        self.uid_connections: Counter[int] = Counter()
        self.clients_total = 0
        #: Seconds from arrival to reply of the most recent requests (for stats).
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        #: The same latencies since start, bucketed (for metrics).
        self.latency_buckets = Buckets(LATENCY_BOUNDS)
        #: (op, "ok" or the error code) -> requests answered so far.
        self.outcomes: dict[tuple[str, str], int] = {}
        #: The Prometheus exporter, when ``--metrics`` asked for one.
        self.metrics: MetricsExporter | None = None
        self._uid = os.getuid()
        self._allowed_gids = frozenset(config.allow_gids)

    def connection_opened(self, conn: ClientConnection) -> None:
        """``conn`` was accepted: count it (by its peer's uid too) for the client limits."""
        self.connections.add(conn)
        if conn.peer is not None:
            self.uid_connections[conn.peer[1]] += 1

    def connection_closed(self, conn: ClientConnection) -> None:
        """``conn`` went away: forget it and its subscription."""
        self.subscribers.discard(conn)
        if conn in self.connections:
            self.connections.discard(conn)
            if conn.peer is not None:
                self.uid_connections[conn.peer[1]] -= 1

    def subscribe(self, conn: ClientConnection) -> None:
        """Send ``conn`` a ``changes`` event after each commit that logged changes."""
        self.subscribers.add(conn)

    def changes_listener(self) -> Callable[[int], None]:
        """What the engine calls, on its thread, after a commit that logged changes."""
        loop = asyncio.get_running_loop()

        def listener(tip: int) -> None:
            if not self.subscribers:
                return  # nobody to tell: not even a wake-up of the loop (read racily: the
                # next commit tells a subscriber that came meanwhile, and it reads anyway)
            # Closed loop (shutting down): nobody is left to tell.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.notify_changes, tip)

        return listener

    def notify_changes(self, tip: int) -> None:
        """Tell every subscribed connection that the change log reached ``tip``.

        One small frame per connection per commit; a connection that does not read
        has its events merged into one (see ``ClientConnection.notify``), so this
        costs the daemon no memory per unread event.
        """
        if tip <= self.changes_tip:
            return
        self.changes_tip = tip
        for conn in self.subscribers:
            conn.notify(tip)

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

    def refuse_load(self, peer: tuple[int, int, int] | None) -> str | None:
        """Why one more connection would be too many (in all, or for the peer's uid), or None."""
        open_now = len(self.connections)
        if open_now >= self.client_limit:
            return (
                f"fqdb-server already serves {open_now} connections, its limit (--max-clients); "
                "close idle connections, or raise --max-clients and the daemon's open-files "
                "limit (ulimit -n)"
            )
        per_uid = self.config.max_clients_per_uid
        if per_uid is not None and peer is not None and self.uid_connections[peer[1]] >= per_uid:
            return (
                f"uid {peer[1]} already has {per_uid} connections to fqdb-server, its limit "
                "(--max-clients-per-uid); close idle connections or raise the limit"
            )
        return None

    def hello(self) -> dict[str, Any]:
        """The result of the ``hello`` op."""
        return {
            "protocol": PROTOCOL_VERSION,
            "server": f"fastquartdb/{__version__}",
            "ops": sorted(ALL_OPS),
            "db": self.config.db,
            "pid": os.getpid(),
            "max_frame": self.config.max_frame,
            "max_reply": self.config.max_reply,
            "read_only": self.config.read_only,
            "raw_sql": self.config.raw_sql,
            # A cluster has no file here for clients to read: every read goes to the leader.
            "local_reads": self.config.local_reads and not self.config.on_cluster,
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
            "refused": self.counters.refused,
            "protocol_errors": self.counters.protocol_errors,
            "hello_timeouts": self.counters.hello_timeouts,
            "max_clients": self.client_limit,
            "request_keys": self.worker.thread.engine.keys.stats.as_dict(),
            "changes": self._change_stats(),
            "replication": self.replicator.stats() if self.replicator else None,
            "dqlite": self._cluster_stats(),
        }

    def _change_stats(self) -> dict[str, Any] | None:
        changes = self.worker.thread.engine.changes
        if changes is None:
            return None  # a cluster keeps no change log
        return {
            "tip": changes.tip,
            "subscribers": len(self.subscribers),
            "events": self.counters.events,
            "events_merged": self.counters.events_merged,
            "pruned": changes.pruned,
        }

    def _cluster_stats(self) -> dict[str, Any] | None:
        """On a dqlite cluster: the leader now, leader changes, batches run again."""
        writer = self.worker.thread.engine
        if not isinstance(writer, DqliteWriter):
            return None
        return {
            "leader": writer.leader.address,
            "nodes": list(writer.leader.nodes),
            "failovers": writer.leader.failovers,
            "batches_lost": writer.batches_lost,
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

    A start-up that fails leaves nothing behind: no socket, and neither the lock
    file nor the database file if this start created them.

    Raises:
        DatabasePathError: ``config.db`` is a directory or its directory is missing.
        AlreadyServedError: another daemon owns the file (by any path to it).
        SocketInUseError: something else listens on the socket path, its directory is
            not private, or (while serving) the socket was replaced by another file.
        ReplicationError: ``config.replicate`` is set and Litestream cannot run.
        FQDBError: the file is not a database SQLite can open.
        DaemonUnavailableError: ``config.db`` is a dqlite URL and no leader answered.
    """
    assert config.socket is not None
    cluster = config.on_cluster
    if not cluster:
        check_database_path(config.db)
    problem = prepare_socket_dir(config.socket)
    if problem is not None:
        raise SocketInUseError(f"cannot put the socket in {config.socket}: {problem}")
    started: list[Daemon] = []
    # Everything opened below is closed in reverse order, however far start-up got.
    async with contextlib.AsyncExitStack() as stack:
        replicator = None
        ours: list[int] = []  # the inode of our socket, once it exists
        if cluster:
            # The cluster is dqlite's to own: this daemon is one host's client of it.
            prepare_socket_path(config.socket)
            stack.callback(remove_socket, config.socket, ours)
            on_cluster = await DqliteBackend.open(
                config.db,
                busy_timeout=config.busy_timeout,
                raw_sql=config.raw_sql,
                max_reply=config.max_reply,
            )
            stack.push_async_callback(on_cluster.close)
            backend: Backend = on_cluster
        else:
            replicator = _open_file(config, stack, started, ours)
            thread = await EngineThread.open(
                config.db,
                synchronous=config.synchronous,
                busy_timeout=config.busy_timeout,
                read_only=config.read_only,
                raw_sql=config.raw_sql,
                # Replicating: Litestream checkpoints, never the daemon (see replication.py).
                wal_autocheckpoint=0 if replicator else None,
                statement_timeout=config.statement_timeout,
                max_statement_timeout=config.max_statement_timeout,
            )
            stack.push_async_callback(thread.close)  # last: the final checkpoint
            fix_group(config.db, config.allow_gids)
            warn_if_readable(config.db, config.allow_gids)
            # Results are measured while they are read, so a huge one fails before it is in memory.
            thread.engine.result_limit = config.max_reply
            backend = thread
        keys = backend.engine.keys
        keys.window = config.request_key_window
        keys.idempotency_window = config.idempotency_window
        keys.idempotency_max = config.idempotency_max
        changes = backend.engine.changes
        if changes is not None:
            changes.max_age = config.changes_max_age
            changes.max_rows = config.changes_max_rows
        if replicator is not None:
            await replicator.start()
            # After the last commit, before the checkpoint.
            stack.push_async_callback(replicator.stop)
        worker = BatchWorker(
            backend,
            max_batch=config.max_batch,
            max_queue=config.max_queue,
            transaction_timeout=config.transaction_timeout,
            idle_timeout=config.transaction_idle_timeout,
            # Only primary-key lookups run on the loop's thread: anything costlier (a count
            # with 999 LIKE filters) would stall hello, stats and every other client. On a
            # cluster every request goes to the leader.
            inline_reads=None if cluster else "point",
            stop_grace=STOP_GRACE,
        )
        worker.start()
        daemon = Daemon(config, backend, worker, replicator)
        if changes is not None:
            changes.listener = daemon.changes_listener()
        stack.push_async_callback(daemon.drain)
        if config.metrics is not None:
            # Its own thread: scrapes never run on this loop. Stopped before the drain.
            daemon.metrics = MetricsExporter(daemon, *parse_metrics_address(config.metrics))
            stack.callback(daemon.metrics.stop)
        servers: list[asyncio.AbstractServer] = []
        await _listen(daemon, servers, ours)
        stack.callback(_close_all, servers)  # first: accept no one new
        started.append(daemon)
        if ready is not None:
            ready(daemon)
        await _serve_until(daemon, servers, ours, shutdown_trigger)


def _open_file(
    config: ServerConfig,
    stack: contextlib.AsyncExitStack,
    started: list[Daemon],
    ours: list[int],
) -> Replicator | None:
    """Take the file: its owner lock, the socket path, and (if asked) Litestream's
    replicator (not started yet). What a failed start-up created is removed again."""
    assert config.socket is not None
    created = [p for p in (config.db, config.lock_path) if not os.path.exists(p)]
    prepare_database(config.db, config.allow_gids)
    owner = OwnerLock(config.lock_path, config.db, mode=database_mode(config.allow_gids))
    owner.acquire(config.socket)
    stack.callback(owner.release)  # last of all: after SQLite has closed the file
    # Runs after everything else has closed, while the lock is still held.
    stack.push(_undo_failed_start(config, owner, created, started))
    prepare_socket_path(config.socket)
    # Removed after everything else has closed: until then clients find a socket
    # that refuses them, not none (and a restarting daemon cannot take the path).
    stack.callback(remove_socket, config.socket, ours)
    return Replicator(config.db, config.replicate) if config.replicate else None


async def _listen(daemon: Daemon, servers: list[asyncio.AbstractServer], ours: list[int]) -> None:
    """Listen on the configured socket path (again, if it was deleted); 0600 or 0660."""
    config = daemon.config
    assert config.socket is not None
    loop = asyncio.get_running_loop()
    # Created 0600 whatever the umask: no window in which others could connect.
    old_umask = os.umask(0o177)
    try:
        server = await loop.create_unix_server(
            lambda: ClientConnection(daemon), path=config.socket, backlog=1024
        )
    finally:
        os.umask(old_umask)
    servers.append(server)
    ours[:] = [os.stat(config.socket).st_ino]
    if config.allow_gids:
        os.chown(config.socket, -1, config.allow_gids[0])
        os.chmod(config.socket, 0o660)
    else:
        os.chmod(config.socket, 0o600)


def _close_all(servers: list[asyncio.AbstractServer]) -> None:
    for server in servers:
        server.close()


async def _serve_until(
    daemon: Daemon,
    servers: list[asyncio.AbstractServer],
    ours: list[int],
    shutdown_trigger: Callable[[], Awaitable[Any]] | None,
) -> None:
    """Wait for the shutdown trigger, watching that clients can still find the socket."""
    trigger = asyncio.ensure_future(
        asyncio.Event().wait() if shutdown_trigger is None else shutdown_trigger()
    )
    watch = asyncio.ensure_future(_watch_socket(daemon, servers, ours))
    try:
        await asyncio.wait({trigger, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (trigger, watch):
            task.cancel()
        await asyncio.gather(trigger, watch, return_exceptions=True)
    if watch.done() and not watch.cancelled() and watch.exception() is not None:
        raise watch.exception()  # type: ignore[misc]


async def _watch_socket(
    daemon: Daemon, servers: list[asyncio.AbstractServer], ours: list[int]
) -> None:
    """Every :data:`SOCKET_CHECK_INTERVAL`: recreate a deleted socket; stop if it was replaced.

    Someone's ``rm -rf /run/app/*`` or a tmp cleaner would otherwise leave a daemon
    that runs on and that no client can ever reach again.
    """
    path = daemon.config.socket
    assert path is not None
    while True:
        await asyncio.sleep(SOCKET_CHECK_INTERVAL)
        try:
            inode: int | None = os.lstat(path).st_ino
        except FileNotFoundError:
            inode = None
        if ours and inode == ours[0]:
            continue
        if inode is None:
            log.warning("the socket %s was deleted: listening on a new one", path)
            servers.pop().close()  # the old one's path is gone; its clients stay connected
            problem = prepare_socket_dir(path)  # a tmp cleaner may have taken our directory too
            if problem is not None:
                raise SocketInUseError(f"cannot put the socket back in {path}: {problem}")
            await _listen(daemon, servers, ours)
            continue
        raise SocketInUseError(
            f"the socket {path} was replaced by another file while this daemon served it: "
            "clients can no longer reach it, so it stops; find what replaced it, then restart"
        )


def _undo_failed_start(
    config: ServerConfig, owner: OwnerLock, created: list[str], started: list[Daemon]
) -> Callable[..., bool]:
    """An exit callback that removes what a failed start-up created (the lock file, a new DB)."""

    def undo(exc_type: type[BaseException] | None, *_: object) -> bool:
        if exc_type is None or started:
            return False
        if config.db in created and _holds_nothing(config.db):
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(config.db + suffix)
        if config.lock_path in created:
            owner.discard()
        return False

    return undo


def _holds_nothing(path: str) -> bool:
    """Whether ``path`` has no schema at all: safe to remove (nobody wrote to it meanwhile)."""
    try:
        conn = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True)
        try:
            return bool(conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0)
        finally:
            conn.close()
    except sqlite3.Error:
        return False
