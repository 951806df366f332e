"""Additive migration: new columns are added, nothing is dropped, impossible changes are refused."""

from __future__ import annotations

from typing import Any

import pytest

from fastquartdb import AsyncDatabaseManager, BaseModel, Column, IntegrityError, SchemaError

from .models import User


async def table_info(db: AsyncDatabaseManager, table: str) -> list[dict[str, Any]]:
    rows = await db.fetch_all(f'PRAGMA table_info("{table}")')
    return [{k: r[k] for k in ("name", "type", "notnull", "dflt_value", "pk")} for r in rows]


async def reopen(db: AsyncDatabaseManager, transport: str) -> AsyncDatabaseManager:
    path = db.path
    await AsyncDatabaseManager.close()
    return await AsyncDatabaseManager.init_engine(path, mode=transport)


async def test_added_column_on_init(db: AsyncDatabaseManager, transport: str) -> None:
    await User.insert_many([{"username": "alice", "age": 30}, {"username": "bob"}])

    class User2(BaseModel):  # the same table, one column more
        __tablename__ = "user"
        id = Column("INTEGER", primary_key=True)
        username = Column("TEXT", nullable=False)
        age = Column("INTEGER")
        email = Column("TEXT")

    db = await reopen(db, transport)
    assert [c["name"] for c in await table_info(db, "user")] == ["id", "username", "age", "email"]
    assert await User2.fetch(order_by="id") == [
        {"id": 1, "username": "alice", "age": 30, "email": None},
        {"id": 2, "username": "bob", "age": None, "email": None},
    ]
    assert await User2.update({"email": "a@example.com"}, {"username": "alice"}) == 1
    pk = await User2.insert({"username": "carol", "email": "c@example.com"})
    assert await User2.fetch({"email": ("LIKE", "%@example.com")}, columns=["id"]) == [
        {"id": 1},
        {"id": pk},
    ]


async def test_added_column_on_first_use(db: AsyncDatabaseManager) -> None:
    await User.insert({"username": "alice", "age": 30})

    class User2(BaseModel):
        __tablename__ = "user"
        id = Column("INTEGER", primary_key=True)
        username = Column("TEXT", nullable=False)
        age = Column("INTEGER")
        score = Column("REAL", default=1.5)
        vip = Column("BOOLEAN", nullable=False, default=False)
        tags = Column("JSON", index=True)
        code = Column("TEXT", unique=True)

    # Existing rows get the new columns' defaults.
    assert await User2.fetch() == [
        {
            "id": 1,
            "username": "alice",
            "age": 30,
            "score": 1.5,
            "vip": False,
            "tags": None,
            "code": None,
        }
    ]
    await User2.insert({"username": "bob", "vip": True, "tags": ["x"], "code": "B"})
    assert await User2.fetch({"vip": True}, columns=["username", "tags", "score"]) == [
        {"username": "bob", "tags": ["x"], "score": 1.5}
    ]
    # unique=True on an added column is enforced.
    with pytest.raises(IntegrityError):
        await User2.insert({"username": "carol", "code": "B"})
    indexes = await db.fetch_all(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'user'"
    )
    assert len(indexes) == 2  # one for tags, one (unique) for code
    # The old model still works on the wider table.
    assert await User.count() == 2
    assert await User.insert({"username": "dave"}) == 3


async def test_migration_is_idempotent(db: AsyncDatabaseManager, transport: str) -> None:
    class User2(BaseModel):
        __tablename__ = "user"
        id = Column("INTEGER", primary_key=True)
        username = Column("TEXT", nullable=False)
        age = Column("INTEGER")
        email = Column("TEXT", index=True)

    await User2.insert({"username": "a", "email": "e"})
    before = await db.fetch_all("SELECT name, sql FROM sqlite_master ORDER BY name")
    for _ in range(2):
        db = await reopen(db, transport)
        assert await User2.fetch(columns=["username", "email"]) == [{"username": "a", "email": "e"}]
    assert await db.fetch_all("SELECT name, sql FROM sqlite_master ORDER BY name") == before


async def test_nothing_is_dropped(db: AsyncDatabaseManager, transport: str) -> None:
    await User.insert({"username": "alice", "age": 30})
    before = await table_info(db, "user")

    class Slim(BaseModel):  # 'age' left out of the model
        __tablename__ = "user"
        id = Column("INTEGER", primary_key=True)
        username = Column("TEXT", nullable=False)

    db = await reopen(db, transport)
    assert await table_info(db, "user") == before
    assert await Slim.insert({"username": "bob"}) == 2
    assert await Slim.count() == 2
    assert await db.fetch_all("SELECT username, age FROM user ORDER BY id") == [
        {"username": "alice", "age": 30},
        {"username": "bob", "age": None},
    ]

    # A model that no longer exists keeps its table too.
    AsyncDatabaseManager._models.pop("items")
    db = await reopen(db, transport)
    tables = await db.fetch_all("SELECT name FROM sqlite_master WHERE type = 'table'")
    assert {"user", "items"} <= {t["name"] for t in tables}


