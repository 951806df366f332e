"""The daemon transport: one Unix-socket connection per process, shared by all tasks.

Requests carry ids and are pipelined: any number may be in flight, and the
one reader callback matches replies to their futures by id. Frames written
in one loop iteration leave in one ``write``.

Who owns a pending future: :meth:`SocketTransport.request` creates it and
removes it when it returns, whatever happens; the reader only resolves it.
When the connection drops every pending future fails with
:class:`ConnectionLostError`; for reads the error is marked ``retryable``
(the failover layer resends them), for writes its message says the outcome
is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from .._version import __version__
from ..protocol import (
    PROTOCOL_VERSION,
    RESENDABLE_OPS,
    FrameDecoder,
    FrameError,
    encode_frame,
    error_from_code,
)
from ..protocol.address import DQLITE_URL_SCHEME, private_dir_problem, runtime_dir
from ..protocol.errors import (
    AccessDeniedError,
    ConnectionLostError,
    DaemonUnavailableError,
    FQDBError,
    InterfaceError,
    RequestTimeoutError,
)
from ..protocol.messages import has_request_key
from .transports import LocalReads, Transport, TransportInfo

__all__ = ["SocketTransport"]

#: Connections tried when the daemon closes one before answering hello (see connect()).
_HELLO_ATTEMPTS = 3


class _ClosedBeforeHello(DaemonUnavailableError):
    """The daemon closed the connection before its hello reply, without saying why."""


#: Replies may be larger than requests (a big fetch); this bounds what we buffer from a
#: daemon that does not announce its own reply limit (``max_reply`` in ``hello``).
MAX_REPLY_FRAME = 1 << 30
#: Room for the reply's id and keys around a result of ``max_reply`` bytes.
REPLY_ENVELOPE = 1 << 20
_CREDS = struct.Struct("3i")


def _server_uid(sock: socket.socket | None) -> int | None:
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None or sock is None:
        return None
    _pid, uid, _gid = _CREDS.unpack(sock.getsockopt(socket.SOL_SOCKET, option, _CREDS.size))
    return int(uid)


def _trusted_uids(db_path: str) -> set[int]:
    """Who may serve us: this user, root, and the owner of the database file.

    The owner already holds every byte of the data, so a daemon running as the
    owner (a dedicated ``fqdb`` user admitting the web workers' group with
    ``--allow-gid``) learns nothing new from our queries. Anyone else listening
    on the socket path is a squatter. A ``dqlite://`` URL names no file here:
    only this user and root (a path looked up as the URL could be anyone's).
    """
    trusted = {os.getuid(), 0}
    if db_path.startswith(DQLITE_URL_SCHEME):
        return trusted  # a cluster's URL is no file: nobody owns its data on this host
    with contextlib.suppress(OSError):
        trusted.add(os.stat(db_path).st_uid)
    return trusted


def _check_socket_dir(socket_path: str) -> None:
    """Refuse a socket in our runtime directory when that directory is not private."""
    directory = os.path.dirname(socket_path)
    if directory != runtime_dir() or not os.path.lexists(directory):
        return  # not the default place, or no daemon ever made it: connecting will tell
    problem = private_dir_problem(directory)
    if problem is not None:
        raise AccessDeniedError(f"not connecting to {socket_path}: {problem}")


class _Reader(asyncio.Protocol):
    def __init__(self, owner: SocketTransport) -> None:
        self.owner = owner

    def data_received(self, data: bytes) -> None:
        self.owner._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._on_lost(exc)


class SocketTransport(Transport):
    """Talks to ``fqdb-server`` over its Unix socket."""

    mode = "daemon"

    def __init__(self, socket_path: str, request_timeout: float | None) -> None:
        self.socket_path = socket_path
        self.request_timeout = request_timeout
        self.server: dict[str, Any] = {}
        self.lost: BaseException | None = None
        #: The daemon's connection-level error reply, if it sent one (access denied, ...).
        self.refusal: FQDBError | None = None
        self._transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder(MAX_REPLY_FRAME)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 1
        self._max_frame = MAX_REPLY_FRAME
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()
        self.request_keys = True
        # Called with the tip of each "changes" event (after subscribe()).
        self._on_changes: Callable[[int], None] | None = None

    @classmethod
    async def connect(
        cls,
        socket_path: str,
        db_path: str,
        *,
        connect_timeout: float = 5.0,
        request_timeout: float | None = None,
    ) -> SocketTransport:
        """Connect, check who serves the socket, and say hello.

        Raises:
            DaemonUnavailableError: nothing listens on ``socket_path``.
            AccessDeniedError: the socket is served by another user.
            InterfaceError: the daemon there serves a different file.
        """
        for attempt in range(_HELLO_ATTEMPTS):
            try:
                return await cls._connect_once(
                    socket_path, db_path, connect_timeout, request_timeout
                )
            except _ClosedBeforeHello:
                # A daemon that refuses a connection (too many clients, access denied)
                # writes why and closes; if our hello was written just after that close,
                # the write fails (EPIPE) before the reason is read. Asking again reads it.
                if attempt == _HELLO_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.02 * (attempt + 1))
        raise AssertionError("unreachable")

    @classmethod
    async def _connect_once(
        cls,
        socket_path: str,
        db_path: str,
        connect_timeout: float,
        request_timeout: float | None,
    ) -> SocketTransport:
        self = cls(socket_path, request_timeout)
        _check_socket_dir(socket_path)
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_unix_connection(lambda: _Reader(self), socket_path), connect_timeout
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise DaemonUnavailableError(
                f"no fqdb-server answers on {socket_path} ({exc or 'timed out'}); start one "
                f"with 'fqdb-server {db_path}' or use mode='auto' to run embedded"
            ) from None
        self._transport = transport
        try:
            uid = _server_uid(transport.get_extra_info("socket"))
        except OSError as exc:  # the daemon closed at once (a refusal follows, or nothing)
            uid = None
            self._on_lost(exc)
        if uid is not None and uid not in _trusted_uids(db_path):
            transport.close()
            raise AccessDeniedError(
                f"{socket_path} is served by uid {uid}, not by this user ({os.getuid()}), root "
                f"or the owner of {db_path}: refusing to send queries to it"
            )
        try:
            hello = await self._hello(connect_timeout, db_path)
        except BaseException:
            transport.close()
            raise
        if not isinstance(hello, dict):
            transport.close()
            raise InterfaceError(f"unexpected hello from {socket_path}: {hello!r}")
        # A cluster's URL is compared as written (both sides take it from the same string).
        expected = db_path if db_path.startswith(DQLITE_URL_SCHEME) else os.path.realpath(db_path)
        if hello.get("db") != expected:
            transport.close()
            raise InterfaceError(
                f"the daemon on {socket_path} serves {hello.get('db')!r}, not {expected!r}; "
                "pass socket= for this file's daemon"
            )
        self.server = hello
        ops = hello.get("ops")
        #: Whether the daemon records request keys (it lists ``resolve``); an older one
        #: would ignore them, and a resend could run twice (see :meth:`request`).
        self.request_keys = isinstance(ops, list) and "resolve" in ops
        self._max_frame = int(hello.get("max_frame") or self._max_frame)
        max_reply = hello.get("max_reply")
        if type(max_reply) is int and max_reply > 0:
            # The daemon answers a bigger result with result_too_large for that request
            # alone, so a longer frame here means a broken stream (room left for the envelope).
            self._decoder.max_frame = max_reply + REPLY_ENVELOPE
        return self

    def info(self) -> TransportInfo:
        """The daemon's own account of itself, from its hello (see :meth:`Transport.info`)."""
        return TransportInfo(
            self.mode,
            raw_sql=bool(self.server.get("raw_sql", True)),
            socket=self.socket_path,
            server=self.server.get("server"),
            server_pid=self.server.get("pid"),
        )

    @property
    def lost_cause(self) -> BaseException | None:
        """:attr:`lost`: why this connection is gone (see :attr:`Transport.lost_cause`)."""
        return self.lost

    def request_timed_out(self) -> None:
        """Abandon this connection (see :meth:`Transport.request_timed_out`)."""
        self.abandon(f"no reply within {self.request_timeout:g} s")

    async def _hello(self, timeout: float, db_path: str) -> Any:
        request = {
            "op": "hello",
            "version": PROTOCOL_VERSION,
            "client": f"fastquartdb/{__version__}",
        }
        try:
            return await asyncio.wait_for(self.request(request), timeout)
        except asyncio.TimeoutError:
            # Accepted (the kernel queues connections) but never answered: the daemon is
            # stopped (SIGSTOP, a debugger), or its loop is stuck. Not a bare TimeoutError.
            raise DaemonUnavailableError(
                f"the fqdb-server on {self.socket_path} accepted the connection but did not "
                f"answer hello within {timeout:g} s: it is stopped (SIGSTOP?) or overloaded; "
                f"check it (fqdb stats {db_path}) or restart it"
            ) from None
        except ConnectionLostError as exc:
            if self.refusal is not None:
                raise self.refusal from None
            raise _ClosedBeforeHello(
                f"the fqdb-server on {self.socket_path} closed the connection before hello "
                f"({exc}); see its log"
            ) from None

    def local_reads(self) -> LocalReads:
        hello = self.server
        if str(hello.get("db")).startswith(DQLITE_URL_SCHEME):
            return LocalReads(
                None,
                f"the daemon on {self.socket_path} serves a dqlite cluster: every read goes "
                "to its leader",
            )
        if hello.get("local_reads") is False:
            return LocalReads(
                None, f"the daemon on {self.socket_path} forbids local reads (--no-local-reads)"
            )
        return LocalReads(str(hello.get("db")), raw_sql=hello.get("raw_sql") is not False)

    async def subscribe(self, callback: Callable[[int], None]) -> bool:
        """See :meth:`Transport.subscribe`.

        Raises:
            ConnectionLostError: this connection is gone (the caller reconnects).
        """
        if self.lost is not None:
            raise ConnectionLostError(f"connection to the daemon lost ({self.lost})")
        if self._on_changes is callback:
            return True
        self._on_changes = callback
        try:
            await self.request({"op": "subscribe"})
        except ConnectionLostError:
            self._on_changes = None
            raise
        except FQDBError:
            self._on_changes = None  # an older daemon that knows no subscribe: poll
            return False
        return True

    # ------------------------------------------------------------ requests

    async def request(self, request: dict[str, Any]) -> Any:
        if self.refusal is not None:
            raise self.refusal
        if self.lost is not None:
            raise self._lost_error(request, self.lost, sent=False)
        if "key" in request or "idempotency_key" in request:  # has_request_key, inline
            if self.request_keys and self.request_timeout is not None:
                # (What _keyed does for a daemon that records keys, without its call.)
                request["expires"] = time.time() + self.request_timeout
            else:
                self._keyed(request)
        request_id = self._next_id
        self._next_id = request_id + 1
        request["id"] = request_id
        frame = encode_frame(request, self._max_frame)
        future: asyncio.Future[Any] = self._loop.create_future()
        pending = self._pending
        if not pending and not self._flush_scheduled and self._transport is not None:
            # Nothing else in flight (a lone task): the request leaves at once.
            self._transport.write(frame)
        else:
            # Other tasks are at work: requests made in this loop iteration are joined
            # into one write just after it.
            self._out.append(frame)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
        pending[request_id] = future
        try:
            if self.request_timeout is None:
                return await future
            return await asyncio.wait_for(future, self.request_timeout)
        except asyncio.TimeoutError:
            if not future.cancelled():
                raise  # the daemon's own reply was a timeout error (TransactionTimeoutError)
            raise RequestTimeoutError(
                f"no reply from the daemon within {self.request_timeout:g} s for "
                f"{request.get('op')}" + _outcome(request)
            ) from None
        except ConnectionLostError as exc:
            if self.lost is None:
                raise  # the daemon's answer (its writer lost the dqlite leader), not our loss
            raise self._lost_error(request, exc) from None
        finally:
            del self._pending[request_id]

    def _keyed(self, request: dict[str, Any]) -> None:
        """Stamp a keyed request with when we stop waiting for it, or unkey it for a daemon
        that does not record keys."""
        if not self.request_keys and self.server:
            if "idempotency_key" in request:
                raise InterfaceError(
                    f"the fqdb-server on {self.socket_path} ({self.server.get('server')}) "
                    "does not support idempotency_key; upgrade it"
                )
            # Unkeyed, a write lost with the connection is reported as outcome unknown.
            request.pop("key", None)
            request.pop("acked", None)
            request.pop("resent", None)
            return
        if self.request_timeout is not None:
            # A stopped daemon that resumes after we resent this elsewhere must not run it.
            request["expires"] = time.time() + self.request_timeout

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out or self._transport is None or self.lost is not None:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._transport.write(data)

    @staticmethod
    def _lost_error(
        request: dict[str, Any], cause: BaseException, *, sent: bool = True
    ) -> ConnectionLostError:
        op = request.get("op")
        if sent:
            message = f"connection to the daemon lost during {op} ({cause})" + _outcome(request)
        else:
            message = f"connection to the daemon lost ({cause}); {op} was not sent"
        error = ConnectionLostError(message)
        # Safe to send again elsewhere: a read, ensure_table, anything that never left, or
        # a keyed write (the writer answers a key it has recorded from the record).
        error.retryable = (  # type: ignore[attr-defined]
            not sent or op in RESENDABLE_OPS or has_request_key(request)
        )
        return error

    # ------------------------------------------------------------ reader callbacks

    def _on_data(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except FrameError as exc:
            self._on_lost(exc)
            if self._transport is not None:
                self._transport.close()
            return
        pending = self._pending
        for message in messages:
            request_id = message.get("id")
            future = pending.get(request_id) if isinstance(request_id, int) else None
            if future is None:
                if message.get("event") == "changes":
                    tip = message.get("tip")
                    if self._on_changes is not None and type(tip) is int:
                        self._on_changes(tip)
                    continue
                if request_id is None and message.get("ok") is False:
                    # A connection-level error (refused, malformed): the daemon closes next.
                    # Kept, because it may arrive before the request it answers is pending.
                    error = message.get("error")
                    if not isinstance(error, dict):
                        error = {}
                    self.refusal = error_from_code(error.get("code"), error.get("message"))
                    self._fail_all(self.refusal)
                continue
            if future.done():
                continue
            if message.get("ok") is True:
                future.set_result(message.get("result"))
            else:
                error = message.get("error")
                if not isinstance(error, dict):
                    error = {"code": "protocol", "message": f"malformed reply {message!r}"}
                future.set_exception(error_from_code(error.get("code"), error.get("message")))

    def _fail_all(self, error: BaseException) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)

    def _on_lost(self, exc: BaseException | None) -> None:
        if self.lost is None:
            self.lost = exc or ConnectionResetError("the daemon closed the connection")
        self._fail_all(self.refusal or ConnectionLostError(str(self.lost)))

    def abandon(self, reason: str) -> None:
        """Give up on this connection (its daemon does not answer): close it, and fail what
        is in flight with ``ConnectionLostError`` (the failover layer resends what it may)."""
        self._on_lost(ConnectionAbortedError(f"abandoned: {reason}"))
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()

    async def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._flush()
            self._transport.close()
        if self.lost is None:
            self.lost = ConnectionAbortedError("closed by this process")
        self._fail_all(InterfaceError("the database was closed while this request was in flight"))
        await asyncio.sleep(0)


def _outcome(request: dict[str, Any]) -> str:
    if request.get("op") in RESENDABLE_OPS:
        return ""
    if has_request_key(request):
        return ""  # the failover layer resends it, or says why it cannot
    return "; its outcome is unknown: it may or may not have been committed"
