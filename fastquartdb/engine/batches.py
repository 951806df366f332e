"""Which queued items the worker takes next while a transaction is open.

Pure functions over :class:`~.work.WorkItem` queues, without the worker's state:
what a request's op is, whether an item begins or ends a top-level (not
savepoint) transaction, and :func:`take_holder_requests`, which picks the holder's
next batch out of the parked and queued items, leaving everyone else's in order.
:class:`~.worker.BatchWorker` owns the queues and calls these.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .work import WorkItem

__all__ = ["ends_holder_batch", "is_top", "op_of", "take_holder_requests"]


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
