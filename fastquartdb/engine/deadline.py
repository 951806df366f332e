"""Statement deadlines: no request keeps the one connection busy past its time.

SQLite calls a *progress handler* every :data:`PROGRESS_STEPS` virtual-machine
instructions of a running statement; when it returns true the statement stops
with ``SQLITE_INTERRUPT``. :class:`Deadlines` is that handler. It stops the
request that runs when:

* its deadline passed (``statement_timeout``, or the ``timeout`` of one raw
  ``execute``): :class:`StatementTimeoutError`;
* its client went away (:meth:`cancel`, called from the event loop's thread);
* the daemon is shutting down, its grace period is over and the request has
  run for more than :data:`SHUTDOWN_SLICE` (:meth:`shutdown`): the queue is still
  answered, but no long statement holds the exit up.

Threads: :meth:`start` / :meth:`finish` / :meth:`reason` run on the connection's
thread; :meth:`cancel`, :meth:`forget` and :meth:`shutdown` on the loop's. They
share only plain attribute assignments and a set the handler only reads
(atomic under the GIL); a cancel that arrives after its request finished finds
another request running and does nothing.

An interrupted write statement inside a transaction makes SQLite roll back the
whole transaction; the engine then runs the batch's other requests again (see
``Engine._run_group``), so the interrupted request fails alone.
"""

from __future__ import annotations

import math
import sqlite3
import time
from typing import Any

from ..protocol.errors import FQDBError, OperationalError, StatementTimeoutError, ValidationError

__all__ = [
    "DEFAULT_MAX_STATEMENT_TIMEOUT",
    "DEFAULT_STATEMENT_TIMEOUT",
    "PROGRESS_STEPS",
    "Deadlines",
]

#: Seconds a statement may run unless configured otherwise (daemon and embedded mode).
DEFAULT_STATEMENT_TIMEOUT = 5.0
#: The daemon's cap on the ``timeout`` one raw statement may ask for (and ensure_table's bound).
DEFAULT_MAX_STATEMENT_TIMEOUT = 60.0
#: Virtual-machine steps between two looks at the clock (about 0.1-1 ms of work). SQLite
#: counts them per prepared statement across its runs, so short statements are asked too.
PROGRESS_STEPS = 4000
#: Once the shutdown grace is over, seconds a request may still run.
SHUTDOWN_SLICE = 0.05


class Deadlines:
    """The progress handler of one connection and the deadline of the request it runs."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
        max_statement_timeout: float | None = None,
    ) -> None:
        if statement_timeout is not None and statement_timeout <= 0:
            raise ValueError("statement_timeout must be positive (or None for no limit)")
        self.statement_timeout = statement_timeout
        #: The longest ``timeout`` one raw ``execute`` may ask for (None: no cap).
        self.max_statement_timeout = max_statement_timeout
        self._deadline = math.inf
        self._limit: float | None = None
        self._running: object = None
        self._cancelled: set[int] = set()
        self._stop_at = math.inf
        self._started = 0.0
        self._why: str | None = None
        conn.set_progress_handler(self._progress, PROGRESS_STEPS)

    def timeout_for(self, request: dict[str, Any]) -> float | None:
        """The seconds ``request`` may run: its own raw-SQL ``timeout``, else the default.

        ``ensure_table`` (the models' migrations) gets ``max_statement_timeout``.

        Raises:
            ValidationError: ``timeout`` is not a positive number, or above the cap.
        """
        op = request.get("op")
        if op == "ensure_table":
            # A model's migration (an index built over a big table) may need longer than
            # a request: it gets the longest bound there is.
            return self.max_statement_timeout
        asked = request.get("timeout") if op == "execute" else None
        if asked is None:
            return self.statement_timeout
        if isinstance(asked, bool) or not isinstance(asked, (int, float)) or not asked > 0:
            raise ValidationError(f"'timeout' must be a positive number of seconds, got {asked!r}")
        cap = self.max_statement_timeout
        if cap is not None and asked > cap:
            raise ValidationError(
                f"timeout {asked:g} s is above this server's limit of {cap:g} s "
                "(fqdb-server --max-statement-timeout)"
            )
        return float(asked)

    def start(self, request: dict[str, Any]) -> None:
        """``request`` starts running now, for at most the seconds :meth:`timeout_for` gives it.

        One call per request on the engine's hot path: the default timeout is taken
        here without asking :meth:`timeout_for` (only raw SQL and migrations differ).

        Raises:
            ValidationError: the request's own ``timeout`` is invalid (nothing started).
        """
        op = request.get("op")
        timeout = (
            self.statement_timeout
            if op != "execute" and op != "ensure_table"
            else self.timeout_for(request)
        )
        self._why = None
        self._limit = timeout
        now = time.monotonic()
        self._started = now
        self._deadline = math.inf if timeout is None else now + timeout
        self._running = request

    def finish(self) -> None:
        """The request that ran is done; the engine's own statements have no deadline."""
        self._running = None
        self._deadline = math.inf

    def reason(self) -> FQDBError | None:
        """Why the last request was stopped, if the progress handler stopped it."""
        why = self._why
        if why is None:
            return None
        if why == "timeout":
            return StatementTimeoutError(
                f"statement stopped after {self._limit:g} s (the statement timeout): make it "
                "cheaper (an index, narrower filters, a LIMIT), or pass timeout= to "
                "db.execute() for a raw statement that needs longer"
            )
        return OperationalError(why)

    # ------------------------------------------------------------ from the loop thread

    def cancel(self, request: dict[str, Any]) -> None:
        """Stop ``request`` if it is running or starts running before :meth:`forget`."""
        self._cancelled.add(id(request))

    def forget(self) -> None:
        """Drop cancellations: their batch is over (only then may ids be reused)."""
        if self._cancelled:
            self._cancelled = set()

    def shutdown(self, grace: float) -> None:
        """``grace`` seconds from now, stop every request that runs longer than ``SHUTDOWN_SLICE``."""
        self._stop_at = min(self._stop_at, time.monotonic() + grace)

    # ------------------------------------------------------------ the handler

    def _progress(self) -> int:
        running = self._running
        if running is None:
            return 0
        if self._cancelled and id(running) in self._cancelled:
            self._why = "the client disconnected: its statement was stopped"
            return 1
        now = time.monotonic()
        if now >= self._deadline:
            self._why = "timeout"
            return 1
        if now >= self._stop_at and now - self._started >= SHUTDOWN_SLICE:
            self._why = "the database is shutting down: the statement was stopped"
            return 1
        return 0
