"""Transactions: commit, rollback, savepoints, isolation from other tasks, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from fastquartdb import AsyncDatabaseManager, IntegrityError

from .models import Item, User

# A hang here means a transaction was left open; fail in seconds, not at pytest's timeout.
DEADLINE = 10.0


class Boom(Exception):
    pass


async def usernames() -> list[str]:
    return [r["username"] for r in await User.fetch(columns=["username"], order_by="id")]


async def assert_usable(db: AsyncDatabaseManager) -> None:
    """The database takes plain requests and a new transaction, promptly."""

    async def check() -> None:
        before = await User.count()
        pk = await User.insert({"username": "probe"})
        async with db.transaction():
            await User.update({"age": 1}, {"id": pk})
        assert await User.fetch_one({"id": pk}) == {"id": pk, "username": "probe", "age": 1}
        assert await User.delete({"id": pk}) == 1
        assert await User.count() == before

    await asyncio.wait_for(check(), DEADLINE)


async def test_commit(db: AsyncDatabaseManager) -> None:
    async with db.transaction():
        await User.insert({"username": "a"})
        await User.insert_many([{"username": "b"}, {"username": "c"}])
        assert await User.update({"age": 5}, {"username": "a"}) == 1
        # The transaction sees its own writes.
        assert await User.count() == 3
    assert await usernames() == ["a", "b", "c"]
    assert await User.fetch_one({"username": "a"}, columns=["age"]) == {"age": 5}


async def test_transaction_yields_usable_object(db: AsyncDatabaseManager) -> None:
    async with db.transaction() as txn:
        assert txn is not None
        await User.insert({"username": "a"})
    assert await usernames() == ["a"]


async def test_rollback_on_exception(db: AsyncDatabaseManager) -> None:
    await User.insert({"username": "before"})
    with pytest.raises(Boom):
        async with db.transaction():
            await User.insert({"username": "x"})
            await User.update({"age": 9}, {"username": "before"})
            await User.delete({"username": "before"})
            assert await User.count() == 1
            raise Boom
    assert await User.fetch() == [{"id": 1, "username": "before", "age": None}]
    await assert_usable(db)


async def test_database_error_inside_transaction_rolls_back(db: AsyncDatabaseManager) -> None:
    with pytest.raises(IntegrityError):
        async with db.transaction():
            await Item.insert({"sku": "a", "name": "same"})
            await Item.insert({"sku": "b", "name": "same"})
    assert await Item.count() == 0
    await assert_usable(db)


async def test_caught_error_inside_transaction_keeps_the_rest(db: AsyncDatabaseManager) -> None:
    async with db.transaction():
        await Item.insert({"sku": "a", "name": "same"})
        with pytest.raises(IntegrityError):
            await Item.insert({"sku": "b", "name": "same"})
        await Item.insert({"sku": "c", "name": "other"})
    assert [r["sku"] for r in await Item.fetch(columns=["sku"], order_by="sku")] == ["a", "c"]


async def test_nested_failure_caught_keeps_outer_rows(db: AsyncDatabaseManager) -> None:
    async with db.transaction():
        await User.insert({"username": "outer-1"})
        with pytest.raises(Boom):
            async with db.transaction():
                await User.insert({"username": "inner"})
                assert await User.count() == 2
                raise Boom
        assert await usernames() == ["outer-1"]
        await User.insert({"username": "outer-2"})
    assert await usernames() == ["outer-1", "outer-2"]


async def test_nested_success_commits_with_outer(db: AsyncDatabaseManager) -> None:
    async with db.transaction():
        await User.insert({"username": "outer"})
        async with db.transaction():
            await User.insert({"username": "inner"})
            async with db.transaction():
                await User.insert({"username": "innermost"})
    assert await usernames() == ["outer", "inner", "innermost"]


async def test_outer_failure_undoes_committed_inner(db: AsyncDatabaseManager) -> None:
    with pytest.raises(Boom):
        async with db.transaction():
            await User.insert({"username": "outer"})
            async with db.transaction():
                await User.insert({"username": "inner"})
            raise Boom
    assert await User.count() == 0
    await assert_usable(db)


async def test_savepoints_can_be_reused_in_sequence(db: AsyncDatabaseManager) -> None:
    async with db.transaction():
        for i in range(4):
            try:
                async with db.transaction():
                    await User.insert({"username": f"u{i}"})
                    if i % 2:
                        raise Boom
            except Boom:
                pass
    assert await usernames() == ["u0", "u2"]


def start_outside_task() -> tuple[asyncio.Event, asyncio.Task[int]]:
    """A task started outside any transaction that inserts a row once the event is set."""
    go = asyncio.Event()

    async def outside() -> int:
        await go.wait()
        return int(await User.insert({"username": "outside"}))

    return go, asyncio.create_task(outside())


async def test_other_task_waits_for_commit(db: AsyncDatabaseManager) -> None:
    go, outside = start_outside_task()
    async with db.transaction():
        await User.insert({"username": "in-txn"})
        go.set()
        # Several round trips inside the transaction: time for the other task's
        # insert to reach the database, where it must wait for this transaction.
        for _ in range(5):
            assert await usernames() == ["in-txn"]
        assert not outside.done()
    assert await asyncio.wait_for(outside, DEADLINE) == 2
    assert await usernames() == ["in-txn", "outside"]


async def test_other_task_is_not_rolled_back_with_the_transaction(
    db: AsyncDatabaseManager,
) -> None:
    go, outside = start_outside_task()
    with pytest.raises(Boom):
        async with db.transaction():
            await User.insert({"username": "in-txn"})
            go.set()
            for _ in range(5):
                assert await usernames() == ["in-txn"]
            raise Boom
    await asyncio.wait_for(outside, DEADLINE)
    assert await usernames() == ["outside"]


async def round_trips_inside(n: int = 5) -> None:
    """Requests of the current transaction: time for other tasks' requests to reach the database."""
    for _ in range(n):
        await User.count()


