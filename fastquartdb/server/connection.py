"""One client connection: decode frames, queue requests, send replies.

An ``asyncio.Protocol`` rather than streams: ``data_received`` decodes every
whole frame in the chunk and offers each request to the worker's queue with
no task switch per request. When the queue is full the rest wait in this
connection's backlog and reading pauses (backpressure); when the client
stops reading replies, reading pauses too. Replies produced by one batch are
joined into one ``write`` per connection.

Who owns a request: from ``data_received`` until the worker takes it, this
connection (its backlog); then the worker, which calls :meth:`deliver`
exactly once. If the peer goes away, backlog requests are dropped (the client
has already been told the connection is lost) and queued ones still run;
their replies are discarded.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Any, cast

from ..engine import WorkItem
from ..protocol import (
    PROTOCOL_VERSION,
    FrameDecoder,
    FrameError,
    encode_body,
    encode_ok_frame,
    error_code,
    error_reply,
    ok_reply,
)
from ..protocol.errors import (
    AccessDeniedError,
    OperationalError,
    ProtocolError,
    ValidationError,
    brief,
)

if TYPE_CHECKING:
    from .daemon import Daemon

__all__ = ["ClientConnection", "peer_credentials"]

log = logging.getLogger("fastquartdb.server")
_HEADER = struct.Struct(">I")
_CREDS = struct.Struct("3i")
# Ops the connection answers itself instead of queueing.
_ANSWERED_HERE = frozenset({"hello", "stats"})


def peer_credentials(sock: socket.socket) -> tuple[int, int, int] | None:
    """``(pid, uid, gid)`` of the process at the other end of a Unix socket, where the OS tells."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, option, _CREDS.size)
    pid, uid, gid = _CREDS.unpack(raw)
    return pid, uid, gid


def _frame(reply: dict[str, Any]) -> bytes:
    try:
        body = encode_body(reply)
    except ValidationError as exc:  # a result msgpack cannot carry
        body = encode_body(error_reply(reply.get("id"), exc.code, str(exc)))
    return _HEADER.pack(len(body)) + body


