"""One request's statements on the dqlite leader connection, and the steps driver.

:class:`Session` runs statements for one request and tracks whether a commit may
have happened (what failover needs to know when the leader is lost mid-request);
:func:`all_or_nothing` wraps a request in one transaction or savepoint;
:func:`drive` runs the engine's I/O-free logic (:mod:`fastquartdb.engine.steps`,
such as the request keys' lookups and records) on a session: it is the dqlite
driver of that logic, as :func:`fastquartdb.engine.steps.run` is the sqlite3 one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ...protocol.errors import ConnectionLostError, FQDBError, ValidationError
from ..resultcodes import error_for_code
from ..schema import quote
from ..steps import Exec, Query, Steps
from . import wire
from .connection import DqliteRequestError, NodeConnection, NodeUnavailable
from .rawsql import tokenize

__all__ = [
    "Lost",
    "Session",
    "all_or_nothing",
    "drive",
    "quietly",
    "translate_dqlite_error",
    "wire_params",
]

T = TypeVar("T")


def translate_dqlite_error(exc: DqliteRequestError) -> FQDBError:
    """A dqlite failure as our exception: a lost leader, else SQLite's result code through
    the engine's one table (dqlite reports SQLite's codes)."""
    if exc.not_leader or exc.leadership_lost:
        return ConnectionLostError(f"{exc.message}: the dqlite leader changed")
    return error_for_code(exc.code, exc.message, holder="another client")


class Lost(Exception):
    """The leader was lost mid-request; ``committable`` says whether a commit may have run."""

    def __init__(self, reason: str, committable: bool, safe: bool) -> None:
        super().__init__(reason)
        self.committable = committable
        self.safe = safe


class Session:
    """Statements of one request on the leader connection, tracking what may have committed."""

    def __init__(self, conn: NodeConnection, in_transaction: bool) -> None:
        self.conn = conn
        self.in_transaction = in_transaction
        #: True once a statement was sent that commits by itself (or a COMMIT).
        self.committable = False

    async def _call(self, run: Callable[[], Awaitable[Any]], commits: bool) -> Any:
        try:
            return await run()
        except NodeUnavailable as exc:
            raise Lost(str(exc), self.committable or commits, safe=False) from None
        except DqliteRequestError as exc:
            if exc.not_leader:
                # Refused before running: nothing of this statement happened.
                raise Lost(exc.message, self.committable, safe=True) from None
            if exc.leadership_lost:
                raise Lost(exc.message, self.committable or commits, safe=False) from None
            raise translate_dqlite_error(exc) from None
        except wire.WireError as exc:
            if self.conn.closed:
                raise Lost(str(exc), self.committable or commits, safe=False) from None
            raise ValidationError(str(exc)) from None

    async def write(
        self, sql: str, params: list[Any] | tuple[Any, ...] = ()
    ) -> wire.StatementResult:
        commits = not self.in_transaction
        result: wire.StatementResult = await self._call(
            lambda: self.conn.execute(sql, wire_params(params)), commits
        )
        self.committable = self.committable or commits
        return result

    async def control(self, sql: str) -> None:
        """BEGIN / SAVEPOINT / RELEASE / ROLLBACK: never commits a write by itself."""
        await self._call(lambda: self.conn.execute(sql), False)

    async def commit(self) -> None:
        await self._call(lambda: self.conn.execute("COMMIT"), True)
        self.committable = True

    async def read(
        self, sql: str, params: list[Any] | tuple[Any, ...] = (), *, again: bool = True
    ) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        """Rows of ``sql``; ``again=False`` for a statement that writes (RETURNING),
        which must never run twice, so its typed values are not asked for again."""
        columns, rows, typed = await self._call(
            lambda: self.conn.query(sql, wire_params(params)), False
        )
        if again and typed and columns and len(set(columns)) == len(columns):
            # dqlite types values by their column's declaration (BOOLEAN, DATE, DATETIME,
            # TIMESTAMP) and then sends NULL as 0 or "": ask again through expressions,
            # which have no declared type, so every value comes back as SQLite stored it.
            outer = ", ".join(f"+{quote(c)} AS {quote(c)}" for c in columns)
            untyped = f"SELECT {outer} FROM ({_without_tail(sql)})"
            columns, rows, _ = await self._call(
                lambda: self.conn.query(untyped, wire_params(params)), False
            )
        return columns, rows


def _without_tail(sql: str) -> str:
    """``sql`` up to its last token: a trailing ``;`` or comment would end a subquery."""
    tokens = [token for token in tokenize(sql) if token.text != ";"]
    return sql[: tokens[-1].start + len(tokens[-1].text)] if tokens else sql


async def quietly(session: Session, *statements: str) -> None:
    """Run clean-up statements; if the connection broke meanwhile, the server undid it all."""
    try:
        for statement in statements:
            await session.control(statement)
    except (FQDBError, Lost):
        await session.conn.close()


async def all_or_nothing(session: Session, run: Callable[[Session], Awaitable[Any]]) -> Any:
    """``run`` in one transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT``, or a savepoint
    inside an open interactive transaction. Any failure undoes all of it."""
    if session.in_transaction:
        await session.control('SAVEPOINT "fqdb_request"')
        try:
            result = await run(session)
        except Lost:
            raise
        except BaseException:
            # Any failure, cancellation included: undo this request's part only.
            await quietly(session, 'ROLLBACK TO "fqdb_request"', 'RELEASE "fqdb_request"')
            raise
        await session.control('RELEASE "fqdb_request"')
        return result
    await session.control("BEGIN IMMEDIATE")
    inner = type(session)(session.conn, in_transaction=True)  # a subclass's rules hold inside
    try:
        result = await run(inner)
    except Lost:
        raise
    except BaseException:
        # Never leave BEGIN open on the shared connection: the next request would run in it.
        await quietly(session, "ROLLBACK")
        raise
    await session.commit()
    return result


def wire_params(params: list[Any] | tuple[Any, ...]) -> list[Any] | tuple[Any, ...]:
    if len(params) > wire.MAX_PARAMS:
        raise ValidationError(
            f"{len(params)} bound values in one statement: dqlite takes at most "
            f"{wire.MAX_PARAMS} (use fewer IN values, or several requests)"
        )
    for value in params:
        if isinstance(value, str) and "\x00" in value:
            raise ValidationError("text containing a NUL character cannot be stored over dqlite")
    return params


async def drive(session: Session, steps: Steps[T]) -> T:
    """Run I/O-free logic's statements on ``session`` and return its answer.

    The driver contract of :mod:`fastquartdb.engine.steps`: a statement's failure
    (a constraint as :class:`IntegrityError`, any :class:`FQDBError`) is thrown into
    the logic; a lost leader (:class:`Lost`) ends it and reaches the caller.
    Queries are not asked again for untyped values (``again=False``): the logic
    reads only TEXT, BLOB and INTEGER columns, which dqlite returns as stored.
    """
    try:
        statement = next(steps)
        while True:
            try:
                value: Any
                if type(statement) is Query:
                    _, value = await session.read(
                        statement.sql, list(statement.params), again=False
                    )
                elif type(statement) is Exec:
                    value = (
                        await session.write(statement.sql, list(statement.params))
                    ).rows_affected
                else:
                    for sql, params in _multi_row(statement.sql, statement[1]):
                        await session.write(sql, params)
                    value = None
            except FQDBError as exc:
                statement = steps.throw(exc)
                continue
            statement = steps.send(value)
    except StopIteration as stop:
        result: T = stop.value
        return result
    finally:
        steps.close()


def _multi_row(sql: str, rows: Sequence[Sequence[Any]]) -> list[tuple[str, list[Any]]]:
    """``ExecMany`` as few statements: an ``INSERT ... VALUES (?, ...)`` becomes one
    statement of many value rows (up to dqlite's bound-value limit each), so the
    records of a batch of 64 writes cost one round trip to the leader, not 64. All
    rows or none: a statement's failure undoes all of it, as the caller's transaction
    would. Any other statement runs once per row."""
    head, sep, values = sql.rpartition(" VALUES ")
    width = len(rows[0]) if rows else 0
    if not sep or not width or values.replace(" ", "") != "(" + ",".join("?" * width) + ")":
        return [(sql, list(row)) for row in rows]
    per = max(1, wire.MAX_PARAMS // width)
    return [
        (
            f"{head} VALUES " + ", ".join([values] * len(rows[at : at + per])),
            [value for row in rows[at : at + per] for value in row],
        )
        for at in range(0, len(rows), per)
    ]
