"""The ``describe`` op (PROTOCOL.md 7.18): what the engine knows of a table, alike on every
transport."""

from __future__ import annotations

import pytest

from fastquartdb import AsyncDatabaseManager, ValidationError

from .models import Item, User

#: A composite primary key, a unique pair, a foreign key, a default and another tool's type.
MEMBER = {
    "op": "ensure_table",
    "table": "describe_member",
    "columns": [
        {"name": "team", "type": "TEXT", "primary_key": True},
        {"name": "seat", "type": "INTEGER", "primary_key": True},
        {"name": "nick", "type": "TEXT", "nullable": False},
        {"name": "owner", "type": "INTEGER", "references": "user.id"},
        {"name": "level", "type": "INTEGER", "default": 3},
        {"name": "extra", "type": "TEXT"},
    ],
    "unique": [["nick", "team"]],
}


async def test_describe_a_table(db: AsyncDatabaseManager) -> None:
    await db.request(MEMBER)
    described = await db.request({"op": "describe", "table": "describe_member"})
    assert described["name"] == "describe_member"
    assert described["type"] == "table"
    assert described["columns"] == [
        {
            "name": "team",
            "type": "TEXT",
            "affinity": "TEXT",
            "notnull": False,
            "default": None,
            "pk": 1,
            "unique": False,
        },
        {
            "name": "seat",
            "type": "INTEGER",
            "affinity": "INTEGER",
            "notnull": False,
            "default": None,
            "pk": 2,
            "unique": False,
        },
        {
            "name": "nick",
            "type": "TEXT",
            "affinity": "TEXT",
            "notnull": True,
            "default": None,
            "pk": 0,
            "unique": False,
        },
        {
            "name": "owner",
            "type": "INTEGER",
            "affinity": "INTEGER",
            "notnull": False,
            "default": None,
            "pk": 0,
            "unique": False,
        },
        {
            "name": "level",
            "type": "INTEGER",
            "affinity": "INTEGER",
            "notnull": False,
            "default": "3",
            "pk": 0,
            "unique": False,
        },
        {
            "name": "extra",
            "type": "TEXT",
            "affinity": "TEXT",
            "notnull": False,
            "default": None,
            "pk": 0,
            "unique": False,
        },
    ]
    assert described["primary_key"] == ["team", "seat"]
    assert described["rowid_pk"] is False
    # The conflict targets upsert accepts, each in the table's column order.
    assert described["unique"] == [["team", "seat"], ["team", "nick"]]
    assert described["foreign_keys"] == [{"column": "owner", "table": "user", "to": "id"}]
    kinds = [(item["type"], item["name"]) for item in described["sql"]]
    assert kinds[0] == ("table", "describe_member")
    assert all(kind == "index" for kind, _ in kinds[1:]) and len(kinds) >= 2
    assert described["sql"][0]["sql"].startswith('CREATE TABLE "describe_member"')


async def test_describe_agrees_with_what_the_ops_check(db: AsyncDatabaseManager) -> None:
    items = await db.request({"op": "describe", "table": "items"})
    assert [c["name"] for c in items["columns"]] == list(Item.__columns__)
    assert items["primary_key"] == ["sku"] and items["rowid_pk"] is False
    assert ["name"] in items["unique"]
    assert {c["name"]: c["affinity"] for c in items["columns"]}["blob"] == "BLOB"
    user = await db.request({"op": "describe", "table": "user"})
    assert user["primary_key"] == ["id"] and user["rowid_pk"] is True
    assert user["unique"] == [["id"]]
    # A conflict target describe does not list is refused by upsert, and one it lists works.
    with pytest.raises(ValidationError, match="conflict target"):
        await db.request(
            {
                "op": "upsert_many",
                "table": "user",
                "columns": ["username"],
                "rows": [],
                "conflict": ["username"],
            }
        )
    await db.request(
        {
            "op": "upsert_many",
            "table": "items",
            "columns": ["name"],
            "rows": [],
            "conflict": ["name"],
        }
    )


async def test_describe_lists_the_user_tables(db: AsyncDatabaseManager) -> None:
    await User.insert({"username": "ann"}, idempotency_key="describe-1")  # a _fqdb_ table
    listing = await db.request({"op": "describe"})
    names = [entry["name"] for entry in listing]
    assert names == sorted(names)
    assert {"user", "items"} <= set(names)
    assert all(entry["type"] == "table" for entry in listing)
    assert not [n for n in names if n.startswith(("_fqdb_", "sqlite_"))]
    await db.execute("CREATE VIEW describe_adults AS SELECT username FROM user WHERE age >= 18")
    listing = await db.request({"op": "describe"})
    assert {"name": "describe_adults", "type": "view"} in listing
    view = await db.request({"op": "describe", "table": "describe_adults"})
    assert (view["type"], [c["name"] for c in view["columns"]]) == ("view", ["username"])
    assert view["primary_key"] == [] and view["unique"] == []


async def test_describe_an_unknown_table(db: AsyncDatabaseManager) -> None:
    with pytest.raises(ValidationError) as described:
        await db.request({"op": "describe", "table": "nosuch"})
    with pytest.raises(ValidationError) as fetched:
        await db.request({"op": "fetch", "table": "nosuch"})
    assert str(described.value) == str(fetched.value)
    assert str(described.value).startswith("unknown table 'nosuch' (tables: ")
    with pytest.raises(ValidationError, match="invalid table name"):
        await db.request({"op": "describe", "table": "no such; table"})
    with pytest.raises(ValidationError, match="reserved"):
        await db.request({"op": "describe", "table": "sqlite_master"})


async def test_describe_sees_what_migration_added(db: AsyncDatabaseManager) -> None:
    await db.request(MEMBER)
    before = await db.request({"op": "describe", "table": "describe_member"})
    grown = {
        **MEMBER,
        "columns": [*MEMBER["columns"], {"name": "code", "type": "TEXT", "unique": True}],
    }
    assert (await db.request(grown))["added"] == ["code"]
    after = await db.request({"op": "describe", "table": "describe_member"})
    assert after["columns"] == [
        *before["columns"],
        {
            "name": "code",
            "type": "TEXT",
            "affinity": "TEXT",
            "notnull": False,
            "default": None,
            "pk": 0,
            "unique": True,
        },
    ]
    assert sorted(after["unique"]) == sorted([*before["unique"], ["code"]])


async def test_describe_another_tools_table(db: AsyncDatabaseManager) -> None:
    """Types only another tool declares get SQLite's affinity (STRING is NUMERIC)."""
    await db.execute("CREATE TABLE \"other tool\" (k STRING PRIMARY KEY, n, b BLOB DEFAULT x'00')")
    described = await db.request({"op": "describe", "table": "other tool"})
    assert [(c["name"], c["type"], c["affinity"], c["default"]) for c in described["columns"]] == [
        ("k", "STRING", "NUMERIC", None),
        ("n", "", "BLOB", None),
        ("b", "BLOB", "BLOB", "x'00'"),
    ]
    assert described["primary_key"] == ["k"] and described["unique"] == [["k"]]
    assert described["name"] == "other tool"
