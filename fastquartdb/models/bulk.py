"""Bulk writes for models: ``insert_many`` and ``upsert_many`` as pipelined chunks.

Owns how many rows become requests: the rows converted and grouped by the
columns they name (one prepared statement per group, with a hot path for rows
that all name the same columns), cut into ``chunk_size`` requests, and, when
there is more than one, sent back to back in one transaction without waiting
for each answer (through a daemon the database works on the first chunk while
the rest are still being converted).
"""

from __future__ import annotations

import asyncio
import itertools
import operator
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..protocol.errors import ValidationError, brief
from .requests import keyed

if TYPE_CHECKING:
    from .model import BaseModel

__all__ = ["chunked", "row_groups", "run_many"]


async def run_many(
    model: type[BaseModel[Any]],
    rows: Iterable[Mapping[str, Any]],
    chunk_size: int,
    base: dict[str, Any],
    idempotency_key: str | None = None,
) -> int:
    """``rows`` as requests of ``chunk_size`` rows; several run in one transaction.

    Through a daemon (or a cluster) each request is sent as soon as its rows
    are converted, so the database works on the first while the rest are still
    being prepared.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValidationError(f"chunk_size must be a positive integer, got {brief(chunk_size)}")
    rows = rows if isinstance(rows, list) else list(rows)
    ready: list[dict[str, Any]] | None = None
    if len(rows) <= chunk_size:
        ready = chunked(model, rows, chunk_size, base)
        if not ready:
            return 0
        if len(ready) == 1:
            return int(await model._request(keyed(ready[0], idempotency_key)))
    if idempotency_key is not None:
        raise ValidationError(
            f"idempotency_key needs the rows in one request: {len(rows)} rows are more "
            f"than chunk_size={chunk_size}; pass a larger chunk_size (or split the rows "
            "into calls with a key each)"
        )
    db = await model._db()
    if ready is None and db.mode == "embedded":
        # Embedded, the engine's thread would only compete with the conversion for
        # the GIL: convert everything first. Otherwise another process works meanwhile.
        ready = chunked(model, rows, chunk_size, base)

    def batches() -> Iterator[list[dict[str, Any]]]:
        if ready is not None:
            yield ready
            return
        for start in range(0, len(rows), chunk_size):
            yield chunked(model, rows[start : start + chunk_size], chunk_size, base)

    pending: list[asyncio.Future[Any]] = []
    async with db.transaction():
        try:
            for batch in batches():
                for request in batch:
                    pending.append(asyncio.ensure_future(db.request(request)))
                await asyncio.sleep(0)  # let it go out now
        except BaseException:
            # A later chunk is invalid (or we are cancelled): the transaction rolls
            # back; what was sent is dropped, not left unawaited.
            for future in pending:
                future.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise
        # Pipelined, in order, one transaction: no round trip per chunk.
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        total = 0
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            total += int(outcome)
    return total


def chunked(
    model: type[BaseModel[Any]],
    rows: list[Mapping[str, Any]],
    chunk_size: int,
    base: dict[str, Any],
) -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = []
    for names, group_rows in row_groups(model, rows):
        for start in range(0, len(group_rows), chunk_size):
            request = dict(base)
            request["table"] = model.__tablename__
            request["columns"] = list(names)
            request["rows"] = group_rows[start : start + chunk_size]
            requests.append(request)
    return requests


def row_groups(
    model: type[BaseModel[Any]], rows: Iterable[Mapping[str, Any]]
) -> list[tuple[tuple[str, ...], list[list[Any]]]]:
    """Rows as value lists, grouped by the columns they name (one statement per group)."""
    rows = rows if isinstance(rows, list) else list(rows)
    columns = model.__columns__
    if rows and type(rows[0]) is dict:
        names = tuple(rows[0])
        defaults = [d for d in model.__callable_defaults__ if d[0] not in names]
        if names and not defaults and all(n in columns for n in names):
            # Hot path (bulk inserts): every row a dict naming the same columns (in
            # any order). One converter per column, no per-row key work.
            width = len(names)
            if all(type(row) is dict and len(row) == width for row in rows):
                pick = operator.itemgetter(*names)
                try:
                    if width == 1:
                        out = [[value] for value in map(pick, rows)]
                    else:
                        out = list(map(list, map(pick, rows)))
                except KeyError:
                    pass  # a row names another column: the general path says which
                else:
                    for index, name in enumerate(names):
                        columns[name].convert_rows(out, index)
                    return [(names, out)]
    order = list(columns)
    groups: list[tuple[tuple[str, ...], list[list[Any]]]] = []
    converted = [model._values(row, insert=True) for row in rows]
    for key, group in itertools.groupby(converted, key=lambda v: tuple(sorted(v, key=order.index))):
        group_rows = [[values[n] for n in key] for values in group]
        if not key:
            key = (order[0],)
            group_rows = [[None] for _ in group_rows]
        groups.append((key, group_rows))
    return groups
