"""The daemon's writer on a dqlite cluster: each batch is one dqlite transaction.

``fqdb-server dqlite://a,b,c/app`` runs the same :class:`~fastquartdb.engine.worker.BatchWorker`
as on a file; its :class:`DqliteBackend` runs each batch on the cluster's leader
as the engine runs it on a file::

    BEGIN IMMEDIATE
      request 1            (multi-statement requests inside SAVEPOINT ... RELEASE)
      request 2            fails -> only its own changes are undone
      ...
      records of the request keys, and one record of the batch itself
    COMMIT                 one Raft round for the whole batch; replies only after it

So a cluster keeps the daemon's group commit instead of paying a Raft round per
request. The ops are the engine's dqlite driver's (:class:`~.runner.OpRunner`), the
request keys the engine's (:class:`~fastquartdb.engine.requestkeys.RequestKeys`).

Leader changes: the :class:`~.leader.Leader` finds the new leader. A batch whose
leader was lost before its COMMIT was sent never committed (dqlite undoes the open
transaction) and runs again, whole, on the new leader. One lost *at* its COMMIT is
resolved by its own record: a new dqlite leader has applied every entry its
predecessor committed before it answers, so the record is there if and only if the
batch committed; committed, its outcomes stand; not, it runs again. Either way no
request runs twice and none is answered "outcome unknown" while a leader can be
reached within ``failover_timeout``. The same holds for an interactive
transaction's COMMIT (resolved by its request key, or by a key of the writer's own).

A request that fails (a constraint, a bad value) fails alone, as on a file; after
a failure the writer asks the leader whether the transaction is still open (a
second ``BEGIN`` is refused inside one), so a failure that took the whole
transaction with it never lets the next request commit on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from ...protocol.errors import (
    ConnectionLostError,
    DaemonUnavailableError,
    DatabaseBusyError,
    FQDBError,
    IntegrityError,
    ProgrammingError,
)
from ...protocol.messages import READ_OPS, TRANSACTION_OPS
from ..batches import NO_TXN_ERROR, after_rollback_by_error, op_of, without_culprit
from ..requestkeys import KeyConflict, RequestKeys
from ..schema import check_identifier, quote
from ..work import Outcome
from .keyed import resolve, unrecordable, worth_recording
from .leader import Leader, parse_dqlite_url
from .runner import OpRunner
from .session import Lost, Session, drive, quietly

__all__ = ["DqliteBackend", "DqliteWriter"]

log = logging.getLogger("fastquartdb.server")


class _NoDeadlines:
    """dqlite has no progress handler: a statement runs on the leader until it ends, so
    there is no deadline to cancel (the worker's calls are no-ops)."""

    def cancel(self, request: dict[str, Any]) -> None: ...

    def forget(self) -> None: ...

    def shutdown(self, grace: float) -> None: ...


class DqliteWriter:
    """Runs the worker's batches and interactive transactions on the leader (one at a time).

    The :class:`~fastquartdb.engine.work.BackendEngine` of a daemon on a cluster.
    """

    def __init__(
        self,
        leader: Leader,
        *,
        busy_timeout: float,
        raw_sql: bool = True,
    ) -> None:
        self.leader = leader
        self.busy_timeout = busy_timeout
        self.raw_sql = raw_sql
        self.deadlines = _NoDeadlines()
        self.keys = RequestKeys()
        #: No change log on a cluster (README, "Change feeds").
        self.changes = None
        #: Batches whose leader was lost while they ran: run again on the next leader, or
        #: (lost at COMMIT) resolved as committed by their record.
        self.batches_lost = 0
        self._runner = OpRunner()
        self._in_txn = False
        # The batch's own record ([writer id, batch number]): what resolves a lost COMMIT.
        self._writer_id = f"fqdb-writer-{uuid.uuid4().hex[:16]}"
        self._batches = 0

    @property
    def in_transaction(self) -> bool:
        return self._in_txn

    def is_point_read(self, req: dict[str, Any]) -> bool:
        return False  # every request goes to the leader: none runs on the loop's thread

    def run_batch(self, requests: list[dict[str, Any]]) -> list[Outcome]:
        raise RuntimeError("a dqlite writer runs no batch inline (inline_reads must be None)")

    def _next_key(self) -> list[Any]:
        self._batches += 1
        return [self._writer_id, self._batches]

    # ------------------------------------------------------------ one request

    def _refusal(self, req: dict[str, Any]) -> FQDBError | None:
        op = op_of(req)
        if op == "execute" and not self.raw_sql:
            return ProgrammingError(
                "raw SQL is disabled on this server (fqdb-server --no-raw-sql); use the model API"
            )
        return unrecordable(req)

    async def _plain(self, session: Session, req: dict[str, Any]) -> Outcome:
        """Run one request; its failure is its outcome (a lost leader raises :class:`Lost`)."""
        refused = self._refusal(req)
        if refused is not None:
            return False, refused
        if session.in_transaction and op_of(req) == "execute":
            # In a savepoint, as on a file: a "... RETURNING" has made its changes before its
            # rows arrive, and one whose rows exceed the reply limit must not commit them.
            await session.control('SAVEPOINT "fqdb_raw"')
            try:
                result = await self._runner.run(session, req)
            except FQDBError as exc:
                await quietly(session, 'ROLLBACK TO "fqdb_raw"', 'RELEASE "fqdb_raw"')
                return False, exc
            await session.control('RELEASE "fqdb_raw"')
            return True, result
        try:
            return True, await self._runner.run(session, req)
        except FQDBError as exc:
            return False, exc

    async def _keyed(self, session: Session, req: dict[str, Any]) -> Outcome:
        """A request with a key: answered from its record, or run and recorded (the
        engine's ``_run_keyed``, over dqlite)."""
        keys = self.keys
        if op_of(req) == "resolve":
            try:
                return True, await drive(session, keys.resolve(req))
            except FQDBError as exc:
                return False, exc
        if "expires" in req:
            refused = keys.expired(req)
            if refused is not None:
                return refused
        auto = keys.first_send(req)
        if auto is None:
            try:
                recorded = keys.answer(req)
                if recorded is None and keys.needs_lookup(req):
                    recorded = await drive(session, keys.lookup(req))
            except FQDBError as exc:
                return False, exc
            if recorded is not None:
                return recorded
        outcome = await self._plain(session, req)
        if outcome[0] and worth_recording(req, outcome[1]):
            if auto is not None:
                keys.stage_first(auto, outcome[1])
            else:
                keys.stage(req, outcome[1])
        return outcome

    async def _still_open(self, session: Session) -> bool:
        """Whether the transaction survived a failed request: ``BEGIN`` is refused inside one."""
        if session.conn.closed:
            return False  # its clean-up failed and closed the connection: dqlite undid it all
        try:
            await session.control("BEGIN")
        except FQDBError:
            return True
        await session.control("ROLLBACK")  # the failure had ended it: end the probe's too
        return False

    # ------------------------------------------------------------ batches

    async def run_batch_async(self, requests: list[dict[str, Any]]) -> list[Outcome]:
        """Run ``requests`` as one dqlite transaction; one outcome per request, in order."""
        outcomes: list[Outcome] = [(False, NO_TXN_ERROR)] * len(requests)
        # Outside an interactive transaction begin/commit/rollback would end the shared batch.
        todo = [i for i, req in enumerate(requests) if op_of(req) not in TRANSACTION_OPS]
        if not todo:
            return outcomes
        if all(op_of(requests[i]) in READ_OPS for i in todo):
            for i in todo:
                outcomes[i] = await self._read(requests[i])
            return outcomes
        try:
            await self._group(requests, todo, outcomes)
        except BaseException:
            # A bug, not a request's failure: closing the connection ends the transaction
            # on the leader (else it would hold the cluster's write lock), as on a file.
            await self.leader.drop()
            self.keys.forget_schema()
            raise
        return outcomes

    async def _read(self, req: dict[str, Any]) -> Outcome:
        """A read outside any transaction (safe to run again), following leader changes."""
        deadline = time.monotonic() + self.leader.failover_timeout
        while True:
            try:
                conn = await self.leader.connection()
            except FQDBError as exc:
                return False, exc
            try:
                return await self._plain(Session(conn, in_transaction=False), req)
            except Lost as lost:
                await self._lost(lost)
                if time.monotonic() >= deadline:
                    return False, ConnectionLostError(f"no dqlite leader answered: {lost}")

    async def _lost(self, lost: Lost) -> None:
        log.info("dqlite leader lost (%s): finding the new one", lost)
        await self.leader.drop()
        self.leader.failovers += 1
        self._runner.tables.clear()
        self.keys.forget_schema()

    async def _begin(self, session: Session) -> None:
        """``BEGIN IMMEDIATE``, waiting up to ``busy_timeout`` for another writer of the cluster."""
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.005
        while True:
            try:
                await session.control("BEGIN IMMEDIATE")
                return
            except DatabaseBusyError:
                if time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _group(
        self, requests: list[dict[str, Any]], todo: list[int], outcomes: list[Outcome]
    ) -> None:
        """Run ``requests[i] for i in todo`` in one transaction on the leader, setting
        ``outcomes[i]``; again on the new leader if the leader is lost (see the module
        docstring), and in halves if COMMIT fails on a deferred constraint."""
        keys = self.keys
        failover_deadline: float | None = None
        restarts = 0
        while todo:
            marker = self._next_key()
            committing = False
            try:
                conn = await self.leader.connection()
            except FQDBError as exc:
                for i in todo:
                    outcomes[i] = (False, exc)
                return
            session = Session(conn, in_transaction=False)
            inner = Session(conn, in_transaction=True)
            keys.begin()
            results: list[tuple[int, Outcome]] = []
            try:
                try:
                    await self._begin(session)
                except FQDBError as exc:
                    for i in todo:
                        outcomes[i] = (False, exc)
                    return
                culprit: tuple[int, FQDBError] | None = None
                for i in todo:
                    req = requests[i]
                    run = self._keyed if "key" in req or "idempotency_key" in req else self._plain
                    outcome = await run(inner, req)
                    if not outcome[0] and not await self._still_open(inner):
                        culprit = (i, outcome[1])
                        break
                    results.append((i, outcome))
                if culprit is not None:
                    # The failure took the transaction with it: it fails, the others run again.
                    self._runner.tables.clear()
                    keys.forget_schema()
                    restarts += 1
                    todo = without_culprit(todo, outcomes, culprit[0], culprit[1], restarts)
                    continue
                if marker[1] % 64 == 0:  # no one asks about committed batches: prune them
                    keys.answer({"key": marker, "acked": marker[1]})
                keys.stage({"key": marker}, None)
                try:
                    await drive(inner, keys.flush())
                except KeyConflict:
                    await inner.control("ROLLBACK")
                    self._runner.tables.clear()
                    keys.forget_schema()
                    collided = keys.retry_after_conflict()
                    if collided is not None:
                        for i in todo:
                            outcomes[i] = (False, collided)
                        return
                    continue
                committing = True
                await session.commit()
            except Lost as lost:
                await self._lost(lost)
                self.batches_lost += 1
                if failover_deadline is None:
                    failover_deadline = time.monotonic() + self.leader.failover_timeout
                if committing and lost.committable:
                    committed = await self._committed(marker, failover_deadline)
                    if committed is None:
                        error = ConnectionLostError(
                            f"the dqlite leader was lost during the COMMIT of this request's "
                            f"batch ({lost}) and no leader could be asked within "
                            f"{self.leader.failover_timeout:g} s whether it committed"
                        )
                        for i in todo:
                            outcomes[i] = (False, error)
                        return
                    if committed:
                        keys.committed()
                        for i, outcome in results:
                            outcomes[i] = outcome
                        return
                if time.monotonic() >= failover_deadline:
                    error = ConnectionLostError(
                        f"no dqlite leader took this request within "
                        f"{self.leader.failover_timeout:g} s ({lost}); it was not applied"
                    )
                    for i in todo:
                        outcomes[i] = (False, error)
                    return
                continue  # nothing of it committed: the whole batch again, on the new leader
            except FQDBError as exc:
                # COMMIT (or the records) failed: nothing committed; the transaction may be open.
                await self._end_quietly(session)
                keys.forget_schema()
                self._runner.tables.clear()
                if len(todo) == 1 or not isinstance(exc, IntegrityError) or not committing:
                    for i in todo:
                        outcomes[i] = (False, exc)
                    return
                half = len(todo) // 2
                await self._group(requests, todo[:half], outcomes)
                await self._group(requests, todo[half:], outcomes)
                return
            keys.check_all = False
            keys.committed()
            for i, outcome in results:
                outcomes[i] = outcome
            return

    async def _committed(self, marker: list[Any], deadline: float) -> bool | None:
        """Whether the batch recorded under ``marker`` committed (asked of the next leader),
        or None if no leader answered by ``deadline``."""
        while True:
            try:
                conn = await self.leader.connection()
                found = await drive(
                    Session(conn, in_transaction=False), self.keys.lookup({"key": marker})
                )
                return found is not None
            except Lost as lost:
                await self._lost(lost)
            except FQDBError:
                pass
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.05)

    async def _end_quietly(self, session: Session) -> None:
        # Not open, or the connection broke (then the leader undid it): nothing to do.
        with contextlib.suppress(FQDBError, Lost):
            await session.control("ROLLBACK")

    # ------------------------------------------------------------ interactive transactions

    async def run_in_transaction_async(self, requests: list[dict[str, Any]]) -> list[Outcome]:
        """Requests of the interactive transaction (``begin`` opens it, ``commit`` or
        ``rollback`` ends it); each fails alone, a lost leader ends the transaction."""
        outcomes: list[Outcome] = []
        ended = False
        for req in requests:
            refused = after_rollback_by_error(req) if ended else None
            if refused is not None:
                outcomes.append(refused)
                continue
            was_open = self._in_txn
            try:
                outcomes.append((True, await self._in_txn_one(req)))
            except FQDBError as exc:
                outcomes.append((False, exc))
                ended = was_open and not self._in_txn and not isinstance(exc, ConnectionLostError)
        return outcomes

    async def _in_txn_one(self, req: dict[str, Any]) -> Any:
        op = op_of(req)
        raw_name = req.get("savepoint")
        name = None if raw_name is None else check_identifier(raw_name, "savepoint name")
        if op == "begin" and name is None:
            return await self._open_transaction()
        conn = self.leader.current
        if conn is None or not self._in_txn:
            self._in_txn = False
            if op == "rollback" and name is None:
                return None
            raise ConnectionLostError(
                "the dqlite leader was lost inside this transaction, which it rolled back"
            )
        session = Session(conn, in_transaction=True)
        try:
            if op == "commit" and name is None:
                return await self._commit(session, req)
            if op == "rollback" and name is None:
                self._in_txn = False
                self._runner.tables.clear()
                self.keys.forget_schema()
                await session.control("ROLLBACK")
                return None
            if name is not None:
                statements = {
                    "begin": [f"SAVEPOINT {quote(name)}"],
                    "commit": [f"RELEASE {quote(name)}"],
                    "rollback": [f"ROLLBACK TO {quote(name)}", f"RELEASE {quote(name)}"],
                }.get(op, [])
                for statement in statements:
                    await session.control(statement)
                return None
            ok, value = await self._plain(session, req)
            if ok:
                return value
            if not await self._still_open(session):
                self._in_txn = False
            raise value
        except Lost as lost:
            self._in_txn = False
            await self._lost(lost)
            if op == "rollback":
                return None
            raise ConnectionLostError(
                f"the dqlite leader was lost inside this transaction, which it rolled back ({lost})"
            ) from None

    async def _open_transaction(self) -> None:
        deadline = time.monotonic() + self.leader.failover_timeout
        while True:
            conn = await self.leader.connection()
            try:
                await self._begin(Session(conn, in_transaction=False))
                break
            except Lost as lost:
                await self._lost(lost)
                if time.monotonic() >= deadline:
                    raise ConnectionLostError(f"no dqlite leader took begin: {lost}") from None
        self._in_txn = True
        self.keys.begin()

    async def _commit(self, session: Session, req: dict[str, Any]) -> None:
        """Record the commit's key (the client's, else one of ours), then ``COMMIT``; a
        COMMIT lost with the leader is resolved by that record on the next leader."""
        keyed = {"key": req["key"]} if "key" in req else {"key": self._next_key()}
        if "expires" in req:
            keyed["expires"] = req["expires"]
        try:
            await drive(session, self.keys.record_commit(keyed))
            await session.commit()
        except Lost as lost:
            self._in_txn = False
            await self._lost(lost)
            if not lost.committable:
                raise ConnectionLostError(
                    f"the dqlite leader was lost before COMMIT ({lost}): the transaction was "
                    "rolled back; nothing of it was written"
                ) from None
            return await self._resolve_commit(keyed, lost)
        except FQDBError:
            self._in_txn = False
            self.keys.forget_schema()
            await self._end_quietly(session)  # a failed COMMIT leaves it open in SQLite
            raise
        finally:
            self._runner.tables.clear()
        self._in_txn = False

    async def _resolve_commit(self, keyed: dict[str, Any], lost: Lost) -> None:
        deadline = time.monotonic() + self.leader.failover_timeout
        while True:
            try:
                conn = await self.leader.connection()
                answer = await resolve(self.keys, Session(conn, False), {"key": keyed["key"]})
                break
            except Lost as again:
                await self._lost(again)
            except (DaemonUnavailableError, DatabaseBusyError):
                pass
            if time.monotonic() >= deadline:
                raise ConnectionLostError(
                    f"the dqlite leader was lost during COMMIT ({lost}) and no leader could "
                    "be asked whether the transaction committed within "
                    f"{self.leader.failover_timeout:g} s"
                )
            await asyncio.sleep(0.05)
        self.batches_lost += 1
        if answer.get("committed") is not True:
            raise ConnectionLostError(
                f"the dqlite leader was lost during COMMIT ({lost}): the transaction was "
                "rolled back (it never committed); nothing of it was written"
            )

    # ------------------------------------------------------------ the end

    async def close(self) -> None:
        """Roll back an open transaction and close the leader connection."""
        conn = self.leader.current
        if self._in_txn and conn is not None:
            await self._end_quietly(Session(conn, in_transaction=True))
        self._in_txn = False
        self.leader.closed = True
        await self.leader.drop()


