"""One asyncio connection to one dqlite node.

dqlite answers one request at a time per connection, in order, so a
connection is used by one caller at a time (the transport's lock sees to
that): send a message, read its response. A query's rows may come in several
ROWS messages; :meth:`NodeConnection.query` reads them all before it returns,
so the connection is always left at a message boundary.

A node that stops answering (SIGSTOPped, its host frozen) keeps the TCP
connection open, so a read could wait forever: every ``probe_interval``
seconds of silence while a response is awaited, :attr:`NodeConnection.stalled`
(set by the transport) is asked whether to go on waiting; it raises
:class:`NodeUnavailable` to abandon the request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from ...protocol.errors import ResultTooLargeError
from . import wire

__all__ = ["DqliteRequestError", "NodeConnection", "NodeUnavailable", "split_address"]

#: SQLite's ``SQLITE_IOERR_NOT_LEADER`` (dqlite): this node does not lead; nothing ran.
NOT_LEADER = 10 | (40 << 8)
#: ``SQLITE_IOERR_LEADERSHIP_LOST``: leadership was lost while the request ran.
LEADERSHIP_LOST = 10 | (41 << 8)


class NodeUnavailable(ConnectionError):
    """A node could not be reached, or broke the connection (closed by the world, not by us)."""


class DqliteRequestError(Exception):
    """A FAILURE response: the node refused the request with SQLite's ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message} (dqlite code {code})")
        self.code = code
        self.message = message

    @property
    def not_leader(self) -> bool:
        """The node is not the leader: the request did not run, it may go elsewhere."""
        return self.code == NOT_LEADER or (
            self.code & 0xFF == 10 and "not leader" in self.message.lower()
        )

    @property
    def leadership_lost(self) -> bool:
        """Leadership moved while the request ran: a write's outcome is unknown."""
        return self.code == LEADERSHIP_LOST or "leadership lost" in self.message.lower()


