"""Change feeds, the consumer's side: ``async for change in db.changes(...)``.

A consumer reads the change log (``_fqdb_changes``, see ``engine/changelog.py``)
itself, with the ``changes`` read op — on this process's local readers, like any
read — from its cursor on, oldest first. When it has read everything it waits to
be woken, then reads again. Because every read starts from the cursor, the
backlog and the live changes join with no gap and no duplicate, and a wake-up
that is late, doubled or lost costs latency, never a change.

Who wakes it (:class:`ChangeWatch`, one per manager, running while any consumer
does):

* the writer, pushed: the daemon sends a ``changes`` event on every connection
  that sent ``subscribe``, after each commit that logged changes; an embedded
  writer in this process calls back after its own commits
  (:meth:`Transport.subscribe`);
* a poll of ``PRAGMA data_version`` on a read-only connection of this process,
  every ``poll_interval`` seconds (default 20 ms): it changes when any other
  connection, in any process, commits. That is what carries changes between
  embedded processes; with a daemon it is the safety net under the pushes;
* a timer: with no file to poll (dqlite, ``:memory:``) the consumer reads again
  every ``poll_interval`` seconds.

A consumer that does not keep up costs nothing but its own lag: nothing is
buffered for it anywhere (the daemon coalesces its events into the latest tip),
and it reads what it missed from the log when it comes back, unless retention
pruned it meanwhile (:class:`~fastquartdb.ChangesExpiredError`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..protocol.errors import FQDBError, ValidationError, brief

__all__ = ["DEFAULT_POLL_INTERVAL", "Change", "ChangeWatch", "follow_changes"]

log = logging.getLogger("fastquartdb.client")

#: Seconds between two looks at ``PRAGMA data_version`` while a consumer waits.
DEFAULT_POLL_INTERVAL = 0.02
#: Seconds a consumer waits for a wake-up before it reads again anyway.
SAFETY_INTERVAL = 1.0
#: Changes one read asks for.
BATCH = 500


@dataclass(frozen=True)
class Change:
    """One committed change of a captured table.

    Attributes:
        seq: its place in the change log: increasing in commit order, never reused;
            the cursor to resume from (``after=change.seq``).
        table: the table changed.
        op: ``"insert"``, ``"update"`` or ``"delete"``.
        pk: the row's primary key (a list for a composite key; the rowid without one).
        row: the row's values after the change (None for a delete).
        old: the values before an update or delete, if the table logs them
            (``__changes__ = {"old": True}``), else None.
    """

    seq: int
    table: str
    op: str
    pk: Any
    row: dict[str, Any] | None
    old: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        """The change as a JSON-ready map (bytes as ``{"$hex": ...}``)."""
        return {
            "seq": self.seq,
            "table": self.table,
            "op": self.op,
            "pk": _jsonable(self.pk),
            "row": _jsonable(self.row),
            "old": _jsonable(self.old),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$hex": value.hex()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _bytes_back(value: Any) -> Any:
    if type(value) is dict and len(value) == 1 and "$hex" in value:
        return bytes.fromhex(value["$hex"])
    return value


def _values(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    decoded = json.loads(text)
    return {k: _bytes_back(v) for k, v in decoded.items()}


def change_from_row(row: list[Any]) -> Change:
    """A :class:`Change` from one row of a ``changes`` result."""
    seq, table, op, pk, new, old = row
    key = [_bytes_back(v) for v in json.loads(pk)] if pk is not None else []
    return Change(int(seq), table, op, key[0] if len(key) == 1 else key, _values(new), _values(old))


class Subscriber(Protocol):
    """What the watch needs of a transport: a way to be called back after commits."""

    async def subscribe(self, callback: Callable[[int], None]) -> bool:
        """Call ``callback(tip)`` after commits that logged changes; False if it cannot."""


class ChangeWatch:
    """Wakes this process's change consumers when the change log may have grown."""

    def __init__(self, transport: Subscriber, path: str | None, poll_interval: float) -> None:
        self.transport = transport
        self.path = path
        self.poll_interval = poll_interval
        #: Wake-ups by kind, for tests and stats.
        self.pushed = 0
        self.polled = 0
        # The futures of the consumers waiting now (one each: a timeout wakes only its own).
        self._waiters: set[asyncio.Future[None]] = set()
        # Reads shared by consumers that ask the same (same tables, filter, cursor: a page
        # of SSE clients) between two wake-ups; a read begun before a wake-up is not kept.
        self._shared: dict[tuple[Any, ...], tuple[int, list[Change]]] = {}
        self._generation = 0
        #: Reads made, and reads answered from another consumer's identical read.
        self.reads = 0
        self.shared_reads = 0
        self._consumers = 0
        self._task: asyncio.Task[None] | None = None
        self._pushing = False

    @property
    def polls_file(self) -> bool:
        """Whether commits of other processes are seen by polling ``data_version``."""
        return self.path is not None

    def ticket(self) -> asyncio.Future[None]:
        """A future the next wake-up resolves: take it *before* reading, then :meth:`wait`
        on it, so a commit between the read and the wait is not missed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(future)
        return future

    async def wait(self, ticket: asyncio.Future[None]) -> None:
        """Wait for ``ticket`` to be woken, or :meth:`max_wait` seconds."""
        if not ticket.done():
            # A timer rather than wait_for: no task per wait (100 consumers x every commit).
            timer = asyncio.get_running_loop().call_later(self.max_wait(), _wake_one, ticket)
            try:
                await ticket
            finally:
                timer.cancel()
        self._waiters.discard(ticket)

    def drop(self, ticket: asyncio.Future[None]) -> None:
        """Forget a ticket that will not be waited on."""
        self._waiters.discard(ticket)
        ticket.cancel()

    async def read(
        self, read: Callable[[dict[str, Any]], Awaitable[Any]], request: dict[str, Any]
    ) -> tuple[int, list[Change]]:
        """``(tip, changes)`` for ``request``: read, or shared with a consumer that made the
        very same read since the last wake-up (its answer is as fresh as this one's)."""
        where = request.get("where")
        key = (
            request.get("after"),
            request.get("limit"),
            tuple(request.get("tables") or ()),
            None if where is None else json.dumps(where, default=str),
        )
        hit = self._shared.get(key)
        if hit is not None:
            self.shared_reads += 1
            return hit
        generation = self._generation
        result = await read(request)
        self.reads += 1
        entry = (int(result["tip"]), [change_from_row(row) for row in result["rows"]])
        if generation == self._generation:
            if len(self._shared) >= 256:
                self._shared.clear()
            self._shared[key] = entry
        return entry

    def wake(self, _tip: object = None) -> None:
        """Wake every waiting consumer (they read from their own cursors)."""
        self._generation += 1
        self._shared.clear()
        waiters, self._waiters = self._waiters, set()
        for future in waiters:
            _wake_one(future)

    def _on_push(self, tip: int) -> None:
        self.pushed += 1
        self.wake(tip)

    def join(self) -> None:
        """A consumer starts: run the watch while any does."""
        self._consumers += 1
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    def leave(self) -> None:
        """A consumer ended."""
        self._consumers -= 1
        if self._consumers <= 0 and self._task is not None:
            self._task.cancel()
            self._task = None

    async def close(self) -> None:
        """Stop the watch (the manager closes)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.wake()

    def max_wait(self) -> float:
        """Seconds a consumer waits before it reads again without a wake-up."""
        return SAFETY_INTERVAL if self.polls_file or self._pushing else self.poll_interval

    async def _run(self) -> None:
        conn = self._open()
        last: int | None = None
        try:
            while True:
                try:
                    # Cheap when already subscribed; after a reconnection or a switch to
                    # embedded mode it subscribes on the new transport.
                    was = self._pushing
                    self._pushing = await self.transport.subscribe(self._on_push)
                    if self._pushing and not was:
                        # A commit made before the subscription took effect sent no push:
                        # one read now sees it instead of the next commit's (or the timer).
                        self.wake()
                except (FQDBError, OSError) as exc:
                    self._pushing = False
                    log.debug("change feed: no pushes for now (%s)", exc)
                if conn is not None:
                    try:
                        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
                    except sqlite3.Error as exc:
                        log.debug("change feed: data_version poll failed: %s", exc)
                    else:
                        if last is not None and version != last:
                            self.polled += 1
                            self.wake()
                        last = version
                await asyncio.sleep(self.poll_interval)
        finally:
            if conn is not None:
                conn.close()

    def _open(self) -> sqlite3.Connection | None:
        if self.path is None:
            return None
        try:
            # Never writes, so its data_version moves with every other connection's commit.
            return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            log.warning("change feed: cannot poll %s (%s); relying on pushes", self.path, exc)
            self.path = None
            return None


def _wake_one(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def check_after(after: object) -> int | str | None:
    """``after`` if it is a cursor: a seq (int >= 0, or its decimal text), "now" or None."""
    if isinstance(after, str) and after.isdigit():
        return int(after)
    if after is None or after == "now" or (type(after) is int and after >= 0):
        return after
    raise ValidationError(
        f"after must be a change's seq (an integer >= 0), 'now' or None, got {brief(after)}"
    )


async def follow_changes(
    read: Callable[[dict[str, Any]], Awaitable[Any]],
    watch: ChangeWatch,
    request: dict[str, Any],
    after: int | str | None,
    convert: Callable[[Change], Change] | None = None,
) -> AsyncGenerator[Change, None]:
    """Yield the changes ``request`` selects after ``after``, then live ones, forever.

    ``read`` runs one ``changes`` request (the manager's router); ``convert`` turns
    a change's values into the model's Python types.

    Raises:
        ChangesExpiredError: the cursor fell off the retained log.
    """
    watch.join()
    ticket: asyncio.Future[None] | None = None
    try:
        cursor = after
        if cursor == "now":
            cursor = int((await read({**request, "after": "now"}))["tip"])
        while True:
            ticket = watch.ticket()
            tip, changes = await watch.read(read, {**request, "after": cursor, "limit": BATCH})
            for change in changes:
                cursor = change.seq
                yield convert(change) if convert is not None else change
            if len(changes) == BATCH:
                watch.drop(ticket)  # more to read at once: no wait
                continue
            # Every change up to the tip read before the rows was in their snapshot: a
            # filtered feed moves past the ones that did not match.
            if cursor is None or tip > int(cursor):
                cursor = tip
            await watch.wait(ticket)
    finally:
        watch.leave()
        if ticket is not None:
            watch.drop(ticket)
