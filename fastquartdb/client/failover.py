"""Daemon discovery, reconnection and fallback to embedded mode.

Policy (``mode="auto"``; ``mode="daemon"`` is the same without the fallback):

* At ``init_engine``: a daemon serving the file is used if one answers on the
  socket, else the engine runs embedded.
* The daemon goes away: requests in flight fail with ``ConnectionLostError``;
  for writes the message says the outcome is unknown. Reads are sent again
  once a connection is back. The client tries to reconnect for
  ``reconnect_window`` seconds; if the daemon stays away it falls back to
  embedded with a warning (safe: SQLite's own locks guard the file).
* While embedded it looks for the daemon again at most once per
  ``probe_interval`` seconds, in the background (a stopped daemon must not hold
  a request for ``connect_timeout``), and returns to it when one answers.
* An interactive transaction stays on the transport that began it; if that
  was the lost connection, its next request fails with ``ConnectionLostError``.
  A new transaction begun after the loss reconnects first, so a client that
  only uses transactions recovers as plain calls do.
* A daemon that is there but cannot serve us — a socket served by another
  user (a squatter), a daemon at ``--max-clients``, or one that does not answer
  ``hello`` within ``connect_timeout`` (stopped, overloaded) — is logged as a
  warning in ``auto`` mode, which then runs embedded; ``mode="daemon"`` raises.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from ..protocol.errors import (
    AccessDeniedError,
    ConnectionLostError,
    DaemonUnavailableError,
    DatabaseBusyError,
    FQDBError,
    InterfaceError,
    RequestTimeoutError,
    TooManyClientsError,
)
from ..protocol.messages import has_request_key
from .connection import SocketTransport
from .transports import EmbeddedTransport, LocalReads, Transport, TransportInfo

__all__ = ["FailoverTransport"]

log = logging.getLogger("fastquartdb.client")


class FailoverTransport(Transport):
    """A daemon connection that survives daemon restarts, with embedded mode as the fallback."""

    def __init__(
        self,
        db_path: str,
        socket_path: str,
        *,
        allow_embedded: bool,
        embedded_options: dict[str, Any],
        request_timeout: float | None,
        reconnect_window: float,
        probe_interval: float,
        connect_timeout: float = 5.0,
    ) -> None:
        self.db_path = db_path
        self.connect_timeout = connect_timeout
        self.socket_path = socket_path
        self.allow_embedded = allow_embedded
        self.reconnect_window = reconnect_window
        self.probe_interval = probe_interval
        self.switches = 0
        #: Keyed writes sent again after a lost connection (and commits resolved).
        self.resent = 0
        self._embedded_options = embedded_options
        self._request_timeout = request_timeout
        self._current: Transport | None = None
        self._embedded: EmbeddedTransport | None = None
        self._txn_owner: dict[Any, Transport] = {}
        self._recovering: asyncio.Future[Transport] | None = None
        self._probing: asyncio.Future[None] | None = None
        self._next_probe = 0.0
        self._closed = False

    @classmethod
    async def start(cls, db_path: str, socket_path: str, **options: Any) -> FailoverTransport:
        """Connect to the daemon, or (when allowed) start embedded.

        Raises:
            DaemonUnavailableError: no daemon answers and embedded is not allowed.
        """
        self = cls(db_path, socket_path, **options)
        try:
            self._current = await self._connect()
        except (DaemonUnavailableError, AccessDeniedError, TooManyClientsError) as exc:
            if not self.allow_embedded:
                raise
            if not isinstance(exc, DaemonUnavailableError) or os.path.lexists(socket_path):
                # Something is there but cannot serve us (a squatter, a stopped or full
                # daemon): say so, it is not the quiet "no daemon runs" case.
                log.warning("not using the daemon for %s, running embedded: %s", db_path, exc)
            self._current = await self._open_embedded()
            self._next_probe = time.monotonic() + self.probe_interval
        return self

    @property
    def mode(self) -> str:  # type: ignore[override]
        assert self._current is not None
        return self._current.mode

    def info(self) -> TransportInfo:
        """The :meth:`Transport.info` of the transport requests go to now (its ``mode``
        changes as this switches between the daemon and embedded)."""
        return self.current.info()

    @property
    def current(self) -> Transport:
        """The transport requests go to now."""
        assert self._current is not None
        return self._current

    def local_reads(self) -> LocalReads:
        assert self._current is not None
        return self._current.local_reads()

    async def _connect(self) -> SocketTransport:
        return await SocketTransport.connect(
            self.socket_path,
            self.db_path,
            connect_timeout=self.connect_timeout,
            request_timeout=self._request_timeout,
        )

    async def _open_embedded(self) -> EmbeddedTransport:
        if self._embedded is None:
            self._embedded = await EmbeddedTransport.open(self.db_path, **self._embedded_options)
        return self._embedded

    async def subscribe(self, callback: Callable[[int], None]) -> bool:
        """Subscribe on the transport in use now. The change watch asks again and again,
        so after a reconnection or a switch it subscribes on the new transport; a process
        that only follows a feed (its reads are local) notices a lost daemon here, and
        reconnects, or while embedded looks for the daemon, as a request would."""
        transport = self.current
        if transport.mode == "embedded" and time.monotonic() >= self._next_probe:
            self._start_probe()
        try:
            return await transport.subscribe(callback)
        except ConnectionLostError:
            self._recover_in_background(transport)
            return False

    # ------------------------------------------------------------ requests

    async def request(self, request: dict[str, Any]) -> Any:
        if self._closed:
            raise InterfaceError("the database is closed; call init_engine() again")
        txn = request.get("txn")
        if txn is not None:
            return await self._in_transaction(txn, request)
        transport = self._current
        assert transport is not None
        if transport.mode == "embedded" and time.monotonic() >= self._next_probe:
            self._start_probe()
        try:
            return await transport.request(request)
        except ConnectionLostError as exc:
            if not hasattr(exc, "retryable"):
                raise  # not a lost connection (those say retryable) but the writer's answer
            # retryable: a read, ensure_table, a request never sent, or a keyed write.
            if self._closed or not getattr(exc, "retryable", False):
                self._recover_in_background(transport)
                raise
            if has_request_key(request):
                return await self._resend(transport, request)
            transport = await self._recover(transport)
            return await transport.request(request)
        except RequestTimeoutError:
            if self._closed or not has_request_key(request):
                raise
            # No reply in time (a stopped daemon): give up on that connection, so whatever
            # it still answers goes nowhere, and resend, keyed, where a writer answers.
            transport.request_timed_out()
            return await self._resend(transport, request)

    async def _resend(self, failed: Transport, request: dict[str, Any]) -> Any:
        """Send a keyed write again until a writer answers or the reconnect window ends.

        The writer answers a key it has recorded from the record, so the write runs at
        most once and the caller gets its one result.

        Raises:
            ConnectionLostError: no writer within the window; the write is not resent.
        """
        deadline = time.monotonic() + max(self.reconnect_window, 1.0) * 2
        transport = failed
        while True:
            try:
                transport = await self._recover(transport)
            except DaemonUnavailableError as exc:
                raise ConnectionLostError(
                    _not_resent(request, f"no writer could be reached ({exc})")
                ) from None
            request["resent"] = True
            self.resent += 1
            try:
                return await transport.request(request)
            except (ConnectionLostError, RequestTimeoutError, DatabaseBusyError) as exc:
                # Lost again, or a writer that cannot take it yet (a stopped daemon holding
                # the file's write lock): its first send may still commit, so only the key
                # makes another try safe; keep trying within the window.
                if self._closed or time.monotonic() >= deadline:
                    raise ConnectionLostError(
                        _not_resent(request, f"it was resent and failed again ({exc})")
                    ) from None
                if isinstance(exc, RequestTimeoutError):
                    transport.request_timed_out()
                elif isinstance(exc, DatabaseBusyError):
                    await asyncio.sleep(0.05)

    async def _in_transaction(self, txn: Any, request: dict[str, Any]) -> Any:
        op = request.get("op")
        top = request.get("savepoint") is None
        if op == "begin" and top:
            owner = self._current
            assert owner is not None
            if owner.lost_cause is not None:
                # Nothing but transactions since the daemon went away: nothing else would
                # ever notice and reconnect, so a new transaction does (nothing was sent).
                owner = await self._recover(owner)
            self._txn_owner[txn] = owner
        else:
            owner = self._txn_owner.get(txn, self._current)
            assert owner is not None
        ends = top and op in ("commit", "rollback")
        if owner.lost_cause is not None:
            self._txn_owner.pop(txn, None)
            self._recover_in_background(owner)
            if ends and op == "rollback":
                return None  # the daemon rolled it back when the connection dropped
            raise ConnectionLostError(
                "the connection to the daemon was lost inside this transaction, "
                "and the daemon rolled it back"
            )
        try:
            result = await owner.request(request)
        except (ConnectionLostError, RequestTimeoutError) as exc:
            self._txn_owner.pop(txn, None)
            if isinstance(exc, ConnectionLostError) and not hasattr(exc, "retryable"):
                raise  # the writer's answer (it resolves a COMMIT it lost itself)
            if ends and op == "commit" and "key" in request and not self._closed:
                if isinstance(exc, RequestTimeoutError):
                    # Give up on that connection first: the daemon then rolls the
                    # transaction back, unless it commits before it notices; resolve says.
                    owner.request_timed_out()
                return await self._resolve_commit(owner, request, exc)
            if isinstance(exc, ConnectionLostError):
                self._recover_in_background(owner)
            raise
        except BaseException:
            if op == "begin" and top:
                self._txn_owner.pop(txn, None)
            raise
        if ends:
            self._txn_owner.pop(txn, None)
        return result

    async def _resolve_commit(
        self, failed: Transport, request: dict[str, Any], cause: FQDBError
    ) -> None:
        """A commit whose reply was lost: ask a writer whether it committed.

        ``resolve`` answers from the commit's record, and when there is none records
        that there never will be one, so the answer cannot change afterwards.

        Raises:
            ConnectionLostError: the transaction was rolled back (nothing of it is
                written), or no writer could be asked (then its outcome is unknown).
        """
        try:
            transport = await self._recover(failed)
            answer = await transport.request({"op": "resolve", "key": request["key"]})
        except (DaemonUnavailableError, ConnectionLostError, RequestTimeoutError) as exc:
            raise ConnectionLostError(
                f"{cause}; the commit's outcome could not be asked ({exc}): "
                "whether the transaction committed is unknown"
            ) from None
        self.resent += 1
        if isinstance(answer, dict) and answer.get("committed") is True:
            return None
        raise ConnectionLostError(
            f"{cause}: the transaction was rolled back (the connection was lost before it "
            "committed); nothing of it was written"
        )

    # ------------------------------------------------------------ switching

    def _start_probe(self) -> None:
        """While embedded: look for the daemon in the background. Cheap when its socket is absent.

        In the background, not in the request that noticed it is time: a daemon that
        accepts but does not answer (stopped) would otherwise hold that request for
        ``connect_timeout``. Requests run embedded until the probe has connected.
        """
        self._next_probe = time.monotonic() + self.probe_interval
        if self._probing is not None or not os.path.exists(self.socket_path):
            return
        self._probing = asyncio.ensure_future(self._probe())
        self._probing.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _probe(self) -> None:
        try:
            transport = await self._connect()
        except (DaemonUnavailableError, AccessDeniedError, TooManyClientsError) as exc:
            log.debug("fqdb-server on %s not usable yet: %s", self.socket_path, exc)
            return
        finally:
            self._probing = None
        if self._closed or self._current is not self._embedded:
            await transport.close()  # closed, or recovered another way meanwhile
            return
        self._current = transport
        self.switches += 1

    def _recover_in_background(self, failed: Transport) -> None:
        if self._recovering is None and failed is self._current and not self._closed:
            task = asyncio.ensure_future(self._recover(failed))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _recover(self, failed: Transport) -> Transport:
        """Get a working transport after ``failed`` broke; concurrent callers share one attempt."""
        if failed is not self._current and self._current is not None:
            return self._current
        if self._recovering is not None:
            return await asyncio.shield(self._recovering)
        future: asyncio.Future[Transport] = asyncio.get_running_loop().create_future()
        self._recovering = future
        try:
            transport = await self._reconnect()
            self._current = transport
            self.switches += 1
            future.set_result(transport)
            return transport
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()
            raise
        finally:
            self._recovering = None

    async def _reconnect(self) -> Transport:
        deadline = time.monotonic() + self.reconnect_window
        delay = 0.02
        while True:
            try:
                return await self._connect()
            except (DaemonUnavailableError, TooManyClientsError):
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.25)
        if not self.allow_embedded:
            raise DaemonUnavailableError(
                f"the daemon on {self.socket_path} went away and did not come back within "
                f"{self.reconnect_window:g} s"
            )
        log.warning(
            "fqdb-server on %s is gone; running embedded on %s until it is back",
            self.socket_path,
            self.db_path,
        )
        self._next_probe = time.monotonic() + self.probe_interval
        return await self._open_embedded()

    async def close(self) -> None:
        self._closed = True
        if self._probing is not None:
            self._probing.cancel()
            await asyncio.gather(self._probing, return_exceptions=True)
        if self._current is not None and self._current is not self._embedded:
            await self._current.close()
        if self._embedded is not None:
            await self._embedded.close()


def _not_resent(request: dict[str, Any], why: str) -> str:
    op = request.get("op")
    return (
        f"the connection to the daemon was lost with {op} in flight and {why}: {op} will not "
        "be resent, and whether it committed is unknown; to retry such a write safely "
        "yourself, give it an idempotency_key"
    )