class DqliteBackend:
    """The worker's :class:`~fastquartdb.engine.work.Backend` on a dqlite cluster.

    Batches run as tasks on the event loop (the worker runs one at a time); a
    cancelled waiter never cancels the batch, which ends truthfully.
    """

    def __init__(self, writer: DqliteWriter) -> None:
        self.engine = writer
        self.count_unrun: Callable[[], int] | None = None
        self._tasks: set[asyncio.Task[list[Outcome]]] = set()

    @classmethod
    async def open(cls, url: str, **options: Any) -> DqliteBackend:
        """Find the leader of the cluster ``url`` names and open the database on it.

        Raises:
            ValidationError: a malformed URL.
            DaemonUnavailableError: no leader answered within ``failover_timeout``.
        """
        nodes, database = parse_dqlite_url(url)
        leader_options = {
            k: options.pop(k)
            for k in ("connect_timeout", "failover_timeout", "read_timeout")
            if k in options
        }
        leader = Leader(nodes, database, **leader_options)
        # As on a file: a result is measured while it is read, not once it is in memory.
        leader.result_limit = options.pop("max_reply", None)
        await leader.connection()
        return cls(DqliteWriter(leader, **options))

    def run(
        self, requests: list[dict[str, Any]], interactive: bool = False
    ) -> asyncio.Future[list[Outcome]]:
        writer = self.engine
        coro = (
            writer.run_in_transaction_async(requests)
            if interactive
            else writer.run_batch_async(requests)
        )
        task = asyncio.get_running_loop().create_task(coro, name="fqdb-dqlite-batch")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        await self.engine.close()
