"""The request queue and the single DB worker: group commit and interactive transactions.

Used by the daemon (one session per socket connection) and by embedded mode
(one session per process), so both run requests the same way::

    submitters ──offer()/put()── route() ──> inline / now / bounded queue ──> worker task
                                                    │ drains what is waiting (≤ max_batch)
                                                    │ one hop to the sqlite thread per batch
                                                    └─> session.deliver(item, ok, value) per item

Who owns what: a :class:`WorkItem` belongs to the queue until the worker
takes it; from then on the worker owes it exactly one ``deliver`` call, even
if the batch fails, the session went away, or the worker is stopped.

Interactive transactions: a ``begin`` without ``savepoint`` makes its
``(session, txn)`` the *holder*. While a holder exists only its requests run;
everyone else's are parked, in order, and run first once it ends. A holder
that stays idle past ``idle_timeout`` or open past ``transaction_timeout`` is
rolled back; its next request gets :class:`TransactionTimeoutError`. A holder
whose session closes is rolled back at once.

Cancellation of the worker task (``asyncio.run`` cancels every task when its
main coroutine ends, so a program that never called ``close()`` ends this
way) is a request to stop, not a licence to drop work: the batch on the
thread is awaited and delivered truthfully (it runs to its end whatever we
do), everything already queued still runs, an open transaction is rolled
back, and then the task ends cancelled. Only a second cancellation fails
what is left, each item with an error. If the loop dies without even that
(closed with the task pending), the sqlite thread reports the count of what
never ran when it closes the connection (see ``runner.py``).

Deadlines: every request runs under its engine's statement deadline
(:mod:`.deadline`). When a session closes, the worker asks the engine to stop
that session's requests in the batch running now (their replies would go
nowhere); :meth:`BatchWorker.stop` gives what still runs ``stop_grace`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..protocol.errors import (
    FQDBError,
    OperationalError,
    ProgrammingError,
    TransactionTimeoutError,
)
from ..protocol.messages import READ_OPS, has_request_key
from .batches import is_top, op_of, take_holder_requests
from .config import EMBEDDED
from .work import Backend, Outcome, WorkerStats, WorkItem

__all__ = ["INLINE", "NOW", "QUEUE", "BatchWorker"]

log = logging.getLogger("fastquartdb.worker")

#: What :meth:`BatchWorker.route` answers.
INLINE, NOW, QUEUE = "inline", "now", "queue"


def _waker(waiter: asyncio.Future[None]) -> Callable[[], None]:
    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    return wake


def _thread_failed(exc: Exception, size: int) -> list[Outcome]:
    """The thread itself failed (or is closed): fail the batch, keep serving."""
    log.exception("database thread failed")
    error = OperationalError(f"internal error while running the batch: {exc}")
    return [(False, error)] * size


_ABANDONED = OperationalError(
    "not run: its connection closed before it started, and its client resends it with its "
    "request key"
)


class BatchWorker:
    """Owns the queue and the one task that runs batches on a :class:`~.work.Backend`
    (an :class:`~.runner.EngineThread` on a file, or a dqlite cluster's writer)."""

    def __init__(
        self,
        thread: Backend,
        *,
        max_batch: int = EMBEDDED.max_batch,
        max_queue: int = EMBEDDED.max_queue,
        transaction_timeout: float = EMBEDDED.transaction_timeout,
        idle_timeout: float | None = None,
        inline_reads: str | None = None,
        stop_grace: float | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be positive")
        self.thread = thread
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.transaction_timeout = transaction_timeout
        self.idle_timeout = idle_timeout if idle_timeout is not None else transaction_timeout
        if inline_reads not in (None, "all", "point"):
            raise ValueError("inline_reads must be None, 'all' or 'point'")
        #: Reads run on the loop's own thread when nothing else is queued or running:
        #: "all" in the daemon (its loop has no other work), "point" (primary-key lookups
        #: only, bounded cost) in embedded mode, where the loop is the application's.
        self.inline_reads = inline_reads
        # True while a batch is being run (by the worker task, or by a caller in _run_now):
        # nothing may then overtake it, and the sqlite thread is not free.
        self._busy = False
        self.stats = WorkerStats()
        self._items: deque[WorkItem] = deque()
        # Requests of others that arrived while a transaction held the writer, in order.
        self._parked: deque[WorkItem] = deque()
        self._holder: tuple[Any, Any] | None = None
        self._holder_deadline = 0.0
        self._holder_active = 0.0
        # Transactions rolled back behind their owner's back -> why; told on their next request.
        self._dead_txns: dict[tuple[Any, Any], FQDBError] = {}
        self._wakeup: asyncio.Future[None] | None = None
        self._space_waiters: deque[Callable[[], None]] = deque()
        self._stopping = False
        self._cancelled = False
        self._task: asyncio.Task[None] | None = None
        thread.count_unrun = lambda: self.depth
        #: Seconds a statement may still run once :meth:`stop` is called (None: its deadline).
        self.stop_grace = stop_grace
        # The batch on the sqlite thread now: a closed session's requests in it are stopped.
        self._inflight: list[WorkItem] = []

    # ------------------------------------------------------------ submitting

    def start(self) -> None:
        """Start the worker task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="fqdb-worker")

    @property
    def depth(self) -> int:
        """Requests waiting to run (queued and parked)."""
        return len(self._items) + len(self._parked)

    @property
    def holder(self) -> tuple[Any, Any] | None:
        """``(session, txn)`` of the open interactive transaction, if any."""
        return self._holder

    def _wake(self) -> None:
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # Where a request runs is decided here, once, for the daemon and embedded mode alike:
    #
    #   route(item)   nothing queued, running or holding the writer, not in a transaction?
    #     no  -> QUEUE   behind what waits (order of arrival is kept)
    #     yes -> INLINE  a read the inline_reads setting allows: on the loop's thread, now
    #         -> NOW     anything else: a batch of one in the caller's task (async callers);
    #                    a sync caller (offer) queues it, and the worker task takes it next
    #
    # Reads outside a transaction mostly never get here: the client's ReadRouter runs them
    # on local readers. What reaches the worker is writes, transactions, and reads of
    # processes without local readers (readers=0, --no-local-reads, daemon-side tools).

    def route(self, item: WorkItem) -> str:
        """``"inline"``, ``"now"`` or ``"queue"``: where ``item`` runs (see above)."""
        if (
            self._busy
            or self._holder is not None
            or self._items
            or self._parked
            or self._stopping
            or item.txn is not None
        ):
            return QUEUE
        mode = self.inline_reads
        if mode is not None and (
            op_of(item.request) in READ_OPS
            if mode == "all"
            else self.thread.engine.is_point_read(item.request)
        ):
            return INLINE
        return NOW

    def offer(self, item: WorkItem) -> bool:
        """Run or queue ``item`` without waiting; False when the queue is full (the caller
        stops reading). The daemon's door: it cannot await in ``data_received``.

        Raises:
            OperationalError: the worker is shutting down.
        """
        if self._stopping:
            raise OperationalError("the database is shutting down; request not run")
        # Busy (a batch runs: under load, nearly always) or others waiting means QUEUE:
        # no need to ask route() once per request.
        if not self._busy and not self._items and self.route(item) == INLINE:
            self._run_inline(item)
            return True
        return self._enqueue(item)

    async def put(self, item: WorkItem) -> None:
        """Run ``item`` where :meth:`route` says, waiting while the queue is full.
        Embedded mode's door.

        Raises:
            OperationalError: the worker is shutting down.
        """
        if self._stopping:
            raise OperationalError("the database is shutting down; request not run")
        where = self.route(item)
        if where == INLINE:
            self._run_inline(item)
            return
        if where == NOW:
            await self._run_now(item)
            return
        while not self._enqueue(item):
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._space_waiters.append(_waker(waiter))
            await waiter
            if self._stopping:
                raise OperationalError("the database is shutting down; request not run")

    def _enqueue(self, item: WorkItem) -> bool:
        # Parked requests count: a held transaction must not let the queue grow without end.
        if len(self._items) + len(self._parked) >= self.max_queue and not self._room_for_holder(
            item
        ):
            return False
        self._items.append(item)
        if self._wakeup is not None:  # the worker task waits for work (else it is running)
            self._wake()
        return True

    def _room_for_holder(self, item: WorkItem) -> bool:
        """Past ``max_queue``: still take the transaction holder's requests.

        Its transaction's own requests always (else it could never end, and everyone
        waits for its timeout); other requests of its session (its process's other
        tasks, which may sit before them on the same connection) up to twice the bound.
        """
        holder = self._holder
        if holder is None or holder[0] is not item.session:
            return False
        return holder[1] == item.txn or len(self._items) + len(self._parked) < 2 * self.max_queue

    def _run_inline(self, item: WorkItem) -> None:
        """Run ``item`` on the loop's thread, now (only when :meth:`route` says INLINE).

        Nothing is queued or running, so no earlier request can be overtaken and the
        sqlite thread is idle: using the connection from this thread is safe, and it
        saves the two thread hops.
        """
        stats = self.stats
        stats.batches += 1
        stats.requests += 1
        stats.batch_sizes.add(1)
        ((ok, value),) = self.thread.engine.run_batch([item.request])
        self._deliver(item, ok, value)

    async def _run_now(self, item: WorkItem) -> None:
        """Run ``item`` as a batch of one in the caller's task, then deliver it.

        For an idle worker (:meth:`route` says NOW): it saves the two task switches of
        handing the request to the worker task and back. Requests that arrive
        meanwhile queue up, and the worker task takes them when this one is done.
        If the caller is cancelled the request still completes on the sqlite
        thread; only its reply is lost.
        """
        self._busy = True
        stats = self.stats
        stats.batches += 1
        stats.requests += 1
        stats.batch_sizes.add(1)
        try:
            job = self._submit([item.request], [item], False)
        except Exception as exc:
            self._idle_again()
            ((ok, value),) = _thread_failed(exc, 1)
            self._deliver(item, ok, value)
            return
        try:
            ((ok, value),) = await self._outcomes(job, 1)
        except asyncio.CancelledError:
            # The request still runs on the thread; until it ends the connection is
            # not free (no inline read, no other batch may start).
            job.add_done_callback(self._idle_again)
            raise
        self._idle_again()
        self._deliver(item, ok, value)

    def _idle_again(self, _job: object = None) -> None:
        self._busy = False
        self._wake()

    def _submit(
        self, requests: list[dict[str, Any]], items: list[WorkItem], interactive: bool
    ) -> asyncio.Future[list[Outcome]]:
        """Hand ``requests`` to the backend as one batch (of an interactive transaction, if
        ``interactive``); ``items`` are in flight until it ends."""
        job = self.thread.run(requests, interactive)
        self._inflight = items
        job.add_done_callback(self._batch_over)
        return job

    def _batch_over(self, _job: object = None) -> None:
        # Only now, with the batch over on the thread, may the ids of its requests be reused.
        self._inflight = []
        self.thread.engine.deadlines.forget()

    def adopt(self, items: list[WorkItem]) -> None:
        """Queue ``items`` past the size limit (shutdown: requests already received must run)."""
        self._items.extend(items)
        self._wake()

    def when_space(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once when the queue has room again."""
        self._space_waiters.append(callback)

    def _release_space(self) -> None:
        while self._space_waiters and len(self._items) + len(self._parked) < self.max_queue:
            self._space_waiters.popleft()()

    def session_closed(self, session: Any) -> None:
        """Forget ``session`` (already marked closed); roll back its open transaction at once.

        Its requests running now are stopped: nobody waits for their replies.
        """
        for key in [k for k in self._dead_txns if k[0] is session]:
            del self._dead_txns[key]
        deadlines = self.thread.engine.deadlines
        for item in self._inflight:
            if item.session is session:
                deadlines.cancel(item.request)
        self._wake()

    async def stop(self) -> None:
        """Run everything already queued, roll back an open transaction, end the task."""
        self._stopping = True
        if self.stop_grace is not None:
            self.thread.engine.deadlines.shutdown(self.stop_grace)
        self._wake()
        if self._task is not None:
            # wait(), not await: the task may have ended cancelled (see the module docstring),
            # which is not this caller's cancellation.
            await asyncio.wait({self._task})

    # ------------------------------------------------------------ the loop

    async def _wait(self, timeout: float | None) -> None:
        self._wakeup = asyncio.get_running_loop().create_future()
        try:
            if timeout is None:
                await self._wakeup
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup, max(timeout, 0.0))
        finally:
            self._wakeup = None

    async def _run(self) -> None:
        while True:
            try:
                if not await self._step():
                    break
            except asyncio.CancelledError:
                if self._cancelled:  # cancelled twice: give up on what is left, say so
                    self._fail_all(
                        OperationalError("the database worker was cancelled; request not run")
                    )
                    raise
                # Stop as stop() would: run what is queued, then end (cancelled).
                self._cancelled = self._stopping = True
        if self._cancelled:
            raise asyncio.CancelledError

    async def _step(self) -> bool:
        """Serve one batch, or wait for work; False once stopping with nothing left."""
        if self._busy:  # a caller is running a request directly (_run_now)
            await self._wait(None)
            return True
        if self._holder is not None:
            serve = self._serve_holder
        elif self._parked or self._items:
            serve = self._serve_batch
        elif self._stopping:
            return False
        else:
            await self._wait(None)
            return True
        self._busy = True
        try:
            await serve()
        finally:
            self._busy = False
        return True

    def _fail_all(self, error: FQDBError) -> None:
        for queue in (self._parked, self._items):
            while queue:
                item = queue.popleft()
                item.session.deliver(item, False, error)

    def _deliver(self, item: WorkItem, ok: bool, value: Any) -> None:
        if not ok:
            self.stats.errors += 1
        item.session.deliver(item, ok, value)

    def _reject_stray(self, item: WorkItem) -> None:
        # A request naming a transaction that is not the holder: it ended or never began.
        error = self._dead_txns.pop((item.session, item.txn), None)
        if error is None:
            error = ProgrammingError(
                f"transaction {item.txn!r} is not open (it was committed or rolled back)"
            )
        elif not is_top(item, "rollback"):
            self._dead_txns[(item.session, item.txn)] = error
        if is_top(item, "rollback"):
            # Rolling back what is already rolled back is what the caller wanted.
            self._deliver(item, True, None)
        else:
            self._deliver(item, False, error)

    async def _serve_batch(self) -> None:
        batch: list[WorkItem] = []
        begin: WorkItem | None = None
        limit = self.max_batch
        for queue in (self._parked, self._items):
            while queue and len(batch) < limit:
                item = queue[0]
                if item.txn is not None:
                    if is_top(item, "begin"):
                        if not batch:
                            begin = queue.popleft()
                        break
                    queue.popleft()
                    self._reject_stray(item)
                    continue
                queue.popleft()
                if item.session.lost and has_request_key(item.request):
                    # Its client lost the connection and resends it with its key, maybe to
                    # another writer: this copy must not run too (see requestkeys.py).
                    self._deliver(item, False, _ABANDONED)
                    continue
                batch.append(item)
            if begin is not None or (queue and len(batch) < limit):
                break
        self._release_space()
        if batch:
            await self._execute(batch, False)
        elif begin is not None:
            await self._begin(begin)

    async def _hop(
        self,
        requests: list[dict[str, Any]],
        items: list[WorkItem] | None = None,
        interactive: bool = False,
    ) -> list[Outcome]:
        """Run a batch on the thread from the worker task and return its outcomes.

        If the worker task is cancelled meanwhile, the batch still runs to its end on
        the thread: wait for it, so its items get their true outcome, and stop after
        what is queued (see the module docstring).
        """
        try:
            job = self._submit(requests, items or [], interactive)
        except Exception as exc:
            return _thread_failed(exc, len(requests))
        try:
            return await self._outcomes(job, len(requests))
        except asyncio.CancelledError:
            if self._cancelled:
                raise
            self._cancelled = self._stopping = True
            return await self._outcomes(job, len(requests))

    @staticmethod
    async def _outcomes(job: asyncio.Future[list[Outcome]], size: int) -> list[Outcome]:
        try:
            # Shielded: cancelling the waiter must not cancel the job's future, which
            # the thread resolves once the batch has really run.
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return _thread_failed(exc, size)

    async def _execute(self, batch: list[WorkItem], interactive: bool) -> None:
        stats = self.stats
        stats.batches += 1
        stats.requests += len(batch)
        stats.batch_sizes.add(len(batch))
        if len(batch) > stats.batch_max:
            stats.batch_max = len(batch)
        requests = [item.request for item in batch]
        try:
            outcomes = await self._hop(requests, batch, interactive)
        except asyncio.CancelledError:  # cancelled twice: the batch runs on, unobserved
            error = OperationalError(
                "the database worker was cancelled while this request ran; "
                "whether it committed is unknown"
            )
            for item in batch:
                item.session.deliver(item, False, error)
            raise
        # Replies only now: for a write batch, COMMIT has returned. (What _deliver does,
        # without a call per request.)
        for item, (ok, value) in zip(batch, outcomes):
            if not ok:
                stats.errors += 1
            item.session.deliver(item, ok, value)

    async def _begin(self, item: WorkItem) -> None:
        if item.session.closed:
            item.session.deliver(item, False, OperationalError("session closed"))
            return
        self.stats.requests += 1
        ((ok, value),) = await self._hop([item.request], [item], True)
        if ok and self.thread.engine.in_transaction:
            self.stats.transactions += 1
            self._holder = (item.session, item.txn)
            now = time.monotonic()
            self._holder_deadline = now + self.transaction_timeout
            self._holder_active = now
        self._deliver(item, ok, value)

    async def _end_holder(self, error: FQDBError | None) -> None:
        """Close the holder's transaction; with ``error``, roll back and remember why."""
        holder = self._holder
        assert holder is not None
        if error is not None:
            await self._hop([{"op": "rollback"}], None, True)
            if not holder[0].closed:
                self._dead_txns[holder] = error
            log.warning("%s", error)
        self._holder = None

    async def _serve_holder(self) -> None:
        holder = self._holder
        assert holder is not None
        session, txn = holder
        if session.closed:
            await self._end_holder(OperationalError("client disconnected inside a transaction"))
            return
        mine, self._parked = take_holder_requests(
            self._parked, self._items, session, txn, self.max_batch
        )
        self._release_space()
        now = time.monotonic()
        if not mine:
            if self._stopping:
                await self._end_holder(
                    OperationalError("the database shut down inside a transaction")
                )
                return
            if now >= self._holder_deadline:
                self.stats.txn_timeouts += 1
                await self._end_holder(
                    TransactionTimeoutError(
                        f"transaction rolled back: open longer than {self.transaction_timeout:g} s"
                    )
                )
                return
            if now - self._holder_active >= self.idle_timeout:
                self.stats.txn_timeouts += 1
                await self._end_holder(
                    TransactionTimeoutError(
                        f"transaction rolled back: idle longer than {self.idle_timeout:g} s"
                    )
                )
                return
            await self._wait(
                min(self._holder_deadline, self._holder_active + self.idle_timeout) - now
            )
            return
        self._holder_active = now
        await self._execute(mine, True)
        self._holder_active = time.monotonic()
        if not self.thread.engine.in_transaction:
            # Committed, rolled back, or lost to an error SQLite rolls back on its own.
            last = mine[-1]
            ended = is_top(last, "commit") or is_top(last, "rollback")
            await self._end_holder(
                None if ended else OperationalError("transaction was rolled back by an error")
            )
