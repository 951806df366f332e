"""``DqliteTransport``: the same protocol requests, run on a dqlite cluster's leader.

The SQL is the engine's (:mod:`fastquartdb.engine.statements` and
:func:`fastquartdb.engine.schema.ensure_table`); only where it runs differs.
Table shapes come from the same PRAGMAs the engine reads, fetched over dqlite.
The ops themselves and their cache of table shapes are the engine's dqlite
driver's (:mod:`fastquartdb.engine.dqlite.runner`), finding the leader is
:mod:`fastquartdb.engine.dqlite.leader`'s; this module owns failover, resends
and transactions: the transport is a driver plus failover, not an engine.

Policy:

* **Leader.** The transport asks the configured nodes who leads and keeps one
  connection to the leader, used by one request at a time (dqlite answers one
  request per connection at a time).
* **Atomic requests.** A request of several statements (``insert_many``,
  ``upsert_many``, ``ensure_table``) runs in ``BEGIN IMMEDIATE`` ... ``COMMIT``,
  or inside a ``SAVEPOINT`` when an interactive transaction is open.
* **Failover.** On "not leader" or a broken connection the transport finds the
  new leader (for up to ``failover_timeout`` seconds) and runs again what is safe
  to run again: reads, and writes that never reached a point where they could
  have committed. A keyed write (every write the manager sends outside a
  transaction) whose COMMIT may have happened is resent with its key and
  ``"resent": true``, and answered from its record if it committed (see
  :mod:`.keyed`); it raises :class:`ConnectionLostError` only when no leader
  takes it within the window, saying it will not be resent. An unkeyed write in
  that case (``request_keys=False``) raises it saying its outcome is unknown.
* **Interactive transactions** hold the connection for their task: other
  requests wait until the transaction ends. A transaction whose leader is lost
  is gone (dqlite rolls it back); its next request raises ``ConnectionLostError``.
  A keyed COMMIT lost with the leader is resolved with the next leader: it
  returns if the transaction committed, else raises saying it was rolled back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ...engine.config import EMBEDDED
from ...engine.dqlite.connection import NodeConnection
from ...engine.dqlite.keyed import is_keyed, record_commit, resolve, run_keyed
from ...engine.dqlite.leader import Leader, parse_dqlite_url
from ...engine.dqlite.runner import OpRunner
from ...engine.dqlite.session import Lost, Session, translate_dqlite_error
from ...engine.requestkeys import RequestKeys
from ...engine.schema import check_identifier, quote
from ...protocol.errors import (
    ConnectionLostError,
    DaemonUnavailableError,
    DatabaseBusyError,
    FQDBError,
    InterfaceError,
    ValidationError,
)
from ...protocol.messages import READ_OPS
from ..transports import Transport, check_wire_size

__all__ = ["DqliteTransport", "parse_dqlite_url", "translate_dqlite_error"]

log = logging.getLogger("fastquartdb.client")


class DqliteTransport(Transport):
    """Protocol requests on a dqlite cluster (Raft-replicated SQLite).

    Example::

        await AsyncDatabaseManager.init_engine("dqlite://127.0.0.1:9001,127.0.0.1:9002/app")
    """

    mode = "dqlite"

    def __init__(
        self,
        nodes: list[str],
        database: str,
        *,
        connect_timeout: float = 2.0,
        failover_timeout: float = 20.0,
        busy_timeout: float = EMBEDDED.busy_timeout,
        read_timeout: float | None = 30.0,
    ) -> None:
        #: The connection to the leader, found again when the leader changes.
        self.cluster = Leader(
            nodes,
            database,
            connect_timeout=connect_timeout,
            failover_timeout=failover_timeout,
            read_timeout=read_timeout,
        )
        self.nodes = self.cluster.nodes
        self.database = database
        self.failover_timeout = failover_timeout
        self.busy_timeout = busy_timeout
        #: Keyed writes sent again after a lost leader (and commits resolved).
        self.resent = 0
        #: The request keys' records on the cluster (the engine's logic, see its :mod:`.keyed`).
        self.keys = RequestKeys()
        # _io: one request at a time on the connection. _gate: held by an open
        # interactive transaction, so other tasks' requests wait until it ends.
        self._io = asyncio.Lock()
        self._gate = asyncio.Lock()
        self._txn: Any = None
        self._txn_broken = False
        # The ops themselves, with their cache of table shapes (see .runner).
        self._runner = OpRunner()
        self._closed = False

    @classmethod
    async def open(cls, url: str, **options: Any) -> DqliteTransport:
        """Parse ``url``, find the leader and open the database on it.

        Raises:
            ValidationError: a malformed URL.
            DaemonUnavailableError: no leader answered within ``failover_timeout``.
        """
        nodes, database = parse_dqlite_url(url)
        self = cls(nodes, database, **options)
        async with self._io:
            await self._connection()
        return self

    @property
    def leader(self) -> str | None:
        """The address of the node requests go to now, if connected."""
        return self.cluster.address

    @property
    def failovers(self) -> int:
        """Times the transport had to find a new leader."""
        return self.cluster.failovers

    async def _connection(self) -> NodeConnection:
        """The leader connection, finding the leader first if needed (caller holds ``_io``)."""
        return await self.cluster.connection()

    async def _drop_connection(self) -> None:
        await self.cluster.drop()

    # ------------------------------------------------------------ requests

    async def request(self, request: dict[str, Any]) -> Any:
        if self._closed:
            raise InterfaceError("the database is closed; call init_engine() again")
        check_wire_size(request)  # the daemon's limit: the same in every mode
        op = request.get("op")
        txn = request.get("txn")
        if op in ("begin", "commit", "rollback"):
            if txn is None:
                raise ValidationError(
                    "begin/commit/rollback need 'txn': the id of the interactive transaction they belong to"
                )
            return await self._transaction_op(request, txn)
        if txn is not None and txn == self._txn:
            return await self._in_transaction(request)
        if txn is not None:
            raise ConnectionLostError(
                "this transaction was lost with the connection to the dqlite leader and rolled back"
            )
        async with self._gate:
            return await self._autocommit(request)

    async def _autocommit(self, request: dict[str, Any]) -> Any:
        """A request outside any interactive transaction, with failover and busy retries.

        A keyed write lost with the leader after its COMMIT was sent is sent again to
        the new leader with the same key and ``"resent": true``; the leader answers it
        from its record if the first send committed (see :mod:`.keyed`).
        """
        op = request.get("op")
        read = op in READ_OPS
        keyed = op == "resolve" or is_keyed(request)
        resending = False
        deadline = time.monotonic() + self.failover_timeout
        # Counted from the first busy answer: a failover wait must not use up the busy budget.
        busy_deadline: float | None = None
        delay = 0.01
        while True:
            async with self._io:
                try:
                    try:
                        conn = await self._connection()
                    except DaemonUnavailableError as exc:
                        if not resending:
                            raise
                        raise ConnectionLostError(
                            f"the connection to the dqlite leader was lost during {op} and "
                            f"no leader could be reached again ({exc}): {op} will not be "
                            "resent, and whether it committed is unknown"
                        ) from None
                    session = Session(conn, in_transaction=False)
                    if op == "resolve":
                        return await resolve(self.keys, session, request)
                    if keyed:
                        return await run_keyed(self.keys, session, request, self._runner.run)
                    return await self._runner.run(session, request)
                except Lost as lost:
                    await self._drop_connection()
                    self.cluster.failovers += 1
                    # A new leader, a new busy budget: busy answers of the old one (another
                    # client's transaction) say nothing about the next, and the failover
                    # wait must not use the budget up.
                    busy_deadline = None
                    if not (read or lost.safe or not lost.committable):
                        if not keyed:
                            _, state = await self.cluster.describe()
                            raise ConnectionLostError(
                                f"the connection to the dqlite leader was lost during "
                                f"{op}: its outcome is unknown ({lost}); {state}"
                            ) from None
                        # It may have committed: the next leader answers from the record if so.
                        request["resent"] = True
                        resending = True
                        self.resent += 1
                    if time.monotonic() >= deadline:
                        _, state = await self.cluster.describe()
                        if resending:
                            raise ConnectionLostError(
                                f"no dqlite leader took the resent {op} within "
                                f"{self.failover_timeout:g} s ({lost}): it will not be resent "
                                f"again, and whether it committed is unknown; {state}"
                            ) from None
                        raise ConnectionLostError(
                            f"no dqlite leader took {op} within "
                            f"{self.failover_timeout:g} s ({lost}); it was not applied; {state}"
                        ) from None
                    log.info(
                        "dqlite leader lost (%s); %s %s",
                        lost,
                        "resending" if resending else "retrying",
                        op,
                    )
                    continue
                except DatabaseBusyError as busy:
                    if busy_deadline is None:
                        busy_deadline = time.monotonic() + self.busy_timeout
                    elif time.monotonic() >= busy_deadline:
                        # Busy may be another client's transaction, or a cluster that
                        # cannot commit (a new leader still applying, no quorum): say which.
                        healthy, state = await self.cluster.describe()
                        if healthy:
                            raise
                        raise DatabaseBusyError(
                            f"dqlite answered busy for {self.busy_timeout:g} s: {state}"
                        ) from busy
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def _in_transaction(self, request: dict[str, Any]) -> Any:
        async with self._io:
            conn = self.cluster.current
            if self._txn_broken or conn is None:
                raise ConnectionLostError(
                    "the connection to the dqlite leader was lost inside this transaction; "
                    "dqlite rolled it back"
                )
            try:
                return await self._runner.run(Session(conn, in_transaction=True), request)
            except Lost as lost:
                self._txn_broken = True
                await self._drop_connection()
                raise ConnectionLostError(
                    f"the dqlite leader was lost inside this transaction, which is rolled back ({lost})"
                ) from None

    async def _transaction_op(self, request: dict[str, Any], txn: Any) -> Any:
        op = request["op"]
        raw_name = request.get("savepoint")
        name = None if raw_name is None else check_identifier(raw_name, "savepoint name")
        if op == "begin" and name is None:
            await self._gate.acquire()
            try:
                async with self._io:
                    deadline = time.monotonic() + self.busy_timeout
                    while True:
                        try:
                            conn = await self._connection()
                            await Session(conn, True).control("BEGIN IMMEDIATE")
                            break
                        except Lost:
                            await self._drop_connection()
                            self.cluster.failovers += 1
                        except DatabaseBusyError:
                            if time.monotonic() >= deadline:
                                raise
                            await asyncio.sleep(0.02)
            except BaseException:
                self._gate.release()
                raise
            self._txn = txn
            self._txn_broken = False
            return None
        if txn != self._txn:
            if op == "rollback":
                return None  # already gone with its connection
            raise ConnectionLostError(
                "this transaction was lost with the connection to the dqlite leader and rolled back"
            )
        if name is not None:
            sql = {
                "begin": [f"SAVEPOINT {quote(name)}"],
                "commit": [f"RELEASE {quote(name)}"],
                "rollback": [f"ROLLBACK TO {quote(name)}", f"RELEASE {quote(name)}"],
            }[op]

            async def savepoint(session: Session) -> None:
                for statement in sql:
                    await session.control(statement)

            return await self._in_transaction({"op": "_savepoint", "run": savepoint})
        # The top-level end: whatever happens, the gate opens for the others.
        try:
            if self._txn_broken:
                if op == "rollback":
                    return None
                raise ConnectionLostError(
                    "the connection to the dqlite leader was lost inside this transaction; "
                    "dqlite rolled it back"
                )
            async with self._io:
                current = self.cluster.current
                if current is None:
                    if op == "rollback":
                        return None
                    raise ConnectionLostError(
                        "the connection to the dqlite leader was lost inside this transaction"
                    )
                session = Session(current, True)
                try:
                    if op == "commit":
                        if "key" in request:
                            # With the transaction: see keyed.py.
                            await record_commit(self.keys, session, request)
                        await session.commit()
                    else:
                        await session.control("ROLLBACK")
                except Lost as lost:
                    await self._drop_connection()
                    self.keys.forget_schema()
                    if op == "rollback":
                        return None
                    if lost.committable and "key" in request:
                        return await self._resolve_commit(request, lost)
                    raise ConnectionLostError(
                        "the connection to the dqlite leader was lost during COMMIT: "
                        + (
                            f"the transaction's outcome is unknown ({lost})"
                            if lost.committable
                            else f"it was rolled back ({lost}); nothing of it was written"
                        )
                    ) from None
                except FQDBError:
                    self.keys.forget_schema()
                    if op == "commit":
                        # A failed COMMIT leaves the transaction open in SQLite: end it.
                        try:
                            await session.control("ROLLBACK")
                        except (FQDBError, Lost):
                            await self._drop_connection()
                    raise
                finally:
                    self._runner.tables.clear()
            return None
        finally:
            self._txn = None
            self._txn_broken = False
            self._gate.release()

    async def _resolve_commit(self, request: dict[str, Any], lost: Lost) -> None:
        """A keyed COMMIT whose answer was lost with the leader: ask the next leader.

        ``resolve`` answers from the commit's record, and writes a tombstone when there
        is none, so the answer cannot change afterwards (caller holds ``_io``).

        Raises:
            ConnectionLostError: the transaction was rolled back (nothing of it is
                written), or no leader could be asked within ``failover_timeout``.
        """
        deadline = time.monotonic() + self.failover_timeout
        cause: Exception = lost
        while True:
            try:
                conn = await self._connection()
                answer = await resolve(self.keys, Session(conn, False), {"key": request["key"]})
                break
            except Lost as again:
                await self._drop_connection()
                self.cluster.failovers += 1
                cause = again
            except (DaemonUnavailableError, DatabaseBusyError) as exc:
                cause = exc
            if time.monotonic() >= deadline:
                raise ConnectionLostError(
                    f"the connection to the dqlite leader was lost during COMMIT ({lost}) and "
                    f"its outcome could not be asked ({cause}): whether the transaction "
                    "committed is unknown"
                ) from None
            await asyncio.sleep(0.05)
        self.resent += 1
        if answer.get("committed") is True:
            return None
        raise ConnectionLostError(
            f"the connection to the dqlite leader was lost during COMMIT ({lost}): the "
            "transaction was rolled back (it never committed); nothing of it was written"
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = self.cluster.closed = True
        await self._drop_connection()
