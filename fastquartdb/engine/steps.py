"""Statements as values: engine logic that says what to run and does no I/O.

An I/O-free piece of the engine is a generator that yields the statements it
needs — :class:`Query` (its rows are sent back), :class:`Exec` (its change
count is sent back), :class:`ExecMany` (nothing is sent back) — and returns its
answer. A *driver* runs the statements where the database is and feeds the
results in: :func:`run` on a ``sqlite3`` connection (the engine's thread), and
the dqlite transport's async driver on a cluster's leader. So the decisions
exist once, whatever the I/O (issue 15's direction: one engine over drivers).

The contract every driver keeps: a statement that fails on a constraint is
thrown into the generator as :class:`~fastquartdb.protocol.errors.IntegrityError`
(so the logic can decide what a collision means); any other failure is thrown
in as the driver's own exception, and the logic lets it pass.

Example::

    def count(table: str) -> Steps[int]:
        rows = yield Query(f"SELECT count(*) FROM {table}")
        return int(rows[0][0])

    n = run(conn, count("note"))
"""

from __future__ import annotations

import sqlite3
from collections.abc import Generator, Sequence
from typing import Any, NamedTuple, TypeVar

from ..protocol.errors import IntegrityError

__all__ = ["Exec", "ExecMany", "Query", "Statement", "Steps", "run"]

T = TypeVar("T")


class Query(NamedTuple):
    """A statement whose rows the logic needs: the driver sends back a list of row tuples."""

    sql: str
    params: Sequence[Any] = ()


class Exec(NamedTuple):
    """A statement run for its effect: the driver sends back the number of rows it changed."""

    sql: str
    params: Sequence[Any] = ()


class ExecMany(NamedTuple):
    """One statement run once per parameter row (in order): the driver sends back None."""

    sql: str
    rows: Sequence[Sequence[Any]]


Statement = Query | Exec | ExecMany
#: A piece of I/O-free logic: yields statements, receives their results, returns ``T``.
Steps = Generator[Statement, Any, T]


def run(conn: sqlite3.Connection, steps: Steps[T]) -> T:
    """Drive ``steps`` on a ``sqlite3`` connection, on the caller's thread.

    Raises:
        Whatever the logic raises; a ``sqlite3`` error other than a constraint
        failure passes through it unchanged (the caller translates it).
    """
    try:
        statement = next(steps)
        while True:
            try:
                if type(statement) is Query:
                    value: Any = conn.execute(statement.sql, statement.params).fetchall()
                elif type(statement) is Exec:
                    value = conn.execute(statement.sql, statement.params).rowcount
                else:
                    conn.executemany(statement.sql, statement[1])
                    value = None
            except sqlite3.IntegrityError as exc:
                statement = steps.throw(IntegrityError(str(exc)))
                continue
            except sqlite3.Error as exc:
                statement = steps.throw(exc)
                continue
            statement = steps.send(value)
    except StopIteration as stop:
        result: T = stop.value
        return result
