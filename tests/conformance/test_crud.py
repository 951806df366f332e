"""The CRUD contract: insert, fetch, fetch_one, count, insert_many, update, delete."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastquartdb import AsyncDatabaseManager, BaseModel, Column, IntegrityError, ValidationError

from .models import Item, User

PEOPLE = [
    {"username": "alice", "age": 30},
    {"username": "bob", "age": 25},
    {"username": "carol", "age": 35},
    {"username": "dave", "age": 25},
    {"username": "erin", "age": None},
]


async def _people() -> list[int]:
    return [await User.insert(row) for row in PEOPLE]


# ------------------------------------------------------------------ insert


async def test_insert_returns_rowid(db: AsyncDatabaseManager) -> None:
    assert await User.insert({"username": "alice", "age": 30}) == 1
    assert await User.insert({"username": "bob"}) == 2
    # An explicit integer key is the rowid and is what comes back.
    assert await User.insert({"id": 40, "username": "carol"}) == 40
    assert await User.insert({"username": "dave"}) == 41
    assert await User.fetch(order_by="id") == [
        {"id": 1, "username": "alice", "age": 30},
        {"id": 2, "username": "bob", "age": None},
        {"id": 40, "username": "carol", "age": None},
        {"id": 41, "username": "dave", "age": None},
    ]


async def test_insert_returns_non_integer_primary_key(db: AsyncDatabaseManager) -> None:
    assert await Item.insert({"sku": "A-1", "name": "anvil"}) == "A-1"
    assert await Item.insert({"sku": "B-2", "name": "bucket"}) == "B-2"
    assert await Item.fetch(columns=["sku", "name"], order_by="sku") == [
        {"sku": "A-1", "name": "anvil"},
        {"sku": "B-2", "name": "bucket"},
    ]


async def test_insert_with_defaults_only(db: AsyncDatabaseManager) -> None:
    class Note(BaseModel):
        id = Column("INTEGER", primary_key=True)
        body = Column("TEXT", default="empty")

    assert await Note.insert({}) == 1
    assert await Note.fetch() == [{"id": 1, "body": "empty"}]


# ------------------------------------------------------------------ fetch


async def test_fetch_all_rows_in_table_order(db: AsyncDatabaseManager) -> None:
    ids = await _people()
    rows = await User.fetch(order_by="id")
    assert rows == [{"id": i, **row} for i, row in zip(ids, PEOPLE)]
    assert all(list(row) == ["id", "username", "age"] for row in rows)


async def test_fetch_columns(db: AsyncDatabaseManager) -> None:
    await _people()
    rows = await User.fetch(columns=["username"], order_by="username")
    assert rows == [
        {"username": p["username"]} for p in sorted(PEOPLE, key=lambda p: p["username"])
    ]
    # The order asked for is the order returned.
    rows = await User.fetch(columns=["age", "id"], filters={"username": "bob"})
    assert rows == [{"age": 25, "id": 2}]
    assert list(rows[0]) == ["age", "id"]


async def test_fetch_order_by_descending_then_ascending(db: AsyncDatabaseManager) -> None:
    await _people()
    rows = await User.fetch(
        filters={"age": ("IS NOT", None)}, columns=["username"], order_by=["-age", "username"]
    )
    assert [r["username"] for r in rows] == ["carol", "alice", "bob", "dave"]
    rows = await User.fetch(
        filters={"age": ("IS NOT", None)}, columns=["username"], order_by=["age", "-username"]
    )
    assert [r["username"] for r in rows] == ["dave", "bob", "alice", "carol"]
    # A leading '+' means ascending too.
    rows = await User.fetch(columns=["username"], order_by=["+username"], limit=2)
    assert [r["username"] for r in rows] == ["alice", "bob"]


async def test_fetch_limit_and_offset(db: AsyncDatabaseManager) -> None:
    await _people()
    names = lambda rows: [r["username"] for r in rows]  # noqa: E731
    assert names(await User.fetch(order_by="id", limit=2)) == ["alice", "bob"]
    assert names(await User.fetch(order_by="id", limit=2, offset=2)) == ["carol", "dave"]
    assert names(await User.fetch(order_by="id", offset=3)) == ["dave", "erin"]
    assert names(await User.fetch(order_by="id", limit=10, offset=4)) == ["erin"]
    assert await User.fetch(order_by="id", offset=5) == []
    assert await User.fetch(limit=0) == []


async def test_fetch_with_no_match_is_empty_list(db: AsyncDatabaseManager) -> None:
    assert await User.fetch() == []
    await _people()
    assert await User.fetch(filters={"username": "zed"}) == []


async def test_fetch_one(db: AsyncDatabaseManager) -> None:
    assert await User.fetch_one() is None
    await _people()
    assert await User.fetch_one(filters={"username": "carol"}) == {
        "id": 3,
        "username": "carol",
        "age": 35,
    }
    assert await User.fetch_one(filters={"age": 25}, columns=["username"], order_by="-id") == {
        "username": "dave"
    }
    assert await User.fetch_one(order_by="id", offset=1, columns=["id"]) == {"id": 2}
    assert await User.fetch_one(filters={"username": "zed"}) is None


async def test_count(db: AsyncDatabaseManager) -> None:
    assert await User.count() == 0
    await _people()
    assert await User.count() == 5
    assert await User.count({"age": 25}) == 2
    assert await User.count({"age": None}) == 1
    assert await User.count({"age": [(">", 26)]}) == 2
    assert await User.count([{"age": 30}, {"username": "erin"}]) == 2


# ------------------------------------------------------------------ insert_many


async def test_insert_many_returns_count(db: AsyncDatabaseManager) -> None:
    assert await User.insert_many(PEOPLE) == 5
    assert await User.fetch(order_by="id") == [{"id": i + 1, **p} for i, p in enumerate(PEOPLE)]


async def test_insert_many_empty(db: AsyncDatabaseManager) -> None:
    assert await User.insert_many([]) == 0
    assert await User.count() == 0


async def test_insert_many_chunks_insert_every_row(db: AsyncDatabaseManager) -> None:
    rows = [{"username": f"u{i}", "age": i} for i in range(10)]
    assert await User.insert_many(rows, chunk_size=3) == 10
    assert await User.fetch(columns=["username", "age"], order_by="age") == rows


async def test_insert_many_takes_a_generator(db: AsyncDatabaseManager) -> None:
    rows = ({"username": f"g{i}"} for i in range(7))
    assert await User.insert_many(rows, chunk_size=2) == 7
    assert await User.count() == 7


async def test_insert_many_rows_with_different_keys(db: AsyncDatabaseManager) -> None:
    rows: list[dict[str, Any]] = [
        {"username": "a", "age": 1},
        {"username": "b"},
        {"age": 3, "username": "c"},
        {"username": "d", "id": 100},
        {"username": "e", "age": 5},
    ]
    assert await User.insert_many(rows, chunk_size=2) == 5
    assert await User.fetch(order_by="username") == [
        {"id": 1, "username": "a", "age": 1},
        {"id": 2, "username": "b", "age": None},
        {"id": 3, "username": "c", "age": 3},
        {"id": 100, "username": "d", "age": None},
        {"id": 101, "username": "e", "age": 5},
    ]


async def test_insert_many_applies_defaults(db: AsyncDatabaseManager) -> None:
    assert await Item.insert_many([{"sku": "a", "name": "A"}, {"sku": "b", "name": "B"}]) == 2
    rows = await Item.fetch(columns=["sku", "price", "active"], order_by="sku")
    assert rows == [
        {"sku": "a", "price": 0.0, "active": True},
        {"sku": "b", "price": 0.0, "active": True},
    ]


async def test_insert_many_is_all_or_nothing_across_chunks(db: AsyncDatabaseManager) -> None:
    rows = [{"sku": f"s{i}", "name": f"n{i}"} for i in range(10)]
    rows[8]["name"] = "n1"  # a UNIQUE violation in the third chunk
    with pytest.raises(IntegrityError, match="UNIQUE"):
        await Item.insert_many(rows, chunk_size=3)
    assert await Item.count() == 0
    # The database is usable afterwards and the fixed rows go in.
    rows[8]["name"] = "n8"
    assert await Item.insert_many(rows, chunk_size=3) == 10
    assert await Item.count() == 10


async def test_insert_many_bad_value_in_a_later_chunk_sends_nothing_lasting(
    db: AsyncDatabaseManager,
) -> None:
    # Through a daemon the first chunks are already sent when the third one's row 8
    # turns out to be invalid: the transaction rolls them back.
    rows = [{"sku": f"s{i}", "name": f"n{i}"} for i in range(10)]
    rows[8]["name"] = {"not": "text"}
    with pytest.raises(ValidationError, match="name"):
        await Item.insert_many(rows, chunk_size=3)
    assert await Item.count() == 0
    rows[8]["name"] = "n8"
    assert await Item.insert_many(rows, chunk_size=3) == 10
    assert sorted(r["sku"] for r in await Item.fetch()) == sorted(f"s{i}" for i in range(10))


async def test_insert_many_single_chunk_is_all_or_nothing(db: AsyncDatabaseManager) -> None:
    rows = [{"username": "a"}, {"username": "b"}, {"username": None}]
    with pytest.raises(IntegrityError, match="NOT NULL"):
        await User.insert_many(rows)
    assert await User.count() == 0


# ------------------------------------------------------------------ update / delete


async def test_update_returns_rows_changed(db: AsyncDatabaseManager) -> None:
    await _people()
    assert await User.update({"age": 26}, {"age": 25}) == 2
    assert await User.count({"age": 26}) == 2
    assert await User.update({"age": 99}, {"username": "zed"}) == 0
    assert await User.update({"username": "Alice", "age": 31}, {"id": 1}) == 1
    assert await User.fetch_one({"id": 1}) == {"id": 1, "username": "Alice", "age": 31}
    # Other rows untouched.
    assert await User.fetch_one({"id": 3}) == {"id": 3, "username": "carol", "age": 35}


async def test_delete_returns_rows_deleted(db: AsyncDatabaseManager) -> None:
    await _people()
    assert await User.delete({"age": [("<", 30)]}) == 2
    assert await User.delete({"age": [("<", 30)]}) == 0
    assert [r["username"] for r in await User.fetch(order_by="id")] == ["alice", "carol", "erin"]


@pytest.mark.parametrize("filters", [None, {}, [], [{}], [{"age": 1}, {}]])
async def test_update_and_delete_without_filters_refuse(
    db: AsyncDatabaseManager, filters: Any
) -> None:
    await _people()
    with pytest.raises(ValidationError, match="all_rows=True"):
        await User.update({"age": 1}, filters)
    with pytest.raises(ValidationError, match="all_rows=True"):
        await User.delete(filters)
    with pytest.raises(ValidationError, match="all_rows=True"):
        await User.delete()
    assert await User.count() == 5
    assert await User.count({"age": 1}) == 0


async def test_update_and_delete_all_rows_when_asked(db: AsyncDatabaseManager) -> None:
    await _people()
    assert await User.update({"age": 1}, all_rows=True) == 5
    assert await User.count({"age": 1}) == 5
    assert await User.delete(all_rows=True) == 5
    assert await User.count() == 0


async def test_all_rows_with_filters_still_filters(db: AsyncDatabaseManager) -> None:
    await _people()
    assert await User.delete({"age": 25}, all_rows=True) == 2
    assert await User.count() == 3


# ------------------------------------------------------------------ tables


async def _tables(db: AsyncDatabaseManager) -> list[str]:
    rows = await db.fetch_all(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )
    return sorted(r["name"] for r in rows)


async def test_init_engine_creates_tables_of_defined_models(db: AsyncDatabaseManager) -> None:
    assert {"user", "items"} <= set(await _tables(db))


async def test_model_defined_later_gets_its_table_on_first_use_once(
    db: AsyncDatabaseManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    real = db.transport.request

    async def counting(request: dict[str, Any]) -> Any:
        sent.append(request.get("op"))
        return await real(request)

    monkeypatch.setattr(db.transport, "request", counting)

    class Late(BaseModel):
        id = Column("INTEGER", primary_key=True)
        label = Column("TEXT")

    assert "late" not in await _tables(db)
    # Many first uses at once share one table creation.
    ids = await asyncio.gather(*(Late.insert({"label": f"l{i}"}) for i in range(5)))
    assert sorted(ids) == [1, 2, 3, 4, 5]
    assert await Late.count() == 5
    assert await Late.fetch(filters={"id": 1}) == [{"id": 1, "label": "l0"}]
    assert "late" in await _tables(db)
    assert sent.count("ensure_table") == 1


async def test_table_name_defaults_to_lowercased_class_name(db: AsyncDatabaseManager) -> None:
    class CamelCase(BaseModel):
        id = Column("INTEGER", primary_key=True)

    assert CamelCase.__tablename__ == "camelcase"
    await CamelCase.insert({})
    assert "camelcase" in await _tables(db)
    assert await db.fetch_all('SELECT id FROM "camelcase"') == [{"id": 1}]


async def test_rows_are_plain_dicts(db: AsyncDatabaseManager) -> None:
    await _people()
    rows = await User.fetch()
    assert type(rows) is list
    assert all(type(row) is dict for row in rows)
    assert type(await User.fetch_one()) is dict
