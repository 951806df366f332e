"""Transports: the seam between the manager and where requests run.

A transport takes a request map and returns its result or raises the
:class:`FQDBError` subclass its error code names. The same models run over
:class:`EmbeddedTransport` (the engine in-process) and the socket transport
(the daemon); the conformance suite holds them to the same results. Each says what it
is in a frozen :class:`TransportInfo`, and what became of its connection in
:attr:`Transport.lost_cause`, so callers never test a transport's class.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..engine import BatchWorker, EngineThread, WorkItem
from ..engine.config import EMBEDDED
from ..engine.deadline import DEFAULT_STATEMENT_TIMEOUT
from ..protocol import (
    DEFAULT_MAX_FRAME,
    decode_body,
    encode_body,
    encode_frame,
    error_code,
    error_from_code,
)
from ..protocol.errors import InterfaceError
from ..protocol.messages import READ_OPS

__all__ = [
    "EmbeddedTransport",
    "LocalReads",
    "Transport",
    "TransportInfo",
    "check_wire_size",
    "wire_check_default",
]


def check_wire_size(request: dict[str, Any], max_frame: int = DEFAULT_MAX_FRAME) -> None:
    """Refuse, as the daemon's client does, a request larger than one frame of the wire,
    so that what works embedded (or on dqlite) also works through a daemon.

    A read is measured only when its filter values are large (the usual read is a
    few bytes: no encoding); anything else is encoded once, which costs about 1 µs
    per value, a few percent of a write's own cost.

    Raises:
        ValidationError: the request exceeds ``max_frame`` bytes (saying what to do).
    """
    if request.get("op") in READ_OPS and _filter_bytes(request.get("where")) < max_frame // 2:
        return
    encode_frame(request, max_frame)


def _filter_bytes(where: Any) -> int:
    """About how many bytes the values of a ``where`` take (strings and bytes)."""
    total = 0
    if isinstance(where, list):
        for group in where:
            for cond in group if isinstance(group, list) else ():
                value = cond[2] if isinstance(cond, (list, tuple)) and len(cond) == 3 else None
                if type(value) is int:
                    continue  # the usual point read ({"id": 5}): nothing to measure
                for item in value if isinstance(value, (list, tuple)) else (value,):
                    if isinstance(item, (str, bytes)):
                        total += 4 * len(item) if isinstance(item, str) else len(item)
    return total


def wire_check_default() -> bool:
    """Whether requests and replies that never cross a socket are round-tripped through the
    codec anyway (``FQDB_WIRE_CHECK=1``; the test suite sets it)."""
    return os.environ.get("FQDB_WIRE_CHECK") == "1"


@dataclass(frozen=True)
class LocalReads:
    """Whether this process may read the database file itself, as a transport tells it.

    Attributes:
        path: the file to open read-only, or None when reads must go to the writer.
        why_not: with ``path`` None, the reason (logged once).
        raw_sql: whether the writer accepts raw SQL (local readers refuse it alike).
    """

    path: str | None
    why_not: str = ""
    raw_sql: bool = True


@dataclass(frozen=True, slots=True)
class TransportInfo:
    """What a transport is, for the callers that must know (``fqdb ping``, the CLI's
    catalog, ``AsyncDatabaseManager.info``): they ask this, never the transport's class.

    Attributes:
        mode: where requests run.

            * ``"embedded"``: the engine in this process, on the file
              (:class:`EmbeddedTransport`).
            * ``"daemon"``: an ``fqdb-server`` over its Unix socket (``SocketTransport``).
            * ``"dqlite"``: a dqlite cluster (``DqliteTransport``).

            ``mode="auto"`` and ``mode="daemon"`` hold a ``FailoverTransport``, which
            reports the transport in use now: ``"daemon"``, then ``"embedded"`` after it
            fell back, then ``"daemon"`` again once it is back. So ask each time; do not keep it.
        raw_sql: whether the writer accepts raw SQL (the ``execute`` op); False for a daemon
            started with ``--no-raw-sql``.
        socket: the daemon's socket path (set only in ``"daemon"`` mode).
        server: the daemon's name and version from its ``hello`` (``"fastquartdb/<version>"``).
        server_pid: the daemon's process id, from its ``hello``.

    What changes while a transport runs (a lost connection, a reply that timed out) is
    not here but in :attr:`Transport.lost_cause` and :meth:`Transport.request_timed_out`.
    """

    mode: str
    raw_sql: bool = True
    socket: str | None = None
    server: str | None = None
    server_pid: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The public form (``AsyncDatabaseManager.info``): ``{"mode": ..., "raw_sql": ...}``,
        with ``socket``, ``server`` and ``server_pid`` too for a daemon."""
        if self.socket is None:
            return {"mode": self.mode, "raw_sql": self.raw_sql}
        return {
            "mode": self.mode,
            "socket": self.socket,
            "server": self.server,
            "server_pid": self.server_pid,
            "raw_sql": self.raw_sql,
        }


