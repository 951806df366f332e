"""One client connection: decode frames, queue requests, send replies.

An ``asyncio.Protocol`` rather than streams: ``data_received`` decodes every
whole frame in the chunk and offers each request to the worker's queue with
no task switch per request. When the queue is full the rest wait in this
connection's backlog and reading pauses (backpressure); when the client
stops reading replies, reading pauses too. Replies produced by one batch are
joined into one ``write`` per connection.

Who owns a request: from ``data_received`` until the worker takes it, this
connection (its unhandled messages, then its backlog); then the worker, which
calls :meth:`deliver` exactly once. If the peer goes away, unhandled and
backlog requests are dropped (the client has already been told the
connection is lost) and queued ones still run; their replies are discarded.

What it needs of the daemon is :class:`~fastquartdb.server.host.ConnectionHost`
(it never imports the daemon); reply framing is in :mod:`fastquartdb.server.replies`.

What one connection may cost the daemon (issue 13, rows 7, 8 and 12):

* unsent replies: the transport's write buffer has ``max_unsent`` as its
  high-water mark. Above it, or above ``max_unsent`` of replies made in one
  go, the connection stops *handling* requests it has already decoded (a
  64 KiB chunk of pipelined fetches would otherwise make every reply before
  the check) and stops reading; it resumes when the client reads.
* requests handed to the worker: bounded by the worker's queue (``max_queue``,
  parked requests included). Those that may answer with many bytes (reads and
  raw ``execute``) are also bounded per connection: at most
  :data:`READS_IN_FLIGHT` at first, then as many as ``max_unsent`` holds at the
  size their replies have had (never more than :data:`READS_IN_FLIGHT_MAX`).
  A batch runs whole on the sqlite thread before any of its replies is seen, so
  without this bound 300 pipelined 1 MB fetches would all run before the
  first check of unsent bytes. Requests past the bound are held, in order (a
  write behind them waits too: one connection's requests run in the order
  sent), and shutdown runs them like any backlog. A request of an interactive
  transaction is never held: other requests may be parked behind the
  transaction, and only its own requests can end it.
* one frame: ``max_frame`` bytes (else the connection is closed: the stream
  cannot be trusted), decoding to at most ``max_decoded`` bytes of objects (the
  codec counts while it decodes; else that request alone fails with
  ``validation``, and the connection reads on).
* one reply: ``max_reply`` bytes, else that request fails with
  ``result_too_large`` and the connection serves on.
* a connection that sends no ``hello`` within ``hello_timeout`` is closed, and
  beyond ``max_clients`` connections a new one is refused with ``too_many_clients``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from time import perf_counter
from typing import Any, cast

from ..engine import WorkItem
from ..protocol import (
    ALL_OPS,
    PROTOCOL_VERSION,
    FrameDecoder,
    FrameError,
    encode_ok_frame,
    error_code,
    error_reply,
    ok_reply,
)
from ..protocol.codec import REFUSED_OP, RefusedRequest
from ..protocol.errors import (
    AccessDeniedError,
    InterfaceError,
    OperationalError,
    ProtocolError,
    TooManyClientsError,
    ValidationError,
    brief,
)
from ..protocol.messages import READ_OPS
from .host import ConnectionHost
from .replies import NO_CHANGE_LOG, peer_credentials
from .replies import frame as _frame
from .replies import too_large as _too_large

__all__ = ["ClientConnection", "peer_credentials"]

log = logging.getLogger("fastquartdb.server")
#: Requests with a possibly large reply one connection may have in the worker at first.
READS_IN_FLIGHT = 4
#: ... and at most, however small its replies have been.
READS_IN_FLIGHT_MAX = 256
#: Unsent bytes past which a subscriber's ``changes`` events are merged into the newest one.
EVENTS_UNSENT_MAX = 64 * 1024
#: Held requests after which reading pauses (they are decoded requests, kept in memory).
HELD_MAX = 4096
#: Ops whose reply can be large (rows); writes answer a few bytes.
_LARGE_REPLY_OPS = frozenset(READ_OPS | {"execute"})
# Ops the connection answers itself instead of queueing.
_ANSWERED_HERE = frozenset({"hello", "stats", "subscribe", REFUSED_OP})
# The op label of the request counters: any other string a client sends counts as "other",
# so a client cannot grow the counters (and the metrics' label sets) without bound.
_COUNTED_OPS = frozenset(ALL_OPS)
# The counter keys of successful replies, made once.
_OK_KEYS: dict[Any, tuple[str, str]] = {op: (op, "ok") for op in _COUNTED_OPS}
_OTHER_OK = ("other", "ok")


class ClientConnection(asyncio.Protocol):
    """The daemon's side of one client connection; also the worker's ``Session`` for it."""

    def __init__(self, host: ConnectionHost) -> None:
        #: The daemon that accepted it, as far as a connection needs it.
        self.host = host
        self.closed = False
        #: The peer went away (not a shutdown): see :class:`~fastquartdb.engine.work.Session`.
        self.lost = False
        self.peer: tuple[int, int, int] | None = None
        self.requests = 0
        #: The client's own read counts (``stats`` with ``report``), for the daemon's stats.
        self.report: dict[str, int] | None = None
        self._transport: asyncio.Transport | None = None
        config = host.config
        self._decoder = FrameDecoder(config.max_frame, config.max_decoded)
        self._greeted = False
        self._hello_timer: asyncio.TimerHandle | None = None
        # Decoded, not yet handled: held while the client does not read its replies.
        self._unhandled: deque[dict[str, Any]] = deque()
        self._backlog: deque[WorkItem] = deque()
        # Requests waiting for one of this connection's large replies to be answered.
        self._held: deque[WorkItem] = deque()
        self._reading_paused = False
        self._writing_paused = False
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flush_scheduled = False
        self._max_unsent = config.max_unsent
        self._max_reply = config.max_reply
        # Requests with a possibly large reply in the worker now, how many may be, and
        # the largest reply size seen of late (see the module docstring).
        self._reads = 0
        self._reads_allowed = READS_IN_FLIGHT
        self._reply_size = 0
        self._draining = False
        # A change-log tip not yet sent because the client does not read (see notify).
        self._unsent_tip = 0
        # Kept: asyncio.get_running_loop() costs a getpid() syscall per call on 3.11.
        self._loop = asyncio.get_running_loop()
        self._worker = host.worker
        self._latencies = host.latencies
        # Latencies of replies made since the last write (see _flush).
        self._elapsed: list[float] = []
        self._latency_buckets = host.latency_buckets
        self._outcomes = host.outcomes
        self._counters = host.counters

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self._transport = stream = cast(asyncio.Transport, transport)
        sock = stream.get_extra_info("socket")
        self.peer = peer_credentials(sock) if sock is not None else None
        host = self.host
        refusal = host.refuse_peer(self.peer)
        if refusal is not None:
            self._refuse(AccessDeniedError.code, refusal)
            return
        too_many = host.refuse_load(self.peer)
        if too_many is not None:
            self._refuse(TooManyClientsError.code, too_many)
            return
        host.connection_opened(self)
        # Past this many unsent bytes the transport calls pause_writing: stop reading.
        stream.set_write_buffer_limits(high=self._max_unsent)
        self._hello_timer = self._loop.call_later(host.config.hello_timeout, self._hello_expired)

    def _refuse(self, code: str, message: str) -> None:
        """Tell a connection why it may not stay, and close it (before ``hello``)."""
        log.warning("refused connection from %s: %s", self.peer, message)
        self._counters.refused += 1
        assert self._transport is not None
        self._transport.write(_frame(error_reply(None, code, message)))
        self.closed = True
        self._transport.close()

    def _hello_expired(self) -> None:
        self._hello_timer = None
        if self._greeted or self.closed:
            return
        self._counters.hello_timeouts += 1
        timeout = self.host.config.hello_timeout
        self._fail(ProtocolError(f"no 'hello' within {timeout:g} s of connecting: closing"))

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            messages = self._decoder.feed(data)
        except FrameError as exc:
            self._fail(exc)
            return
        self._unhandled.extend(messages)
        self._work()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.lost = True  # its keyed requests not started yet are not run (see worker.py)
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        self._unhandled.clear()
        self._backlog.clear()
        self._held.clear()
        self._out.clear()
        self.host.connection_closed(self)
        self._worker.session_closed(self)

    def pause_writing(self) -> None:
        # The client is not reading its replies: stop taking its requests.
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._unsent_tip:
            self.notify(self._unsent_tip)
        if self._held:
            self._release_held()
        if self._backlog:
            self._drain_backlog()
        self._work()

    # ------------------------------------------------------------ requests

    def _work(self, *, force: bool = False) -> None:
        """Handle decoded requests until none is left or the client must catch up first."""
        unhandled = self._unhandled
        while unhandled and not self.closed:
            # _congested() only when it may say yes: a call per request otherwise.
            if (
                not force
                and (self._writing_paused or self._out_bytes > self._max_unsent)
                and self._congested()
            ):
                break
            message = unhandled.popleft()
            try:
                self._handle(message)
            except Exception as exc:  # input no check foresaw: answer it, serve on
                log.warning("malformed request from %s: %s", self.peer, brief(exc))
                self.send(
                    error_reply(
                        None, "validation", f"malformed request: {type(exc).__name__}: {brief(exc)}"
                    )
                )
        if self._out:
            # Replies already made (reads run inline, stats, errors) leave now, in one
            # write, rather than one loop iteration later.
            self._flush()
        self._update_reading()

    def _congested(self) -> bool:
        """Whether to hold further requests until the client reads its replies."""
        if self._out_bytes > self._max_unsent:
            # Hand the replies to the transport: it says (pause_writing) if the client lags.
            self._flush()
        return self._writing_paused

    def _fail(self, exc: Exception) -> None:
        """A framing error: the stream is out of sync. Say why, then close."""
        log.warning("closing connection from %s: %s", self.peer, exc)
        self._counters.protocol_errors += 1
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
                self._queue(WorkItem(message, self, txn, None, perf_counter()), op)
                return
            self._count(op, "validation")
            self.send(
                error_reply(request_id, "validation", f"'txn' must be an integer, got {brief(txn)}")
            )
            return
        self.requests += 1
        if op == "stats":
            self._count(op, "ok")
            report = message.get("report")
            if isinstance(report, dict):
                self.report = {k: v for k, v in report.items() if type(k) is str and type(v) is int}
                self.send(ok_reply(request_id, None))
                return
            self.send(ok_reply(request_id, self.host.stats()))
            return
        if op == "subscribe":
            # From now on this connection gets a "changes" event after each commit that
            # logged changes (PROTOCOL.md, "Change feeds"); the reply says the tip now.
            changes = self.host.worker.thread.engine.changes
            if changes is None:  # a dqlite cluster keeps no change log
                self._count(op, InterfaceError.code)
                self.send(error_reply(request_id, InterfaceError.code, NO_CHANGE_LOG))
                return
            self._count(op, "ok")
            self.host.subscribe(self)
            self.send(ok_reply(request_id, {"tip": changes.tip}))
            return
        if op == REFUSED_OP:
            # A frame too large once decoded (the decoder never built it): it fails alone.
            reason = message.reason if type(message) is RefusedRequest else f"unknown op {op!r}"
            log.warning("refused a request from %s: %s", self.peer, reason)
            self.send(error_reply(request_id, ValidationError.code, reason))
            return
        self._hello(request_id, message)

    def _queue(self, item: WorkItem, op: str) -> None:
        if self._backlog:
            self._backlog.append(item)
            return
        try:
            if self._held or op in _LARGE_REPLY_OPS:
                accepted = self._admit(item)
            else:
                # A write with nothing held before it: neither counted nor held (the
                # common case, without two calls per request).
                accepted = self._worker.offer(item)
        except OperationalError as exc:
            self._count(item.request.get("op"), exc.code)
            self.send(error_reply(item.request.get("id"), exc.code, str(exc)))
            return
        if not accepted:
            self._backlog.append(item)
            self._update_reading()
            self.host.worker.when_space(self._drain_backlog)

    def _admit(self, item: WorkItem) -> bool:
        """Offer ``item`` to the worker, or hold it while this connection has as many
        large-reply requests with the writer as it may (see the module docstring).

        A request of an interactive transaction is never held: the transaction holds the
        writer, other requests of this connection may be parked behind it, and only its own
        requests can end it. False: the worker's queue is full.
        """
        if item.txn is None and (
            self._held
            or (self._reads >= self._reads_allowed and item.request.get("op") in _LARGE_REPLY_OPS)
        ):
            self._held.append(item)  # runs when one of its predecessors has answered
            self._update_reading()
            return True
        return self._offer(item)

    def _release_held(self) -> None:
        """Hand held requests to the worker while the bound and the client's reading allow."""
        held = self._held
        self._draining = True
        try:
            while held and not self.closed and not self._congested():
                item = held[0]
                if (
                    self._reads >= self._reads_allowed
                    and item.request.get("op") in _LARGE_REPLY_OPS
                ):
                    break  # deliver() calls again
                if not self._offer(item):
                    self.host.worker.when_space(self._release_held)
                    break
                held.popleft()
        except OperationalError as exc:  # shutting down: nothing more will run
            self._fail_waiting(held, exc)
        finally:
            self._draining = False
        self._update_reading()

    def _fail_waiting(self, waiting: deque[WorkItem], exc: OperationalError) -> None:
        """Answer every request still waiting here with ``exc`` (the worker is stopping)."""
        while waiting:
            item = waiting.popleft()
            self._count(item.request.get("op"), exc.code)
            self.send(error_reply(item.request.get("id"), exc.code, str(exc)))

    def _offer(self, item: WorkItem) -> bool:
        """Offer ``item`` to the worker, counting it if its reply may be large."""
        large = item.request.get("op") in _LARGE_REPLY_OPS
        if large:
            self._reads += 1  # before: an inline read is delivered inside offer()
        try:
            accepted = self.host.worker.offer(item)
        except BaseException:
            if large:
                self._reads -= 1
            raise
        if large and not accepted:
            self._reads -= 1
        return accepted

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
        self._count("hello", "ok")
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        self.send(ok_reply(request_id, self.host.hello()))

    def _drain_backlog(self) -> None:
        if self.closed:
            return
        backlog = self._backlog
        full = False
        # An inline read delivered inside offer() must not drain again from deliver().
        self._draining = True
        try:
            while backlog:
                if self._congested():
                    break  # resume_writing() calls again
                if not self._admit(backlog[0]):
                    full = True
                    break
                backlog.popleft()
        except OperationalError as exc:  # shutting down: nothing more will run
            self._fail_waiting(backlog, exc)
        finally:
            self._draining = False
        if full:
            self.host.worker.when_space(self._drain_backlog)
        self._update_reading()

    def take_backlog(self) -> list[WorkItem]:
        """Hand over requests not yet queued (shutdown runs them too)."""
        self._work(force=True)  # requests decoded but held back join them
        items = [*self._held, *self._backlog]
        self._held.clear()
        self._backlog.clear()
        # They are the worker's now: deliver() counts their answers down.
        self._reads += sum(1 for item in items if item.request.get("op") in _LARGE_REPLY_OPS)
        return items

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self.closed:
            return
        should_pause = (
            bool(self._backlog)
            or len(self._held) >= HELD_MAX
            or bool(self._unhandled)
            or self._writing_paused
            or self.host.stopping
        )
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
        """The worker's reply for ``item``: count it, queue it for the next write."""
        request = item.request
        op = request.get("op")
        # Counted even when the client is gone: the request ran. Plain dict counters; the
        # metrics exporter reads them from its own thread (see metrics.py).
        if ok:
            key = _OK_KEYS.get(op, _OTHER_OK)  # made once, not a tuple per reply
        else:
            key = (op if op in _COUNTED_OPS else "other", error_code(value))
        outcomes = self._outcomes
        outcomes[key] = outcomes.get(key, 0) + 1
        large = op in _LARGE_REPLY_OPS
        if large:
            self._reads -= 1
        if self.closed:
            return
        # Counted into the daemon's figures by _flush, which follows every reply.
        self._elapsed.append(perf_counter() - item.received)
        request_id = request.get("id")
        if ok:
            try:
                frame = encode_ok_frame(request_id, value)
            except ValidationError as exc:  # a result msgpack cannot carry
                frame = _frame(error_reply(request_id, exc.code, str(exc)))
            size = len(frame)
            if size > self._max_reply:  # the engine's own check missed this shape
                frame = _frame(error_reply(request_id, *_too_large(size, self._max_reply)))
                size = len(frame)
            self._append(frame)
            if large:
                self._read_answered(size)
        else:
            self.send(error_reply(request_id, key[1], str(value)))
            if large:
                self._read_answered(0)

    def _read_answered(self, size: int) -> None:
        """Adapt how many large-reply requests may be in flight; let the next one go."""
        # The larger of the last reply and a decaying memory of big ones: one small reply
        # after big ones does not open the gate wide at once.
        self._reply_size = max(size, self._reply_size // 2)
        fits = self._max_unsent // max(self._reply_size, 1)
        self._reads_allowed = max(1, min(READS_IN_FLIGHT_MAX, fits))
        if self._held and self._reads < self._reads_allowed and not self._draining:
            self._release_held()

    def _count(self, op: Any, outcome: str) -> None:
        """Count a request answered without the worker (the rare paths)."""
        key = (op if op in _COUNTED_OPS else "other", outcome)
        self._outcomes[key] = self._outcomes.get(key, 0) + 1

    def notify(self, tip: int) -> None:
        """Send the event ``{"event": "changes", "tip": tip}`` to this subscriber.

        A client that does not read its socket gets no more events once
        :data:`EVENTS_UNSENT_MAX` bytes wait for it: the newest tip waits here (one int,
        whatever the number of commits meanwhile) and goes out with the next event it
        can take, or on ``resume_writing``. Nothing is lost by merging: the client
        reads the changes from the log, from its own cursor (and polls the file too).
        """
        if self.closed or self._transport is None:
            return
        if (
            self._writing_paused
            or self._transport.get_write_buffer_size() + self._out_bytes > EVENTS_UNSENT_MAX
        ):
            if self._unsent_tip:
                self._counters.events_merged += 1
            self._unsent_tip = tip
            return
        self._unsent_tip = 0
        self._counters.events += 1
        self._append(_frame({"event": "changes", "tip": tip}))

    def send(self, reply: dict[str, Any]) -> None:
        """Queue a reply; every reply of this loop iteration goes out in one write."""
        if self.closed:
            return
        self._append(_frame(reply))

    def _append(self, frame: bytes) -> None:
        self._out.append(frame)
        self._out_bytes += len(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        elapsed = self._elapsed
        if elapsed:
            # The latencies of the replies about to leave, counted in one go rather than
            # per reply; before the write, so a client that has its reply sees them counted.
            self._latencies.extend(elapsed)
            self._latency_buckets.add_many(elapsed)
            elapsed.clear()
        if self._out and self._transport is not None and not self._transport.is_closing():
            data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
            self._out.clear()
            self._out_bytes = 0
            self._transport.write(data)

    def close(self) -> None:
        """Flush what is queued and close the connection."""
        self._flush()
        self.closed = True
        if self._transport is not None:
            self._transport.close()
