"""What travels through the worker: a request with its session, and the worker's counters.

A :class:`WorkItem` is made by whoever received the request (a daemon connection,
or embedded mode's transport, each a :class:`Session`) and handed to the
:class:`~fastquartdb.engine.worker.BatchWorker`, which owes it exactly one
``session.deliver`` call (see ``worker.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .histogram import BATCH_SIZE_BOUNDS, Buckets

if TYPE_CHECKING:
    from .changelog import ChangeLog
    from .requestkeys import RequestKeys

__all__ = ["Backend", "BackendEngine", "Outcome", "Session", "WorkItem", "WorkerStats"]

#: (True, result) or (False, exception) for one request.
Outcome = tuple[bool, Any]


class StatementDeadlines(Protocol):
    """What the worker asks of a backend's statement deadlines (see :mod:`.deadline`)."""

    def cancel(self, request: dict[str, Any]) -> None: ...

    def forget(self) -> None: ...

    def shutdown(self, grace: float) -> None: ...


class BackendEngine(Protocol):
    """What the worker asks of the engine behind a :class:`Backend`."""

    @property
    def deadlines(self) -> StatementDeadlines:
        """The statement deadlines of the requests it runs."""

    @property
    def in_transaction(self) -> bool:
        """Whether an interactive transaction is open on the writer."""

    @property
    def keys(self) -> RequestKeys:
        """The request keys' records (their settings and counters)."""

    @property
    def changes(self) -> ChangeLog | None:
        """The change log, or None where the backend keeps none (a dqlite cluster)."""

    def is_point_read(self, req: dict[str, Any]) -> bool:
        """Whether ``req`` is a bounded primary-key lookup (for ``inline_reads="point"``)."""

    def run_batch(self, requests: list[dict[str, Any]]) -> list[Outcome]:
        """Run a batch synchronously on the caller's thread (only for inline reads)."""


class Backend(Protocol):
    """Where the :class:`~.worker.BatchWorker` runs its batches, one at a time.

    :class:`~.runner.EngineThread` (a sqlite3 connection on its own thread: a file),
    or :class:`~.dqlite.writer.DqliteBackend` (a dqlite cluster's leader, driven on
    the event loop). ``run`` returns a future of one outcome per request, resolved
    once the batch has really ended (for a write batch: after COMMIT).
    """

    @property
    def engine(self) -> BackendEngine:
        """The engine that runs the batches."""

    #: Set by the worker: how many requests still wait (reported if the loop dies).
    count_unrun: Callable[[], int] | None

    def run(
        self, requests: list[dict[str, Any]], interactive: bool = False
    ) -> asyncio.Future[list[Outcome]]: ...

    async def close(self) -> None:
        """Roll back what is open and release the connection (after the worker stopped)."""


class Session(Protocol):
    """Where a request came from and how its reply goes back.

    ``closed`` turns true when the peer is gone (its socket closed); the
    worker then rolls back a transaction it holds and never begins one for it.
    A session may also say ``lost`` (a daemon connection whose peer went away):
    then its keyed requests not yet started are not run, since the client resends
    them, perhaps to another writer.
    """

    closed: bool
    lost: bool

    def deliver(self, item: WorkItem, ok: bool, value: Any) -> None:
        """Hand back the outcome of ``item``: its result, or the exception it failed with."""


class WorkItem:
    """One request on its way through the queue."""

    __slots__ = ("future", "received", "request", "session", "txn")

    def __init__(
        self,
        request: dict[str, Any],
        session: Session,
        txn: Any = None,
        future: asyncio.Future[Any] | None = None,
        received: float = 0.0,
    ) -> None:
        self.request = request
        self.session = session
        self.txn = txn
        self.future = future
        #: ``time.perf_counter()`` when the request arrived (the daemon's latency figures).
        self.received = received


class WorkerStats:
    """Counters the daemon's ``stats`` op reports."""

    __slots__ = (
        "batch_max",
        "batch_sizes",
        "batches",
        "errors",
        "requests",
        "transactions",
        "txn_timeouts",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.batches = 0
        self.batch_max = 0
        #: Requests per batch (the Prometheus histogram): counted per batch, not per request.
        self.batch_sizes = Buckets(BATCH_SIZE_BOUNDS)
        self.errors = 0
        self.transactions = 0
        self.txn_timeouts = 0
