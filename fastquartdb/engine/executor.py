"""The engine: run requests on one sqlite3 connection, a whole batch per call.

Everything here is synchronous and runs on the connection's own thread (see
:mod:`.runner`); callers hop to that thread once per *batch*, never once per
statement. A batch that may write runs as one group commit::

    BEGIN IMMEDIATE
      request 1            (multi-statement requests inside SAVEPOINT ... RELEASE)
      request 2            fails -> only its own changes are undone
      ...
    COMMIT                 replies are released only after this returns

One failing request never sinks its neighbours: single statements are undone
by SQLite's statement journal, multi-statement requests by ``ROLLBACK TO``.
A failure that takes the whole transaction with it still fails alone: if
SQLite rolls the transaction back during a request (a write stopped by its
deadline, an I/O error) the others run again in a new one, and if ``COMMIT``
fails on a deferred constraint the batch is committed again in halves down to
the offender (see ``Engine._run_group``).

Raw SQL runs under the sandbox's authorizer (:mod:`.sandbox`), and every
request under its deadline (:mod:`.deadline`). What each op does is in
:mod:`.ops` (a base class of the engine), the short path of point reads in :mod:`.points`
(the other); opening the connection in :mod:`.connection`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from ..protocol.errors import (
    FQDBError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    ReadOnlyError,
    ValidationError,
    brief,
)
from ..protocol.messages import MULTI_STATEMENT_OPS, READ_OPS, TRANSACTION_OPS, WRITE_OPS
from ..protocol.messages import SCHEMA_RETRY_OPS as _SCHEMA_SAFE_RETRY
from .batches import NO_TXN_ERROR, after_rollback_by_error, without_culprit
from .changelog import ChangeLog, read_changes
from .connection import connect
from .deadline import DEFAULT_STATEMENT_TIMEOUT, Deadlines
from .locking import ProcessLock
from .ops import RequestOps
from .points import PointReads
from .requestkeys import KeyConflict, RequestKeys
from .resultcodes import translate_sqlite_error
from .sandbox import Sandbox
from .schema import (
    LIVE_TABLES_SQL,
    TableInfo,
    check_identifier,
    load_table,
    unknown_table,
)
from .steps import run as run_steps

__all__ = ["LOCAL_READ_OPS", "Engine", "Outcome", "translate_sqlite_error"]

#: (True, result) or (False, exception) for one request.
Outcome = tuple[bool, Any]


#: Requests run inside a savepoint within a write transaction, so that a failure undoes all of
#: them: the multi-statement ops, and raw ``execute`` (a ``... RETURNING`` has made its changes
#: before its rows are read: one whose rows exceed the reply limit must not commit them).
_SAVEPOINT_OPS = MULTI_STATEMENT_OPS | {"execute"}

#: Seconds between checks that no other process changed the schema.
SCHEMA_CHECK_INTERVAL = 0.05

#: Ops a local read-only connection runs (see :meth:`Engine.run_read`); ``execute`` only for
#: raw statements the caller expects to read (a write is refused there and goes to the writer).
LOCAL_READ_OPS = frozenset({"fetch", "count", "aggregate", "execute", "changes", "describe"})


def _malformed(req: dict[str, Any], exc: Exception) -> ValidationError:
    return ValidationError(f"malformed {_op(req) or 'request'}: {type(exc).__name__}: {brief(exc)}")


def _op(req: dict[str, Any]) -> str:
    """The request's op if it is a string, else "" (never an unhashable value)."""
    op = req.get("op")
    return op if type(op) is str else ""