@pytest.mark.parametrize(
    ("column", "declared", "file_type"),
    [
        ("age", "TEXT", "INTEGER"),
        ("age", "REAL", "INTEGER"),
        ("age", "BOOLEAN", "INTEGER"),
        ("username", "INTEGER", "TEXT"),
        ("username", "JSON", "TEXT"),
        ("username", "DATETIME", "TEXT"),
    ],
)
async def test_changed_type_is_a_schema_error(
    db: AsyncDatabaseManager, column: str, declared: str, file_type: str
) -> None:
    await User.insert({"username": "alice", "age": 30})
    before = await db.fetch_all("SELECT name, sql FROM sqlite_master ORDER BY name")
    columns = {
        "id": Column("INTEGER", primary_key=True),
        "username": Column("TEXT", nullable=False),
        "age": Column("INTEGER"),
    }
    columns[column] = Column(declared)
    Changed = type("Changed", (BaseModel,), {"__tablename__": "user", **columns})

    with pytest.raises(SchemaError) as info:
        await Changed.fetch()
    message = str(info.value)
    assert f"column {column!r}" in message
    assert "'user'" in message
    assert file_type in message and declared in message
    assert await db.fetch_all("SELECT name, sql FROM sqlite_master ORDER BY name") == before
    # Every use keeps failing the same way; the old model still works.
    with pytest.raises(SchemaError):
        await Changed.count()
    assert await User.fetch(columns=["username", "age"]) == [{"username": "alice", "age": 30}]


async def test_changed_type_fails_init_engine(db: AsyncDatabaseManager, transport: str) -> None:
    class Changed(BaseModel):
        __tablename__ = "user"
        id = Column("INTEGER", primary_key=True)
        username = Column("TEXT", nullable=False)
        age = Column("TEXT")

    path = db.path
    await AsyncDatabaseManager.close()
    with pytest.raises(SchemaError, match="column 'age'"):
        await AsyncDatabaseManager.init_engine(path, mode=transport)


async def test_changed_primary_key_is_a_schema_error(db: AsyncDatabaseManager) -> None:
    await User.insert({"username": "alice"})
    before = await db.fetch_all("SELECT name, sql FROM sqlite_master ORDER BY name")

    class ByName(BaseModel):
        __tablename__ = "user"
        id = Column("INTEGER")
        username = Column("TEXT", primary_key=True)
        age = Column("INTEGER")

    with pytest.raises(SchemaError) as info:
        await ByName.fetch()
    assert "column 'id'" in str(info.value)
    assert "primary key" in str(info.value)

    class NoKey(BaseModel):
        __tablename__ = "user"
        id = Column("INTEGER")
        username = Column("TEXT", nullable=False)

    with pytest.raises(SchemaError, match="column 'id'"):
        await NoKey.fetch()
    assert await db.fetch_all("SELECT name, sql FROM sqlite_master ORDER BY name") == before


async def test_added_primary_key_column_is_a_schema_error(db: AsyncDatabaseManager) -> None:
    class TwoKeys(BaseModel):
        __tablename__ = "user"
        id = Column("INTEGER", primary_key=True)
        username = Column("TEXT", nullable=False)
        age = Column("INTEGER")
        tenant = Column("INTEGER", primary_key=True)

    with pytest.raises(SchemaError, match="'tenant'"):
        await TwoKeys.fetch()


async def test_added_not_null_without_default_is_a_schema_error(
    db: AsyncDatabaseManager,
) -> None:
    await User.insert({"username": "alice"})
    before = await table_info(db, "user")

    class Strict(BaseModel):
        __tablename__ = "user"
        id = Column("INTEGER", primary_key=True)
        username = Column("TEXT", nullable=False)
        age = Column("INTEGER")
        email = Column("TEXT", nullable=False)

    with pytest.raises(SchemaError) as info:
        await Strict.fetch()
    message = str(info.value)
    assert "NOT NULL column 'email'" in message
    assert "default" in message
    assert await table_info(db, "user") == before

    class WithDefault(BaseModel):
        __tablename__ = "user"
        id = Column("INTEGER", primary_key=True)
        username = Column("TEXT", nullable=False)
        age = Column("INTEGER")
        email = Column("TEXT", nullable=False, default="unknown")

    assert await WithDefault.fetch(columns=["username", "email"]) == [
        {"username": "alice", "email": "unknown"}
    ]


async def test_failed_migration_adds_nothing(db: AsyncDatabaseManager) -> None:
    # A model change is all or nothing: a later bad column keeps earlier new ones out.
    before = await table_info(db, "user")

    class Half(BaseModel):
        __tablename__ = "user"
        id = Column("INTEGER", primary_key=True)
        username = Column("TEXT", nullable=False)
        age = Column("INTEGER")
        good = Column("TEXT")
        bad = Column("TEXT", nullable=False)

    with pytest.raises(SchemaError, match="'bad'"):
        await Half.fetch()
    assert await table_info(db, "user") == before


async def test_unique_on_an_existing_column_is_added(db: AsyncDatabaseManager) -> None:
    # README: constraints are "created with the table and added later like columns".
    await User.insert({"username": "alice", "age": 30})

    class User2(BaseModel):
        __tablename__ = "user"
        id = Column("INTEGER", primary_key=True)
        username = Column("TEXT", nullable=False, unique=True)
        age = Column("INTEGER")

    await User2.upsert({"username": "alice", "age": 31}, conflict=["username"])
    assert await User2.fetch(columns=["username", "age"]) == [{"username": "alice", "age": 31}]
    with pytest.raises(IntegrityError):
        await User2.insert({"username": "alice"})


async def test_unique_on_a_column_with_duplicates_is_a_schema_error(
    db: AsyncDatabaseManager,
) -> None:
    await User.insert_many([{"username": "alice"}, {"username": "alice"}])

    class User2(BaseModel):
        __tablename__ = "user"
        id = Column("INTEGER", primary_key=True)
        username = Column("TEXT", nullable=False, unique=True)
        age = Column("INTEGER")

    with pytest.raises(SchemaError, match="duplicate values"):
        await User2.count()
    assert await User.count() == 2  # nothing changed