class ClientConnection(asyncio.Protocol):
    """The daemon's side of one client connection; also the worker's ``Session`` for it."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.closed = False
        self.peer: tuple[int, int, int] | None = None
        self.requests = 0
        #: The client's own read counts (``stats`` with ``report``), for the daemon's stats.
        self.report: dict[str, int] | None = None
        self._transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder(daemon.config.max_frame)
        self._greeted = False
        self._backlog: deque[WorkItem] = deque()
        self._reading_paused = False
        self._writing_paused = False
        self._out: list[bytes] = []
        self._flush_scheduled = False
        # Kept: asyncio.get_running_loop() costs a getpid() syscall per call on 3.11.
        self._loop = asyncio.get_running_loop()
        self._latencies = daemon.latencies

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self._transport = stream = cast(asyncio.Transport, transport)
        sock = stream.get_extra_info("socket")
        self.peer = peer_credentials(sock) if sock is not None else None
        refusal = self.daemon.refuse_peer(self.peer)
        if refusal is not None:
            log.warning("refused connection from %s: %s", self.peer, refusal)
            self.daemon.stats_refused += 1
            stream.write(_frame(error_reply(None, AccessDeniedError.code, refusal)))
            self.closed = True
            stream.close()
            return
        self.daemon.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            messages = self._decoder.feed(data)
        except FrameError as exc:
            self._fail(exc)
            return
        for message in messages:
            try:
                self._handle(message)
            except Exception as exc:  # input no check foresaw: answer it, serve on
                log.warning("malformed request from %s: %s", self.peer, brief(exc))
                self.send(
                    error_reply(
                        None, "validation", f"malformed request: {type(exc).__name__}: {brief(exc)}"
                    )
                )
            if self.closed:
                return
        if self._out:
            # Replies already made (reads run inline, stats, errors) leave now, in one
            # write, rather than one loop iteration later.
            self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._backlog.clear()
        self._out.clear()
        self.daemon.connections.discard(self)
        self.daemon.worker.session_closed(self)

    def pause_writing(self) -> None:
        # The client is not reading its replies: stop taking its requests.
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._update_reading()

    # ------------------------------------------------------------ requests

    def _fail(self, exc: Exception) -> None:
        """A framing error: the stream is out of sync. Say why, then close."""
        log.warning("closing connection from %s: %s", self.peer, exc)
        self.daemon.stats_protocol_errors += 1
        self.send(error_reply(None, ProtocolError.code, str(exc)))
        self._flush()
        self.close()

    def _handle(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        if type(request_id) is not int and request_id is not None:  # bool is not an id either
            self._fail(ProtocolError(f"request 'id' must be an integer, got {brief(request_id)}"))
            return
        op = message.get("op")
        if not self._greeted:
            if op != "hello":
                self._fail(ProtocolError(f"the first request must be 'hello', got op {brief(op)}"))
                return
            self._hello(request_id, message)
            return
        if type(op) is not str:
            self.send(
                error_reply(
                    request_id, "validation", f"'op' must be a string naming an op, got {brief(op)}"
                )
            )
            return
        if op not in _ANSWERED_HERE:
            # Hot path: a database request.
            self.requests += 1
            txn = message.get("txn")
            if txn is None or type(txn) is int:
                self._queue(WorkItem(message, self, txn, None, perf_counter()))
                return
            self.send(
                error_reply(request_id, "validation", f"'txn' must be an integer, got {brief(txn)}")
            )
            return
        self.requests += 1
        if op == "stats":
            report = message.get("report")
            if isinstance(report, dict):
                self.report = {k: v for k, v in report.items() if type(k) is str and type(v) is int}
                self.send(ok_reply(request_id, None))
                return
            self.send(ok_reply(request_id, self.daemon.stats()))
            return
        self._hello(request_id, message)

    def _queue(self, item: WorkItem) -> None:
        if self._backlog:
            self._backlog.append(item)
            return
        try:
            accepted = self.daemon.worker.offer(item)
        except OperationalError as exc:
            self.send(error_reply(item.request.get("id"), exc.code, str(exc)))
            return
        if not accepted:
            self._backlog.append(item)
            self._update_reading()
            self.daemon.worker.when_space(self._drain_backlog)

    def _hello(self, request_id: Any, message: dict[str, Any]) -> None:
        version = message.get("version")
        if version != PROTOCOL_VERSION:
            self._fail(
                ProtocolError(
                    f"protocol version {brief(version)} is not supported (this server speaks "
                    f"{PROTOCOL_VERSION}); upgrade the client or the server"
                )
            )
            return
        self._greeted = True
        self.send(ok_reply(request_id, self.daemon.hello()))

    def _drain_backlog(self) -> None:
        if self.closed:
            return
        worker = self.daemon.worker
        backlog = self._backlog
        try:
            while backlog and worker.offer(backlog[0]):
                backlog.popleft()
        except OperationalError as exc:  # shutting down: nothing more will run
            while backlog:
                item = backlog.popleft()
                self.send(error_reply(item.request.get("id"), exc.code, str(exc)))
        if backlog:
            worker.when_space(self._drain_backlog)
        self._update_reading()

    def take_backlog(self) -> list[WorkItem]:
        """Hand over requests not yet queued (shutdown runs them too)."""
        items = list(self._backlog)
        self._backlog.clear()
        return items

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self.closed:
            return
        should_pause = bool(self._backlog) or self._writing_paused or self.daemon.stopping
        if should_pause and not self._reading_paused:
            transport.pause_reading()
            self._reading_paused = True
        elif not should_pause and self._reading_paused:
            transport.resume_reading()
            self._reading_paused = False

    def stop_reading(self) -> None:
        """Take no more requests from this client (shutdown)."""
        self._update_reading()

    # ------------------------------------------------------------ replies

    def deliver(self, item: WorkItem, ok: bool, value: Any) -> None:
        """The worker's reply for ``item``: queue it for the next write."""
        if self.closed:
            return
        self._latencies.append(perf_counter() - item.received)
        request_id = item.request.get("id")
        if ok:
            try:
                frame = encode_ok_frame(request_id, value)
            except ValidationError as exc:  # a result msgpack cannot carry
                frame = _frame(error_reply(request_id, exc.code, str(exc)))
            self._out.append(frame)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
        else:
            self.send(error_reply(request_id, error_code(value), str(value)))

    def send(self, reply: dict[str, Any]) -> None:
        """Queue a reply; every reply of this loop iteration goes out in one write."""
        if self.closed:
            return
        self._out.append(_frame(reply))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._transport is not None and not self._transport.is_closing():
            data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
            self._out.clear()
            self._transport.write(data)

    def close(self) -> None:
        """Flush what is queued and close the connection."""
        self._flush()
        self.closed = True
        if self._transport is not None:
            self._transport.close()