def split_address(address: str) -> tuple[str, int]:
    """``"127.0.0.1:9001"`` -> ``("127.0.0.1", 9001)``."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"dqlite node address must be host:port, got {address!r}")
    return host.strip("[]"), int(port)


class NodeConnection:
    """A handshaken connection to one node; :meth:`open_database` before exec/query."""

    def __init__(
        self, address: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.address = address
        self.db_id: int | None = None
        self._reader = reader
        self._writer = writer
        self._messages = wire.MessageReader()
        self.closed = False
        #: Called with this connection and the seconds waited so far, after every
        #: ``probe_interval`` seconds without a byte while a response is awaited;
        #: it returns to go on waiting or raises NodeUnavailable to give up.
        self.stalled: Callable[[NodeConnection, float], Awaitable[None]] | None = None
        self.probe_interval = 0.5
        #: Most bytes of rows one query may bring (the daemon's ``--max-reply``); None: any.
        self.result_limit: int | None = None

    @classmethod
    async def connect(cls, address: str, timeout: float = 2.0) -> NodeConnection:
        """Connect to ``address`` and send the protocol version.

        Raises:
            NodeUnavailable: nothing answers there within ``timeout``.
        """
        host, port = split_address(address)
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise NodeUnavailable(f"dqlite node {address} is unreachable: {exc!r}") from None
        self = cls(address, reader, writer)
        try:
            writer.write(wire.encode_handshake())
            await asyncio.wait_for(writer.drain(), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            await self.close()
            raise NodeUnavailable(f"dqlite node {address} broke the handshake: {exc!r}") from None
        return self

    async def _receive(self) -> wire.Message:
        waited = 0.0
        while True:
            try:
                message = self._messages.next_message()
            except wire.WireError as exc:
                self._abort()
                raise NodeUnavailable(f"dqlite node {self.address}: {exc}") from None
            if message is not None:
                return message
            try:
                # Cancelling StreamReader.read on the timeout loses no data.
                data = await asyncio.wait_for(
                    self._reader.read(65536), self.probe_interval if self.stalled else None
                )
            except asyncio.TimeoutError:  # before OSError (its base on 3.11+): a silence so far
                assert self.stalled is not None
                waited += self.probe_interval
                await self.stalled(self, waited)
                continue
            except OSError as exc:
                self._abort()
                raise NodeUnavailable(f"dqlite node {self.address} went away: {exc!r}") from None
            if not data:
                self._abort()
                raise NodeUnavailable(f"dqlite node {self.address} closed the connection")
            self._messages.feed(data)

    async def roundtrip(self, frame: bytes) -> wire.Message:
        """Send one request and return its response (a FAILURE raises).

        Raises:
            NodeUnavailable: the connection broke; the request may or may not have run.
            DqliteRequestError: the node answered with a failure.
        """
        if self.closed:
            raise NodeUnavailable(f"connection to dqlite node {self.address} is closed")
        try:
            self._writer.write(frame)
            await self._writer.drain()
        except OSError as exc:
            self._abort()
            raise NodeUnavailable(f"dqlite node {self.address} went away: {exc!r}") from None
        try:
            message = await self._receive()
        except BaseException:
            # Cancelled or broken mid-response: the stream is no longer at a message
            # boundary, so this connection cannot be used again.
            self._abort()
            raise
        if message.type == wire.RESPONSE_FAILURE:
            failure = wire.decode_failure(message)
            raise DqliteRequestError(failure.code, failure.message)
        return message

    async def leader(self) -> wire.NodeAddress:
        """Ask this node who leads."""
        return wire.decode_node(await self.roundtrip(wire.encode_leader()))

    async def register(self, client_id: int) -> None:
        """Register as a client (answered by WELCOME)."""
        await self.roundtrip(wire.encode_client(client_id))

    async def open_database(self, name: str) -> None:
        """Open database ``name``; exec and query then run on it."""
        self.db_id = wire.decode_db(await self.roundtrip(wire.encode_open(name)))

    async def execute(
        self, sql: str, params: list[Any] | tuple[Any, ...] = ()
    ) -> wire.StatementResult:
        """Run a statement that returns no rows."""
        assert self.db_id is not None
        message = await self.roundtrip(wire.encode_exec_sql(self.db_id, sql, params))
        if message.type == wire.RESPONSE_ROWS:
            # A statement that does return rows (PRAGMA ...): read them to stay in step.
            await self._drain_rows(wire.decode_rows(message))
            return wire.StatementResult(0, 0)
        return wire.decode_result(message)

    async def query(
        self, sql: str, params: list[Any] | tuple[Any, ...] = ()
    ) -> tuple[tuple[str, ...], list[tuple[Any, ...]], bool]:
        """Run a statement and return its columns, every row, and whether any value
        came typed by its column's declaration (see :attr:`wire.Rows.typed`)."""
        assert self.db_id is not None
        message = await self.roundtrip(wire.encode_query_sql(self.db_id, sql, params))
        if message.type == wire.RESPONSE_RESULT:
            return (), [], False
        batch = wire.decode_rows(message)
        rows = list(batch.rows)
        typed = batch.typed
        size = len(message.body)
        while batch.more:
            if self.result_limit is not None and size > self.result_limit:
                await self._too_large(batch, len(rows))
            # Further batches arrive unasked, one message each.
            try:
                next_message = await self._receive()
            except BaseException:
                self._abort()
                raise
            if next_message.type == wire.RESPONSE_FAILURE:
                failure = wire.decode_failure(next_message)
                raise DqliteRequestError(failure.code, failure.message)
            batch = wire.decode_rows(next_message)
            size += len(next_message.body)
            rows.extend(batch.rows)
            typed = typed or batch.typed
        if self.result_limit is not None and size > self.result_limit:
            await self._too_large(batch, len(rows))
        return batch.columns, rows, typed

    async def _too_large(self, batch: wire.Rows, count: int) -> None:
        """Read the rest of a result over ``result_limit`` without keeping it, then say so.

        Raises:
            ResultTooLargeError: always (the connection is left at a message boundary).
        """
        try:
            await self._drain_rows(batch)
        except BaseException:
            self._abort()
            raise
        raise ResultTooLargeError(
            f"the result of this query is larger than the daemon's reply limit of "
            f"{self.result_limit} bytes (--max-reply) after {count} rows; fetch fewer rows "
            "(limit=, fewer columns=) or stream them with Model.iterate()"
        )

    async def _drain_rows(self, batch: wire.Rows) -> None:
        while batch.more:
            batch = wire.decode_rows(await self._receive())

    def _abort(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.transport.abort()

    async def close(self) -> None:
        """Close the connection. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self._writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)