class Engine(RequestOps, PointReads):
    """One sqlite3 connection and the knowledge of how to run our requests on it.

    Not thread-safe: every method must be called on the connection's thread.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        read_only: bool = False,
        raw_sql: bool = True,
        lock_path: str | None = None,
        lock_timeout: float = 5.0,
        statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
        max_statement_timeout: float | None = None,
        schema_check_interval: float = SCHEMA_CHECK_INTERVAL,
    ) -> None:
        self.conn = conn
        #: With ``use_filelock``: held around every batch and interactive transaction.
        self.lock = ProcessLock(lock_path, lock_timeout) if lock_path else None
        self.read_only = read_only
        self.raw_sql = raw_sql
        #: Most encoded bytes one result may take (the daemon's ``--max-reply``); None: any.
        self.result_limit: int | None = None
        # query_only refuses BEGIN IMMEDIATE; a read-only engine never writes anyway.
        self._begin_sql = "BEGIN" if read_only else "BEGIN IMMEDIATE"
        self._tables: dict[str, TableInfo] = {}
        self._schema_version = -1
        #: A local reader checks before every read (0.0): it has no other way to learn
        #: that the writer changed a table, and a stale column list would drop a column.
        self._schema_interval = schema_check_interval
        self._schema_checked = -schema_check_interval - 1.0
        # (table, column names, on_conflict) -> INSERT text: built once per shape.
        self._insert_sql: dict[tuple[Any, ...], str] = {}
        # The shape of a fetch (see _select_shape) -> its SELECT text: built once per shape.
        self._select_sql: dict[tuple[Any, ...], str] = {}
        # A point read's (table, columns, limit given) -> (SELECT text, names): see .points.
        self._point_sql: dict[Any, tuple[str, list[str], str]] = {}
        self._point_cursor = conn.cursor()
        self._ops: dict[str, Callable[[dict[str, Any]], Any]] = {
            "fetch": self._fetch,
            "count": self._count,
            "insert": self._insert,
            "insert_many": self._insert_many,
            "upsert": self._upsert,
            "upsert_many": self._upsert_many,
            "aggregate": self._aggregate,
            "update": self._update,
            "delete": self._delete,
            "ensure_table": self._ensure_table,
            "describe": self._describe,
            "execute": self._execute,
            "ping": lambda req: "pong",
            "begin": self._begin,
            "commit": self._commit,
            "rollback": self._rollback,
            "resolve": lambda req: run_steps(self.conn, self.keys.resolve(req)),
            "changes": lambda req: read_changes(self.conn, req, self.table),
        }
        #: The raw-SQL rules (an authorizer on ``conn``; see :mod:`.sandbox`).
        self.sandbox = Sandbox(conn)
        #: Every request's deadline (a progress handler on ``conn``; see :mod:`.deadline`).
        self.deadlines = Deadlines(conn, statement_timeout, max_statement_timeout)
        #: The records that make a resent write run once (see :mod:`.requestkeys`).
        self.keys = RequestKeys()
        #: The log of committed changes of captured tables (see :mod:`.changelog`). Like
        #: ``keys`` it writes with the transaction: ``flush()`` just before COMMIT (after the
        #: records), ``committed()`` just after it (which announces the new tip).
        self.changes = ChangeLog(conn)

    # ------------------------------------------------------------------ setup

    #: Open and configure a connection for an engine (see :func:`.connection.connect`).
    connect = staticmethod(connect)

    def shutdown(self) -> None:
        """Roll back what is still open and checkpoint the WAL (best effort) before closing."""
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        if self.lock is not None:
            self.lock.close()

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open on the connection."""
        return self.conn.in_transaction

    # ------------------------------------------------------------------ schema

    def _refresh_schema(self, force: bool = False) -> bool:
        """Drop cached table shapes if the schema changed; True if it did.

        Another process may change the schema behind our back (our own changes
        clear the cache directly). Asking SQLite costs a statement, so batches
        ask at most every ``SCHEMA_CHECK_INTERVAL`` seconds; a request that
        fails on an unknown table or column asks at once and is retried.
        """
        interval = self._schema_interval
        now = time.monotonic() if interval else 0.0
        if not force and interval and now < self._schema_checked + interval:
            return False
        self._schema_checked = now
        version = self.conn.execute("PRAGMA schema_version").fetchone()[0]
        if version == self._schema_version:
            return False
        self._forget_schema()
        self._schema_version = version
        return True

    def _rolled_back(self) -> None:
        """A transaction was rolled back: its DDL (a table, the record tables) is gone too."""
        self._forget_schema()
        self.keys.forget_schema()

    def _forget_schema(self) -> None:
        self.changes.forget_schema()  # the log's tables may have come or gone too
        self._tables.clear()
        self._insert_sql.clear()
        self._select_sql.clear()
        self._point_sql.clear()

    def table(self, name: object) -> TableInfo:
        """The live shape of table ``name``.

        Raises:
            ValidationError: the name is not an identifier or no such table exists.
        """
        info = self._tables.get(name) if isinstance(name, str) else None
        if info is not None:
            return info
        try:
            checked = check_identifier(name, "table name")
        except ValidationError:
            # Not a plain identifier, but perhaps a name the live schema holds ("my table",
            # made by another tool): that one is safe quoted.
            live = (
                isinstance(name, str)
                and self.conn.execute(LIVE_TABLES_SQL + " AND name = ?", [name]).fetchone()
            )
            if not live:
                raise
            checked = str(name)
        found = load_table(self.conn, checked)
        if found is None:
            raise unknown_table(checked, self.conn.execute(LIVE_TABLES_SQL))
        self._tables[checked] = found
        return found

    # ------------------------------------------------------------------ running

    def execute(self, req: dict[str, Any]) -> Any:
        """Run one request and return its result.

        Raises:
            FQDBError: the request failed (sqlite3 errors are translated).
        """
        op = req.get("op")
        handler = self._ops.get(op) if isinstance(op, str) else None
        if handler is None:
            raise ValidationError(f"unknown op {brief(op)} (ops: {', '.join(sorted(self._ops))})")
        # ensure_table may run: it changes nothing when the table already matches, and
        # query_only makes SQLite refuse it otherwise.
        if self.read_only and op in WRITE_OPS and op != "ensure_table":
            raise ReadOnlyError(f"{op} refused: the database is served read-only")
        try:
            try:
                return handler(req)
            except (ValidationError, sqlite3.OperationalError):
                # Perhaps a table or column another process added (or changed) since
                # we cached the schema: look again, and retry once if it changed.
                # (Never a request its deadline stopped.)
                if (
                    op in _SCHEMA_SAFE_RETRY
                    and self.deadlines.reason() is None
                    and self._refresh_schema(force=True)
                ):
                    return handler(req)
                raise
        except sqlite3.Error as exc:
            raise (self.sandbox.refusal() or translate_sqlite_error(exc)) from None

    def _execute_safely(self, req: dict[str, Any]) -> Outcome:
        sandbox = self.sandbox
        if sandbox.denied is not None:
            sandbox.refusal()  # a refusal from before this request is not its own
        deadlines = self.deadlines
        try:
            deadlines.start(req)
        except ValidationError as exc:
            return False, exc
        try:
            return True, self.execute(req)
        except FQDBError as exc:
            # Stopped by its deadline, its client's disconnect or shutdown: say which.
            return False, deadlines.reason() or exc
        except Exception as exc:
            # Input no check foresaw (a list where a name goes, a value nested 1000 deep):
            # this request fails, and its batch and the daemon go on.
            return False, _malformed(req, exc)
        finally:
            deadlines.finish()

    def _run_one(self, req: dict[str, Any], savepoint: bool) -> Outcome:
        if savepoint and _op(req) in _SAVEPOINT_OPS:
            self.conn.execute('SAVEPOINT "fqdb_request"')
            outcome = self._execute_safely(req)
            if self.conn.in_transaction:
                if not outcome[0]:
                    self.conn.execute('ROLLBACK TO "fqdb_request"')
                self.conn.execute('RELEASE "fqdb_request"')
            return outcome
        return self._execute_safely(req)

    def run_read(self, req: dict[str, Any], *, check_schema: bool = False) -> Outcome:
        """Run one read outside any transaction: what a local reader does with a request.

        The same ops as the writer runs (``fetch``, ``count``, ``aggregate``, ``changes``,
        ``describe``, raw ``execute``), on this engine's connection, in SQLite's autocommit mode: the
        statement's read snapshot ends when its rows are fetched, so nothing is held
        between requests. On a read-only connection a raw statement that writes fails
        with :class:`ReadOnlyError`; the caller then sends it to the writer.
        ``check_schema`` asks SQLite for the schema version now (the caller knows the
        writer may have changed it), instead of at most every ``schema_check_interval``.
        """
        if _op(req) not in LOCAL_READ_OPS:
            return False, ProgrammingError(f"{_op(req) or 'request'} is not a read")
        try:
            self._refresh_schema(force=check_schema)
        except sqlite3.Error as exc:
            return False, translate_sqlite_error(exc)
        return self._execute_safely(req)

    def run_batch(self, requests: list[dict[str, Any]]) -> list[Outcome]:
        """Run ``requests`` as one group commit (see :meth:`_run_batch`), under the file lock if any."""
        lock = self.lock
        if lock is None:
            return self._run_batch(requests)
        try:
            lock.acquire()
        except FQDBError as exc:
            return [(False, exc)] * len(requests)
        try:
            return self._run_batch(requests)
        finally:
            lock.release()

    def _run_batch(self, requests: list[dict[str, Any]]) -> list[Outcome]:
        """Run ``requests`` as one group commit and return one outcome per request, in order.

        A batch of reads only runs without a transaction. Otherwise
        ``BEGIN IMMEDIATE`` ... ``COMMIT`` (see :meth:`_run_group` for how a request
        whose failure sinks the whole transaction still fails alone).
        """
        try:
            self._refresh_schema()
        except sqlite3.Error as exc:
            error = translate_sqlite_error(exc)
            return [(False, error)] * len(requests)
        if all(_op(req) in READ_OPS for req in requests):
            return [self._run_one(req, False) for req in requests]
        outcomes: list[Outcome] = [(False, NO_TXN_ERROR)] * len(requests)
        self.keys.check_all = False
        # Outside an interactive transaction begin/commit/rollback would end the shared batch.
        todo = [i for i, req in enumerate(requests) if _op(req) not in TRANSACTION_OPS]
        if todo:
            try:
                self._run_group(requests, todo, outcomes)
            except BaseException:
                # A bug, not a request's failure: never leave the shared transaction open.
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                self._rolled_back()
                raise
        return outcomes

    def _run_group(
        self, requests: list[dict[str, Any]], todo: list[int], outcomes: list[Outcome]
    ) -> None:
        """Run ``requests[i] for i in todo`` in one transaction, setting ``outcomes[i]``.

        A failing request fails alone, also when its failure takes the whole
        transaction with it:

        * SQLite rolls the transaction back during a request (an interrupted write,
          SQLITE_FULL, an I/O error): that request fails, and the others run again in
          a new transaction (their first run is undone, and nobody was told of it). After
          ``MAX_RESTARTS`` such losses the world is broken: the rest fail too.
        * COMMIT fails on a constraint checked only then (a deferred foreign key): the
          group is rolled back and split in halves, each committed on its own, in order,
          down to the single requests that cannot commit.
        """
        conn = self.conn
        restarts = 0
        while todo:
            try:
                conn.execute(self._begin_sql)
            except sqlite3.Error as exc:
                error = translate_sqlite_error(exc)
                for i in todo:
                    outcomes[i] = (False, error)
                return
            results: list[tuple[int, Outcome]] = []
            lost: tuple[int, FQDBError] | None = None
            keys = self.keys
            keys.begin()
            for i in todo:
                req = requests[i]
                if "key" in req or "idempotency_key" in req:
                    outcome = self._run_keyed(req)
                else:
                    outcome = self._run_one(req, True)
                if not conn.in_transaction:
                    reason = outcome[1] if not outcome[0] else OperationalError("transaction lost")
                    lost = (i, reason)
                    break
                results.append((i, outcome))
            if lost is not None:
                self._rolled_back()  # DDL of the lost transaction is undone too
                restarts += 1
                todo = without_culprit(todo, outcomes, lost[0], lost[1], restarts)
                continue
            try:
                run_steps(conn, keys.flush())
                self.changes.flush()  # in the same transaction, after the records
            except KeyConflict:
                # A first send was run elsewhere already (its client resent it while this
                # writer was stopped): undo, and run the group again looking every key up.
                conn.execute("ROLLBACK")
                self._rolled_back()
                collided = keys.retry_after_conflict()
                if collided is not None:
                    for i in todo:
                        outcomes[i] = (False, collided)
                    return
                continue
            except Exception as exc:  # the disk is full, or the like: nothing commits
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._rolled_back()
                error = (
                    translate_sqlite_error(exc)
                    if isinstance(exc, sqlite3.Error)
                    else OperationalError(f"request keys could not be recorded: {brief(exc)}")
                )
                for i in todo:
                    outcomes[i] = (False, error)
                return
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._rolled_back()
                error = translate_sqlite_error(exc)
                if len(todo) == 1 or not isinstance(error, IntegrityError):
                    for i in todo:
                        outcomes[i] = (False, error)
                    return
                half = len(todo) // 2
                self._run_group(requests, todo[:half], outcomes)
                self._run_group(requests, todo[half:], outcomes)
                return
            keys.committed()
            self.changes.committed()
            for i, outcome in results:
                outcomes[i] = outcome
            return

    def _run_keyed(self, req: dict[str, Any]) -> Outcome:
        """Run a request that carries a key: answered from its record, or run and recorded.

        Every check of the key's fields comes before the request runs. Should staging its
        record fail after all, the request's changes must not commit without it: the
        transaction is rolled back, and ``_run_group`` runs the others again without it.
        """
        if req.get("op") == "resolve":
            return self._run_one(req, True)
        keys = self.keys
        if "expires" in req:
            refused = keys.expired(req)
            if refused is not None:
                return refused
        auto = keys.first_send(req)
        if auto is not None:
            # The hot path: a plain write's first send. No lookup, not even in this batch:
            # another copy of it here would collide at flush, and the rerun looks up.
            recorded = None
        else:
            try:
                recorded = keys.answer(req)
                if recorded is None and keys.needs_lookup(req):
                    recorded = run_steps(self.conn, keys.lookup(req))
            except FQDBError as exc:
                return False, exc
            except sqlite3.Error as exc:
                return False, translate_sqlite_error(exc)
            except Exception as exc:  # content no check foresaw (nested 1000 deep)
                return False, _malformed(req, exc)
        if recorded is not None:
            return recorded
        outcome = self._run_one(req, True)
        conn = self.conn
        if outcome[0] and conn.in_transaction:
            result = outcome[1]
            if req.get("op") != "execute" or self._raw_wrote(result):
                try:
                    if auto is not None:
                        keys.stage_first(auto, result)
                    else:
                        keys.stage(req, result)
                except Exception as exc:
                    conn.execute("ROLLBACK")
                    return False, OperationalError(
                        f"{_op(req)} rolled back: its request key could not be recorded "
                        f"({brief(exc)})"
                    )
        return outcome

    @staticmethod
    def _raw_wrote(result: dict[str, Any]) -> bool:
        """Whether a raw ``execute`` is worth a record: it changed rows or the schema, or
        returned no rows. A statement that only read (rows, nothing changed) may run again,
        and its rows may be large. (``rowcount`` is -1 for a SELECT, >= 0 for DML.)"""
        return result.get("rowcount", -1) >= 0 or not result.get("columns")

    def run_in_transaction(self, requests: list[dict[str, Any]]) -> list[Outcome]:
        """Run requests of an interactive transaction (already begun, or begun by them).

        No BEGIN or COMMIT is added; ``begin``/``commit``/``rollback`` requests do that.
        """
        try:
            self._refresh_schema()
        except sqlite3.Error as exc:
            return [(False, translate_sqlite_error(exc))] * len(requests)
        lock = self.lock
        outcomes: list[Outcome] = []
        ended = False
        for req in requests:
            refused = after_rollback_by_error(req) if ended else None
            if refused is not None:  # what followed the error must not autocommit
                outcomes.append(refused)
                continue
            if lock is not None and not lock.held and not self.conn.in_transaction:
                # An interactive transaction holds the file lock from its BEGIN to its end.
                try:
                    lock.acquire()
                except FQDBError as exc:
                    outcomes.append((False, exc))
                    continue
            was_open = self.conn.in_transaction
            outcomes.append(self._run_one(req, was_open))
            ended = was_open and not self.conn.in_transaction and not outcomes[-1][0]
        if lock is not None and lock.held and not self.conn.in_transaction:
            lock.release()
        return outcomes
