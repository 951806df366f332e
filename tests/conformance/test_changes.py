"""Change feeds on every transport: the same changes, in the same order, with the same types."""

from __future__ import annotations

import asyncio
import datetime as dt
from contextlib import aclosing
from typing import Any

import pytest

from fastquartdb import AsyncDatabaseManager, BaseModel, Change, Column, InterfaceError


class Item(BaseModel):
    __tablename__ = "feed_item"  # tests/conformance/models.py has an "item" model
    __changes__ = {"old": True}
    id = Column("INTEGER", primary_key=True)
    name = Column("TEXT", nullable=False)
    qty = Column("INTEGER")
    when = Column("DATE")
    blob = Column("BLOB")


async def take(feed: Any, count: int) -> list[Change]:
    got: list[Change] = []
    async with aclosing(feed) as changes:
        async for change in changes:
            got.append(change)
            if len(got) == count:
                break
    return got


async def test_backlog_then_live_changes_with_no_gap(db: AsyncDatabaseManager) -> None:
    if db.on_cluster:  # directly or through a per-host daemon
        with pytest.raises(InterfaceError, match="not available on a dqlite cluster"):
            db.changes(["feed_item"])
        return
    await Item.insert({"name": "a", "qty": 1, "when": dt.date(2026, 1, 2), "blob": b"\x00\x01"})
    await Item.update({"qty": 2}, {"name": "a"})
    follower = asyncio.create_task(take(Item.changes(after=0), 5))
    await Item.insert_many([{"name": "b"}, {"name": "c"}])
    await db.execute("DELETE FROM feed_item WHERE name = 'b'")
    got = await asyncio.wait_for(follower, 30)
    assert [(c.seq, c.table, c.op, c.pk) for c in got] == [
        (1, "feed_item", "insert", 1),
        (2, "feed_item", "update", 1),
        (3, "feed_item", "insert", 2),
        (4, "feed_item", "insert", 3),
        (5, "feed_item", "delete", 2),
    ]
    # The model's types come back: a date, bytes; old values as the model logs them.
    assert got[0].row == {
        "id": 1,
        "name": "a",
        "qty": 1,
        "when": dt.date(2026, 1, 2),
        "blob": b"\x00\x01",
    }
    assert got[1].old is not None and got[1].old["qty"] == 1 and got[1].row["qty"] == 2
    assert got[4].row is None and got[4].old is not None and got[4].old["name"] == "b"
    # Resuming from a cursor, a filter, and the whole log through db.changes.
    (after_three,) = await take(Item.changes(after=3), 1)
    assert after_three.seq == 4
    big = await take(Item.changes(after=0, filters={"qty": [(">=", 2)]}), 1)
    assert [(c.seq, c.op) for c in big] == [(2, "update")]
    raw = await take(db.changes(["feed_item"], after="1"), 4)  # a Last-Event-ID is text
    assert [c.seq for c in raw] == [2, 3, 4, 5]
    assert raw[0].row is not None and raw[0].row["blob"] == b"\x00\x01"  # untyped: bytes too


async def test_now_starts_at_the_tip(db: AsyncDatabaseManager) -> None:
    if db.on_cluster:  # directly or through a per-host daemon
        pytest.skip("not on dqlite: change feeds are not available there (README)")
    await Item.insert({"name": "old"})
    feed = Item.changes(after="now")
    follower = asyncio.create_task(take(feed, 1))
    # The feed reads the tip when it starts: write until the follower has its change.
    for i in range(200):
        await Item.insert({"name": f"new{i}"})
        await asyncio.sleep(0.01)
        if follower.done():
            break
    (change,) = await asyncio.wait_for(follower, 30)
    assert change.row is not None and change.row["name"].startswith("new")


async def test_every_captured_table_by_default(db: AsyncDatabaseManager) -> None:
    if db.on_cluster:  # directly or through a per-host daemon
        pytest.skip("not on dqlite: change feeds are not available there (README)")
    await Item.insert({"name": "x"})
    got = await take(db.changes(None, after=None), 1)  # every captured table
    assert got[0].table == "feed_item"
    assert AsyncDatabaseManager.get() is db