class Transport(abc.ABC):
    """Carries requests to a database and brings back results."""

    #: ``"embedded"``, ``"daemon"`` or ``"dqlite"`` (see :attr:`TransportInfo.mode`).
    mode: str

    def local_reads(self) -> LocalReads:
        """Whether reads may run on this process's own read-only connections, and on which file."""
        return LocalReads(None, f"the {self.mode} transport serves every read itself")

    @abc.abstractmethod
    async def request(self, request: dict[str, Any]) -> Any:
        """Run one request (a map with ``op`` and its fields) and return its result.

        Raises:
            FQDBError: the subclass named by the error's code.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every resource; pending requests fail. Safe to call twice."""

    async def subscribe(self, callback: Callable[[int], None]) -> bool:
        """Have ``callback(tip)`` called (on the event loop) after each commit of the writer
        that logged changes (see ``client/changes.py``). Calling it again with the same
        callback is cheap. Returns False where the writer cannot tell (then consumers poll).
        """
        return False

    def info(self) -> TransportInfo:
        """What this transport is (see :class:`TransportInfo`). Callers ask this rather than
        test the transport's class."""
        return TransportInfo(self.mode)

    @property
    def lost_cause(self) -> BaseException | None:
        """Why this transport's connection to its writer is gone, or None while it works.

        Only a daemon connection is ever lost this way (its peer went away, or it was
        abandoned or closed); the failover layer then reconnects. None by default.
        """
        return None

    def request_timed_out(self) -> None:
        """A request got no reply within its ``request_timeout``: give up on this transport,
        so that whatever it still answers goes nowhere (a daemon connection closes, and what
        is in flight fails with ``ConnectionLostError``). By default nothing happens."""
        return None


class EmbeddedTransport(Transport):
    """The engine in this process: one sqlite connection, one worker, group commit.

    With ``use_filelock`` every batch (and every interactive transaction) runs
    under an exclusive file lock on ``<db>.lock``, taken on the sqlite thread
    (:mod:`fastquartdb.engine.locking`). With ``wire_check`` every
    request and reply is round-tripped through the protocol codec, so nothing
    works embedded that the daemon could not carry (the test suite sets it).
    """

    mode = "embedded"

    def __init__(self, path: str, worker: BatchWorker, *, wire_check: bool) -> None:
        self.path = path
        self.closed = False
        #: Never lost: this process is its own peer (see :class:`~fastquartdb.engine.work.Session`).
        self.lost = False
        self._worker = worker
        self._wire_check = wire_check
        self._subscribed: Callable[[int], None] | None = None

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        use_filelock: bool = False,
        synchronous: str = EMBEDDED.synchronous,
        busy_timeout: float = EMBEDDED.busy_timeout,
        transaction_timeout: float = EMBEDDED.transaction_timeout,
        wire_check: bool | None = None,
        statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
        changes_max_age: float | None = None,
        changes_max_rows: int | None = None,
    ) -> EmbeddedTransport:
        """Open the database file and start the worker (``changes_*``: the change log's
        retention, see ``engine/changelog.py``; None keeps the default)."""
        thread = await EngineThread.open(
            path,
            synchronous=synchronous,
            busy_timeout=busy_timeout,
            lock_path=path + ".lock" if use_filelock else None,
            statement_timeout=statement_timeout,
        )
        worker = BatchWorker(
            thread,
            transaction_timeout=transaction_timeout,
            # A point read by primary key costs less than the hop it would take; with the
            # file lock every query must take the lock, on the sqlite thread.
            inline_reads=None if use_filelock else "point",
        )
        changes = thread.engine.changes
        if changes_max_age is not None:
            changes.max_age = changes_max_age
        if changes_max_rows is not None:
            changes.max_rows = changes_max_rows
        worker.start()
        if wire_check is None:
            wire_check = wire_check_default()
        return cls(path, worker, wire_check=wire_check)

    def local_reads(self) -> LocalReads:
        if self.path == ":memory:":
            return LocalReads(None, "an in-memory database has no file other connections can read")
        return LocalReads(self.path)

    @property
    def worker(self) -> BatchWorker:
        """The worker running this process's requests."""
        return self._worker

    async def subscribe(self, callback: Callable[[int], None]) -> bool:
        if self._subscribed is not callback:
            self._subscribed = callback
            loop = asyncio.get_running_loop()

            def listener(tip: int) -> None:  # on the sqlite thread, after COMMIT
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    loop.call_soon_threadsafe(callback, tip)

            changes = self._worker.thread.engine.changes
            assert changes is not None  # a file's engine always keeps its change log
            changes.listener = listener
        return True

    async def request(self, request: dict[str, Any]) -> Any:
        if self.closed:
            raise InterfaceError("the database is closed; call init_engine() again")
        check_wire_size(request)
        if self._wire_check:
            request = decode_body(encode_body(request))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        item = WorkItem(request, self, request.get("txn"), future)
        await self._worker.put(item)  # it decides where (BatchWorker.route)
        # If this task is cancelled here the request still runs; the manager's
        # transaction context rolls back what a cancelled transaction began.
        return await future

    def deliver(self, item: WorkItem, ok: bool, value: Any) -> None:
        future = item.future
        if future is None or future.done():
            return
        if ok:
            if self._wire_check:
                value = decode_body(encode_body({"result": value}))["result"]
            future.set_result(value)
        elif self._wire_check:
            future.set_exception(error_from_code(error_code(value), str(value)))
        else:
            future.set_exception(value)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._worker.session_closed(self)
        try:
            await self._worker.stop()
        finally:
            await self._worker.thread.close()
