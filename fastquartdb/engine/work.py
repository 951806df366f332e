"""What travels through the worker: a request with its session, and the worker's counters.

A :class:`WorkItem` is made by whoever received the request (a daemon connection,
or embedded mode's transport, each a :class:`Session`) and handed to the
:class:`~fastquartdb.engine.worker.BatchWorker`, which owes it exactly one
``session.deliver`` call (see ``worker.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from .histogram import BATCH_SIZE_BOUNDS, Buckets

__all__ = ["Session", "WorkItem", "WorkerStats"]


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