async def test_two_tasks_with_transactions_do_not_interleave(db: AsyncDatabaseManager) -> None:
    entered = asyncio.Event()
    others_started = asyncio.Event()

    async def first() -> None:
        async with db.transaction():
            await User.insert({"username": "first-1"})
            entered.set()
            await others_started.wait()
            await round_trips_inside()
            # Nothing of the other transaction got in between.
            assert await usernames() == ["first-1"]
            await User.insert({"username": "first-2"})

    async def second() -> None:
        async with db.transaction():
            await User.insert({"username": "second-1"})
            await User.insert({"username": "second-2"})

    task1 = asyncio.create_task(first())
    await entered.wait()
    task2 = asyncio.create_task(second())
    # A plain read from a third task sees committed states only: none of the rows (a local
    # reader does not wait for the open transaction), or all of one transaction's, or both's.
    probe = asyncio.create_task(User.count())
    others_started.set()
    await asyncio.wait_for(asyncio.gather(task1, task2), DEADLINE)
    assert await probe in (0, 2, 4)
    assert await usernames() == ["first-1", "first-2", "second-1", "second-2"]


async def test_tasks_started_inside_a_transaction_join_it(db: AsyncDatabaseManager) -> None:
    with pytest.raises(Boom):
        async with db.transaction():
            await asyncio.gather(*(User.insert({"username": f"c{i}"}) for i in range(3)))
            assert await User.count() == 3
            raise Boom
    assert await User.count() == 0


async def test_cancel_task_inside_transaction(db: AsyncDatabaseManager) -> None:
    entered = asyncio.Event()

    async def worker() -> None:
        async with db.transaction():
            await User.insert({"username": "doomed"})
            entered.set()
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(worker())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.wait_for(User.count(), DEADLINE) == 0
    await assert_usable(db)


async def test_cancel_task_waiting_for_a_transaction(db: AsyncDatabaseManager) -> None:
    entered = asyncio.Event()
    waiter_started = asyncio.Event()
    waiter_queued = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with db.transaction():
            await User.insert({"username": "holder"})
            entered.set()
            await waiter_started.wait()
            await round_trips_inside()
            waiter_queued.set()
            await release.wait()

    async def waiter() -> None:
        async with db.transaction():
            await User.insert({"username": "waiter"})

    task1 = asyncio.create_task(holder())
    await entered.wait()
    task2 = asyncio.create_task(waiter())
    waiter_started.set()
    await waiter_queued.wait()
    assert not task2.done()
    task2.cancel()
    release.set()
    await asyncio.wait_for(task1, DEADLINE)
    with pytest.raises(asyncio.CancelledError):
        await task2
    assert await usernames() == ["holder"]
    await assert_usable(db)


@pytest.mark.parametrize("yields", range(8))
async def test_cancel_mid_request(db: AsyncDatabaseManager, yields: int) -> None:
    rows = [{"username": f"r{i}", "age": i} for i in range(200)]
    task = asyncio.create_task(User.insert_many(rows, chunk_size=50))
    for _ in range(yields):
        await asyncio.sleep(0)
    task.cancel()
    try:
        inserted = await task
    except asyncio.CancelledError:
        inserted = None
    count = await asyncio.wait_for(User.count(), DEADLINE)
    # All or nothing, whatever point the cancellation hit.
    assert count in (0, 200)
    if inserted is not None:
        assert inserted == count == 200
    await assert_usable(db)


@pytest.mark.parametrize("yields", range(8))
async def test_cancel_mid_request_inside_transaction(db: AsyncDatabaseManager, yields: int) -> None:
    async def work() -> None:
        async with db.transaction():
            await User.insert({"username": "first"})
            await User.insert_many([{"username": f"r{i}"} for i in range(100)])
            await User.update({"age": 1}, {"username": "first"})

    task = asyncio.create_task(work())
    for _ in range(yields):
        await asyncio.sleep(0)
    task.cancel()
    cancelled = False
    try:
        await task
    except asyncio.CancelledError:
        cancelled = True
    count = await asyncio.wait_for(User.count(), DEADLINE)
    assert count in (0, 101)
    if not cancelled:
        assert count == 101
    await assert_usable(db)
