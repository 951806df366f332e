"""Which queued items the worker takes next while a transaction is open.

Pure functions over :class:`~.work.WorkItem` queues, without the worker's state (and
the two rules every writer's batch keeps: :data:`NO_TXN_ERROR`, :data:`MAX_RESTARTS`):
what a request's op is, whether an item begins or ends a top-level (not
savepoint) transaction, and :func:`take_holder_requests`, which picks the holder's
next batch out of the parked and queued items, leaving everyone else's in order.
:class:`~.worker.BatchWorker` owns the queues and calls these.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ..protocol.errors import OperationalError, ValidationError
from .work import WorkItem

__all__ = [
    "MAX_RESTARTS",
    "NO_TXN_ERROR",
    "after_rollback_by_error",
    "ends_holder_batch",
    "is_top",
    "op_of",
    "take_holder_requests",
    "without_culprit",
]

#: What a ``begin``/``commit``/``rollback`` without ``txn`` gets, in a batch on any writer.
NO_TXN_ERROR = ValidationError(
    "begin/commit/rollback need 'txn': the id of the interactive transaction they belong to"
)
#: How often one batch may lose its transaction to single requests before all of it fails.
MAX_RESTARTS = 3


def after_rollback_by_error(request: dict[str, Any]) -> tuple[bool, Any] | None:
    """The outcome of a request of an interactive transaction that an error already rolled
    back, in the same hop: it fails (run, it would autocommit on its own), except the
    transaction's ``rollback``, which runs (None) and succeeds."""
    if op_of(request) == "rollback" and request.get("savepoint") is None:
        return None
    return False, OperationalError("transaction was rolled back by an error")


def without_culprit(
    todo: list[int], outcomes: list[Any], culprit: int, reason: Exception, restarts: int
) -> list[int]:
    """A request's failure took the batch's transaction with it: it fails with ``reason``,
    and the rest of ``todo`` is returned to run again in a new transaction. After
    :data:`MAX_RESTARTS` such losses (``restarts`` counts this one) the rest fail too,
    "rolled back with its batch", and the list returned is empty."""
    outcomes[culprit] = (False, reason)
    rest = [i for i in todo if i != culprit]
    if restarts > MAX_RESTARTS:
        sunk = OperationalError(f"rolled back with its batch: {reason}")
        for i in rest:
            outcomes[i] = (False, sunk)
        return []
    return rest


def op_of(request: dict[str, Any]) -> str:
    """The request's op, or "" when it has none that is a string."""
    op = request.get("op")
    return op if type(op) is str else ""


def is_top(item: WorkItem, op: str) -> bool:
    """``item`` is ``op`` (begin, commit, rollback) of a transaction, not of a savepoint."""
    request = item.request
    return request.get("op") == op and request.get("savepoint") is None


def ends_holder_batch(item: WorkItem, taken: int, max_batch: int) -> bool:
    """The holder's batch ends after ``item``: it is full, or ``item`` ends the transaction."""
    return taken >= max_batch or is_top(item, "commit") or is_top(item, "rollback")


def take_holder_requests(
    parked: deque[WorkItem], items: deque[WorkItem], session: Any, txn: Any, max_batch: int
) -> tuple[list[WorkItem], deque[WorkItem]]:
    """Take the holder's next batch from ``parked``, then ``items``; return it and the new parked.

    The holder's requests may sit among the parked ones (its begin came from
    there); everyone else's stay parked in their order, new ones join the end.
    ``parked`` is emptied; ``items`` loses what was taken or moved to the new parked.
    """
    mine: list[WorkItem] = []
    kept: deque[WorkItem] = deque()
    done = False
    while parked:
        item = parked.popleft()
        if not done and item.session is session and item.txn == txn:
            mine.append(item)
            done = ends_holder_batch(item, len(mine), max_batch)
        else:
            kept.append(item)
    while items and not done:
        item = items.popleft()
        if item.session is session and item.txn == txn:
            mine.append(item)
            done = ends_holder_batch(item, len(mine), max_batch)
        else:
            kept.append(item)
    return mine, kept
