"""Where a request runs: the one decision between this process's readers and the writer.

:meth:`ReadRouter.route` is that decision, for every mode (daemon, embedded,
after a failover)::

    in an interactive transaction (txn)        -> writer   (its reads must see its own writes)
    after close()                              -> writer   (which raises InterfaceError)
    write, DDL, ping, hello, stats             -> writer
    no local readers (readers=0, no file, ...) -> writer   (one log line said why at start)
    fetch / count / aggregate by primary key   -> inline   (on the event loop: cheaper than a hop)
    other fetch / count / aggregate            -> pool     (a reader thread)
    raw fetch_all / fetch_one                  -> pool; a statement that turns out to write
                                                  is refused there and sent to the writer

Read-your-writes holds because the writer replies only after COMMIT, and a local
read opens its snapshot when it starts: a read that starts after an
acknowledgement sees that write, in this process and in every other. Nothing is
cached between reads but table shapes: after this process's writer ran DDL, raw
SQL or a commit, the next reads check ``PRAGMA schema_version`` first; changes
made by other processes are noticed within ``SCHEMA_CHECK_INTERVAL`` (50 ms), and
at once by a read that names a table or column the cache does not know yet (the
engine then looks again and retries).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from ..engine import ReaderPool
from ..protocol import decode_body, encode_body, error_code, error_from_code
from ..protocol.errors import FQDBError, OperationalError, ReadOnlyError
from .transports import Transport, check_wire_size, wire_check_default

__all__ = ["DEFAULT_READERS", "ReadRouter"]

log = logging.getLogger("fastquartdb.client")

#: Reader threads per process when ``init_engine`` is not told (``readers=``).
DEFAULT_READERS = 2
#: Seconds between the reports of this process's read counts to the daemon (for ``fqdb stats``).
REPORT_INTERVAL = 1.0

#: Inline reads in a row after which the caller yields to the event loop once.
INLINE_STREAK = 16

_MODEL_READS = frozenset({"fetch", "count", "aggregate", "changes"})
# Writer ops after which the schema may differ: local readers then look at once.
_SCHEMA_OPS = frozenset({"ensure_table", "execute", "commit"})
WRITER, INLINE, POOL = "writer", "inline", "pool"


class ReadRouter:
    """Sends each request where :meth:`route` says and counts where reads ran."""

    def __init__(self, writer: Transport, pool: ReaderPool | None, why_not: str = "") -> None:
        self.writer = writer
        self.pool = pool
        #: Why reads go to the writer ("" while local reads are on).
        self.why_not = why_not
        self.reads_local = 0
        self.reads_inline = 0
        self.reads_writer = 0
        self._wire_check = wire_check_default()
        self._inline_streak = 0
        self._report_handle: asyncio.TimerHandle | None = None
        self._report_task: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, writer: Transport, *, readers: int, busy_timeout: float) -> ReadRouter:
        """Open ``readers`` reader threads on the writer's file, or say (once) why not."""
        if readers == 0:
            return cls._off(writer, "readers=0")
        source = writer.local_reads()
        if source.path is None:
            return cls._off(writer, source.why_not)
        try:
            pool = ReaderPool.open(
                source.path, threads=readers, raw_sql=source.raw_sql, busy_timeout=busy_timeout
            )
        except OperationalError as exc:
            return cls._off(writer, str(exc), warn=True)
        return cls(writer, pool)

    @classmethod
    def _off(cls, writer: Transport, why: str, *, warn: bool = False) -> ReadRouter:
        log.log(
            logging.WARNING if warn else logging.INFO,
            "local reads off (%s): reads go to the writer",
            why,
        )
        return cls(writer, None, why)

    # ------------------------------------------------------------ the decision

    def route(self, request: dict[str, Any], raw_read: bool = False) -> str:
        """``"writer"``, ``"inline"`` or ``"pool"``: where ``request`` runs.

        Args:
            raw_read: the request is raw SQL the caller reads rows from (``fetch_all``).
        """
        pool = self.pool
        # A closed pool: the writer (closed too) says so in the words every transport uses.
        if pool is None or pool.closed or request.get("txn") is not None:
            return WRITER
        op = request.get("op")
        if op == "changes":
            # A change feed's read: rows by seq (a rowid range), bounded by its limit; every
            # consumer reads after each commit, so a thread hop each would cost more than it.
            return INLINE
        if op in _MODEL_READS:
            return INLINE if pool.is_point_read(request) else POOL
        if raw_read and op == "execute":
            return POOL
        return WRITER

    def request(self, request: dict[str, Any], raw_read: bool = False) -> Awaitable[Any]:
        """Run ``request`` where :meth:`route` says; awaits its result, or the error it failed
        with."""
        op = request.get("op")
        if not raw_read and op not in _MODEL_READS and op not in _SCHEMA_OPS:
            # A write route() would send to the writer anyway, with nothing to count or to
            # do after it: the writer's own awaitable, without a coroutine frame per write.
            return self.writer.request(request)
        return self._request(request, raw_read)

    async def _request(self, request: dict[str, Any], raw_read: bool) -> Any:
        where = self.route(request, raw_read)
        if where == WRITER:
            op = request.get("op")
            if raw_read or op in _MODEL_READS:
                self.reads_writer += 1
            try:
                return await self.writer.request(request)
            finally:
                if op in _SCHEMA_OPS:
                    self.schema_may_have_changed()
        pool = self.pool
        assert pool is not None
        # What a daemon could not carry is refused here too: the same limits in every mode
        # (a point read's one key is within them: is_point_read takes no long string).
        if where == POOL or request["op"] != "fetch":
            check_wire_size(request)
        if self._wire_check:
            request = decode_body(encode_body(request))
        if where == INLINE:
            self.reads_inline += 1
            ok, value = pool.run_here(request)
            self._inline_streak += 1
            if self._inline_streak >= INLINE_STREAK:
                # An inline read never awaits: let the loop run other tasks and I/O now and then.
                self._inline_streak = 0
                await asyncio.sleep(0)
        else:
            self._inline_streak = 0
            ok, value = await pool.submit(request)
            if not ok and raw_read and isinstance(value, ReadOnlyError):
                # Raw SQL that writes (INSERT ... RETURNING, a PRAGMA that sets): the writer's.
                self.reads_writer += 1
                try:
                    return await self.writer.request(request)
                finally:
                    self.schema_may_have_changed()
        self.reads_local += 1
        if self._report_handle is None and self.writer.mode == "daemon":
            self._schedule_report()
        if ok:
            if self._wire_check:
                return decode_body(encode_body({"result": value}))["result"]
            return value
        if self._wire_check:
            raise error_from_code(error_code(value), str(value))
        assert isinstance(value, FQDBError)
        raise value

    def schema_may_have_changed(self) -> None:
        """This process's writer ran DDL, raw SQL or a commit: the next local reads check the
        schema version first (other processes' changes are seen within
        ``SCHEMA_CHECK_INTERVAL``, or at once by a read that names what they added)."""
        if self.pool is not None:
            self.pool.schema_may_have_changed()

    # ------------------------------------------------------------ figures

    def stats(self) -> dict[str, Any]:
        """This process's read counts and reader settings (``db.stats()["reads"]``)."""
        return {
            "local": self.reads_local,
            "local_inline": self.reads_inline,
            "writer": self.reads_writer,
            "reader_threads": self.pool.threads if self.pool is not None else 0,
            "local_reads": self.pool is not None,
            "why_not": self.why_not or None,
        }

    def _schedule_report(self) -> None:
        loop = asyncio.get_running_loop()
        self._report_handle = loop.call_later(REPORT_INTERVAL, self._start_report)

    def _start_report(self) -> None:
        if self._report_task is None or self._report_task.done():
            self._report_task = asyncio.ensure_future(self._report())

    async def _report(self) -> None:
        # The daemon lists each client's counts in its stats; the reply says nothing.
        report = {"reads_local": self.reads_local, "reads_writer": self.reads_writer}
        try:
            await self.writer.request({"op": "stats", "report": report})
        except (FQDBError, OSError) as exc:
            log.debug("could not report read counts to the daemon: %s", exc)
        finally:
            self._report_handle = None

    async def close(self) -> None:
        """Stop reporting and close the readers (reads already running finish first)."""
        if self._report_handle is not None:
            self._report_handle.cancel()
        task = self._report_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.pool is not None:
            self.pool.close()
