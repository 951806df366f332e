"""Request keys and idempotency keys: the same answers on every transport.

A resend is simulated the way the failover layer makes one: the same request map, keyed,
sent again with ``resent: true`` after the first one committed. The fault tests with real
kills are in ``tests/faults/test_exactly_once.py`` (daemon) and ``tests/dqlite`` (cluster).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastquartdb import (
    AsyncDatabaseManager,
    ConnectionLostError,
    IdempotencyKeyError,
    ValidationError,
)

from .models import Item, User


async def test_a_resent_write_returns_its_first_result_and_runs_once(
    db: AsyncDatabaseManager,
) -> None:
    await User.insert({"username": "seed"})
    request: dict[str, Any] = {
        "op": "insert",
        "table": "user",
        "values": {"username": "once", "age": 1},
        "key": [db.keys.client, 10_000],
    }
    first = await db.request(dict(request))
    again = await db.request(dict(request, resent=True))
    assert again == first
    update = {
        "op": "update",
        "table": "user",
        "values": {"age": 2},
        "where": [[["username", "=", "once"]]],
        "key": [db.keys.client, 10_001],
    }
    assert await db.request(dict(update)) == 1
    assert await db.request(dict(update, resent=True)) == 1
    assert await User.count({"username": "once"}) == 1
    assert (await User.fetch_one({"username": "once"}) or {})["age"] == 2


async def test_idempotency_key_on_every_write(db: AsyncDatabaseManager) -> None:
    pk = await User.insert({"username": "ann", "age": 30}, idempotency_key="i-1")
    assert await User.insert({"username": "ann", "age": 30}, idempotency_key="i-1") == pk
    assert await User.update({"age": 31}, {"id": pk}, idempotency_key="u-1") == 1
    assert await User.update({"age": 31}, {"id": pk}, idempotency_key="u-1") == 1
    rows = [{"username": f"b{i}"} for i in range(3)]
    assert await User.insert_many(rows, idempotency_key="m-1") == 3
    assert await User.insert_many(rows, idempotency_key="m-1") == 3
    await Item.insert({"sku": "s1", "name": "one"})
    assert await Item.upsert({"sku": "s1", "name": "uno"}, conflict="sku", idempotency_key="p-1")
    assert await Item.upsert({"sku": "s1", "name": "uno"}, conflict="sku", idempotency_key="p-1")
    many = [{"sku": "s2", "name": "two"}, {"sku": "s3", "name": "three"}]
    assert await Item.upsert_many(many, conflict="sku", idempotency_key="pm-1") == 2
    assert await Item.upsert_many(many, conflict="sku", idempotency_key="pm-1") == 2
    assert await User.delete({"username": "b0"}, idempotency_key="d-1") == 1
    # Run again the delete would match nothing; answered from its record it says 1 again.
    assert await User.delete({"username": "b0"}, idempotency_key="d-1") == 1
    sql = "INSERT INTO user (username) VALUES (?)"
    first = await db.execute(sql, ["raw"], idempotency_key="x-1")
    assert await db.execute(sql, ["raw"], idempotency_key="x-1") == first
    assert await User.count({"username": "ann"}) == 1
    assert await User.count({"username": ("IN", ["b1", "b2"])}) == 2
    assert await User.count({"username": "raw"}) == 1
    assert await Item.count() == 3


async def test_an_idempotency_key_reused_for_another_request_is_refused(
    db: AsyncDatabaseManager,
) -> None:
    await User.insert({"username": "first"}, idempotency_key="k")
    with pytest.raises(IdempotencyKeyError, match="already used for a different request"):
        await User.insert({"username": "second"}, idempotency_key="k")
    with pytest.raises(IdempotencyKeyError):
        await User.update({"age": 1}, {"username": "first"}, idempotency_key="k")
    assert await User.count() == 1


@pytest.mark.parametrize("key", ["", "x" * 256, 17])
async def test_a_bad_idempotency_key_is_a_validation_error(
    db: AsyncDatabaseManager, key: Any
) -> None:
    with pytest.raises(ValidationError, match="idempotency_key must be a non-empty string"):
        await User.insert({"username": "x"}, idempotency_key=key)
    assert await User.count() == 0


async def test_idempotency_key_is_refused_inside_a_transaction(db: AsyncDatabaseManager) -> None:
    with pytest.raises(ValidationError, match=r"cannot be used inside db\.transaction"):
        async with db.transaction():
            await User.insert({"username": "x"}, idempotency_key="t-1")
    assert await User.count() == 0


async def test_a_refused_request_fails_when_awaited_and_alone(db: AsyncDatabaseManager) -> None:
    """``db.request`` is no coroutine: a request it refuses must still fail only its own
    awaitable (in a gather, its neighbour in the transaction commits)."""
    insert = {"op": "insert", "table": "user", "values": {"username": "kept"}}
    refused = {**insert, "values": {"username": "no"}, "idempotency_key": "t-2"}
    async with db.transaction():
        out = await asyncio.gather(
            db.request(dict(insert)), db.request(refused), return_exceptions=True
        )
    assert isinstance(out[1], ValidationError) and "inside db.transaction" in str(out[1])
    assert [r["username"] for r in await User.fetch()] == ["kept"]


async def test_idempotency_key_needs_the_rows_in_one_request(db: AsyncDatabaseManager) -> None:
    rows = [{"username": f"r{i}"} for i in range(5)]
    with pytest.raises(ValidationError, match="pass a larger chunk_size"):
        await User.insert_many(rows, chunk_size=2, idempotency_key="c-1")
    assert await User.count() == 0


async def test_a_keyed_commit_is_resolved_and_a_resolved_key_never_commits(
    db: AsyncDatabaseManager,
) -> None:
    # What the failover layer does with a commit whose reply was lost: ask with resolve.
    transport = db.transport
    committed = [db.keys.client, 30_000]
    await transport.request({"op": "begin", "txn": 9001})
    row = {"op": "insert", "table": "user", "values": {"username": "in-txn"}}
    await transport.request(dict(row, txn=9001))
    assert await transport.request({"op": "commit", "txn": 9001, "key": committed}) is None
    answer = await transport.request({"op": "resolve", "key": committed})
    assert answer == {"committed": True, "result": None}
    # A key resolved before its commit arrives is "never": its commit is refused.
    never = [db.keys.client, 30_001]
    assert await transport.request({"op": "resolve", "key": never}) == {"committed": False}
    assert await transport.request({"op": "resolve", "key": never}) == {"committed": False}
    await transport.request({"op": "begin", "txn": 9002})
    await transport.request(dict(row, values={"username": "late"}, txn=9002))
    with pytest.raises(ConnectionLostError, match="rolled back"):
        await transport.request({"op": "commit", "txn": 9002, "key": never})
    assert await User.count({"username": "late"}) == 0
    assert await User.count({"username": "in-txn"}) == 1
    assert await User.insert({"username": "after"}) > 0  # the connection goes on
