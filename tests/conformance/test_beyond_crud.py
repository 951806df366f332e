"""Issue 5 on every transport: upsert, aggregation, joins, serialization, constraints,
streaming, raw SQL and keyset pages."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest

from fastquartdb import (
    AsyncDatabaseManager,
    BaseModel,
    Column,
    IntegrityError,
    ProgrammingError,
    ValidationError,
)


class Person(BaseModel):
    id = Column("INTEGER", primary_key=True)
    username = Column("TEXT", nullable=False, unique=True)
    age = Column("INTEGER", check="age >= 0")
    team = Column("TEXT")
    born = Column("DATE")
    seen = Column("DATETIME")
    avatar = Column("BLOB")
    prefs = Column("JSON")


class Article(BaseModel):
    id = Column("INTEGER", primary_key=True)
    person_id = Column("INTEGER", references="person.id", on_delete="cascade")
    title = Column("TEXT", nullable=False)

    __indexes__ = [("person_id", "title")]


class Seat(BaseModel):
    id = Column("INTEGER", primary_key=True)
    room = Column("TEXT", nullable=False)
    number = Column("INTEGER", nullable=False)
    holder = Column("TEXT")

    __unique_together__ = [("room", "number")]


async def _people() -> dict[str, int]:
    ids = {}
    for name, age, team in [("alice", 30, "red"), ("bob", 20, "red"), ("carol", 40, "blue")]:
        ids[name] = await Person.insert({"username": name, "age": age, "team": team})
    return ids


# ------------------------------------------------------------------ upsert


async def test_upsert_inserts_then_updates(db: AsyncDatabaseManager) -> None:
    first = await Person.upsert(
        {"username": "alice", "age": 30, "team": "red"}, conflict=["username"]
    )
    again = await Person.upsert(
        {"username": "alice", "age": 31, "team": "blue"}, conflict="username"
    )
    assert first == again == 1
    assert await Person.fetch(columns=["username", "age", "team"]) == [
        {"username": "alice", "age": 31, "team": "blue"}
    ]


async def test_upsert_update_limits_changed_columns(db: AsyncDatabaseManager) -> None:
    await Person.insert({"username": "alice", "age": 30, "team": "red"})
    await Person.upsert(
        {"username": "alice", "age": 99, "team": "green"}, conflict=["username"], update=["age"]
    )
    assert await Person.fetch_one({"username": "alice"}, columns=["age", "team"]) == {
        "age": 99,
        "team": "red",
    }


async def test_upsert_composite_unique_and_many(db: AsyncDatabaseManager) -> None:
    rows = [{"room": "a", "number": n, "holder": f"h{n}"} for n in range(5)]
    assert await Seat.upsert_many(rows, conflict=["room", "number"]) == 5
    changed = [{"room": "a", "number": n, "holder": "new"} for n in range(3, 7)]
    assert await Seat.upsert_many(changed, conflict=["room", "number"], chunk_size=2) == 4
    seats = await Seat.fetch(order_by=["number"], columns=["number", "holder"])
    assert seats == [
        {"number": 0, "holder": "h0"},
        {"number": 1, "holder": "h1"},
        {"number": 2, "holder": "h2"},
        {"number": 3, "holder": "new"},
        {"number": 4, "holder": "new"},
        {"number": 5, "holder": "new"},
        {"number": 6, "holder": "new"},
    ]


async def test_upsert_conflict_target_must_be_unique(db: AsyncDatabaseManager) -> None:
    with pytest.raises(ValidationError, match=r"conflict target \(team\) is not the primary key"):
        await Person.upsert({"username": "x", "team": "red"}, conflict=["team"])
    with pytest.raises(ValidationError, match="unique=True"):
        await Seat.upsert({"room": "a", "number": 1}, conflict=["room"])
    with pytest.raises(ValidationError, match="unknown column 'nope'"):
        await Person.upsert({"username": "x"}, conflict=["nope"])
    assert await Person.count() == 0


async def test_insert_on_conflict_ignore(db: AsyncDatabaseManager) -> None:
    assert await Person.insert({"username": "alice", "age": 1}) == 1
    assert await Person.insert({"username": "alice", "age": 2}, on_conflict="ignore") is None
    assert await Person.insert({"username": "bob", "age": 3}, on_conflict="ignore") == 2
    assert [r["age"] for r in await Person.fetch(order_by="id")] == [1, 3]
    with pytest.raises(ValidationError, match="on_conflict"):
        await Person.insert({"username": "c"}, on_conflict="replace")


# ------------------------------------------------------------------ counting, aggregation


async def test_count_exists_distinct(db: AsyncDatabaseManager) -> None:
    await _people()
    assert await Person.count() == 3
    assert await Person.count({"team": "red"}) == 2
    assert await Person.exists({"age": [(">", 35)]}) is True
    assert await Person.exists({"age": [(">", 95)]}) is False
    assert await Person.distinct("team") == ["blue", "red"]
    assert await Person.distinct("team", {"age": [("<", 35)]}) == ["red"]


async def test_aggregate_group_having_order(db: AsyncDatabaseManager) -> None:
    await _people()
    await Person.insert({"username": "dan", "age": 50, "team": "blue"})
    await Person.insert({"username": "eve", "age": 60, "team": "green"})
    rows = await Person.aggregate(
        {"n": ("count", "*"), "avg_age": ("avg", "age"), "oldest": ("max", "age")},
        group_by=["team"],
        having={"n": [(">", 1)]},
        order_by=["-avg_age"],
    )
    assert rows == [
        {"team": "blue", "n": 2, "avg_age": 45.0, "oldest": 50},
        {"team": "red", "n": 2, "avg_age": 25.0, "oldest": 30},
    ]
    total = await Person.aggregate(
        {"total": ("sum", "age"), "names": ("group_concat", "username")}, filters={"team": "red"}
    )
    assert total[0]["total"] == 50
    assert sorted(total[0]["names"].split(",")) == ["alice", "bob"]


async def test_aggregate_names_are_checked(db: AsyncDatabaseManager) -> None:
    with pytest.raises(ValidationError, match="unknown aggregate function 'median'"):
        await Person.aggregate({"m": ("median", "age")})
    with pytest.raises(ValidationError, match="unknown column 'agee'"):
        await Person.aggregate({"m": ("max", "agee")})
    with pytest.raises(ValidationError, match="only count takes"):
        await Person.aggregate({"m": ("sum", "*")})
    with pytest.raises(ValidationError, match="invalid aggregate name"):
        await Person.aggregate({"n; DROP TABLE person": ("count", "*")})
    with pytest.raises(ValidationError, match="unknown column"):
        await Person.aggregate({"n": ("count", "*")}, group_by=["nope"])


# ------------------------------------------------------------------ joins and foreign keys


async def test_join_inner_left_and_qualified_filters(db: AsyncDatabaseManager) -> None:
    ids = await _people()
    await Article.insert_many(
        [
            {"person_id": ids["alice"], "title": "A1"},
            {"person_id": ids["alice"], "title": "A2"},
            {"person_id": ids["bob"], "title": "B1"},
        ]
    )
    rows = await Article.fetch(
        join=[Person],
        columns=["article.title", "person.username"],
        filters={"person.age": [(">", 25)]},
        order_by=["article.title"],
    )
    assert rows == [
        {"article.title": "A1", "person.username": "alice"},
        {"article.title": "A2", "person.username": "alice"},
    ]
    left = await Person.fetch(
        join=[(Article, "left")],
        columns=["username", "article.title"],
        order_by=["username", "article.title"],
    )
    assert left == [
        {"username": "alice", "article.title": "A1"},
        {"username": "alice", "article.title": "A2"},
        {"username": "bob", "article.title": "B1"},
        {"username": "carol", "article.title": None},
    ]
    per_person = await Person.aggregate(
        {"articles": ("count", "article.id")},
        join=[(Article, "left")],
        group_by=["username"],
        order_by=["username"],
    )
    assert [r["articles"] for r in per_person] == [2, 1, 0]


async def test_join_errors(db: AsyncDatabaseManager) -> None:
    class Lonely(BaseModel):
        id = Column("INTEGER", primary_key=True)

    await Lonely.count()
    with pytest.raises(ValidationError, match="cannot join table 'person': no foreign key"):
        await Lonely.fetch(join=[Person])
    with pytest.raises(ValidationError, match="join takes model classes"):
        await Article.fetch(join=["person"])
    with pytest.raises(ValidationError, match="join kind"):
        await Article.fetch(join=[(Person, "outer")])
    with pytest.raises(ValidationError, match=r"unknown column 'person\.nope'"):
        await Article.fetch(join=[Person], columns=["person.nope"])


async def test_foreign_keys_are_enforced_and_cascade(db: AsyncDatabaseManager) -> None:
    ids = await _people()
    with pytest.raises(IntegrityError, match="FOREIGN KEY"):
        await Article.insert({"person_id": 999, "title": "orphan"})
    await Article.insert({"person_id": ids["alice"], "title": "A1"})
    assert await Person.delete({"id": ids["alice"]}) == 1
    assert await Article.count() == 0


# ------------------------------------------------------------------ serialization, instances


async def test_instances_and_json(db: AsyncDatabaseManager) -> None:
    seen = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    pk = await Person.insert(
        {
            "username": "alice",
            "age": 30,
            "born": dt.date(1994, 1, 2),
            "seen": seen,
            "avatar": b"\x00\xff",
            "prefs": {"theme": "dark", "tags": [1, 2]},
        }
    )
    person = await Person.get(pk)
    assert person is not None and person.username == "alice" and person.seen == seen
    assert person.to_dict()["prefs"] == {"theme": "dark", "tags": [1, 2]}
    doc = json.loads(person.json())
    assert doc["born"] == "1994-01-02"
    assert doc["seen"] == "2024-05-06T07:08:09+00:00"
    assert base64.b64decode(doc["avatar"]) == b"\x00\xff"
    assert doc["prefs"] == {"theme": "dark", "tags": [1, 2]}
    listing = json.loads(Person.json(await Person.fetch()))
    assert listing == [doc]
    assert Person.from_row(await Person.fetch_one({"id": pk})) == person
    assert await Person.get(12345) is None
    with pytest.raises(ValidationError, match="unknown column 'nope'"):
        Person.from_row({"nope": 1})


async def test_save_and_delete_instance(db: AsyncDatabaseManager) -> None:
    person = Person(username="bob", age=20)
    key = await person.save()
    assert person.id == key == 1
    person.age = 21
    await person.save()
    assert (await Person.fetch_one({"id": key}))["age"] == 21
    assert await Person.count() == 1
    assert await person.delete_instance() == 1
    assert await Person.count() == 0
    with pytest.raises(ValidationError, match="no primary key value"):
        await Person(username="x").delete_instance()


# ------------------------------------------------------------------ indexes and constraints


async def test_indexes_unique_together_and_check(db: AsyncDatabaseManager) -> None:
    await Seat.count()
    await Article.count()
    indexes = {
        r["name"] for r in await db.fetch_all("SELECT name FROM sqlite_master WHERE type = 'index'")
    }
    assert {"ix_article_person_id_title", "ux_seat_room_number"} <= indexes
    await Seat.insert({"room": "a", "number": 1})
    with pytest.raises(IntegrityError, match="UNIQUE"):
        await Seat.insert({"room": "a", "number": 1})
    with pytest.raises(IntegrityError, match="CHECK"):
        await Person.insert({"username": "neg", "age": -1})


async def test_check_expression_is_validated_at_definition(db: AsyncDatabaseManager) -> None:
    for bad in ["age > (SELECT 1)", "other > 1", "age > 1; DROP TABLE person", "age >", "1 = 1"]:
        with pytest.raises(ValidationError):

            class Bad(BaseModel):
                id = Column("INTEGER", primary_key=True)
                age = Column("INTEGER", check=bad)


async def test_constraints_are_added_later_like_columns(db: AsyncDatabaseManager) -> None:
    class Gadget(BaseModel):
        id = Column("INTEGER", primary_key=True)
        kind = Column("TEXT")

    await Gadget.insert({"kind": "x"})

    class Gadget(BaseModel):  # type: ignore[no-redef]
        id = Column("INTEGER", primary_key=True)
        kind = Column("TEXT")
        size = Column("INTEGER", check="size > 0", index=True)
        serial = Column("TEXT")

        __unique_together__ = [("kind", "serial")]

    await Gadget.insert({"kind": "y", "size": 2, "serial": "s1"})
    with pytest.raises(IntegrityError, match="CHECK"):
        await Gadget.insert({"kind": "y", "size": 0})
    with pytest.raises(IntegrityError, match="UNIQUE"):
        await Gadget.insert({"kind": "y", "size": 3, "serial": "s1"})
    assert await Gadget.count() == 2


# ------------------------------------------------------------------ streaming and pages


async def test_iterate_in_batches(db: AsyncDatabaseManager) -> None:
    await Person.insert_many([{"username": f"u{n:03}", "age": n % 50} for n in range(230)])
    seen = [row["id"] async for row in Person.iterate(batch_size=50)]
    assert seen == list(range(1, 231))
    young = [
        r
        async for r in Person.iterate(
            filters={"age": [("<", 10)]}, batch_size=7, columns=["username"]
        )
    ]
    assert len(young) == 50 and all(set(r) == {"username"} for r in young)
    assert [r async for r in Person.iterate(filters={"age": 999})] == []


async def test_fetch_page_walks_every_row_once(db: AsyncDatabaseManager) -> None:
    await Person.insert_many([{"username": f"u{n:02}", "age": n % 7} for n in range(40)])
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        page = await Person.fetch_page(after=cursor, order_by="-age", size=6)
        seen += [row["id"] for row in page["rows"]]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert sorted(seen) == list(range(1, 41)) and len(seen) == 40
    assert pages == 7
    ages = [(await Person.fetch_one({"id": i}))["age"] for i in seen]
    assert ages == sorted(ages, reverse=True)
    filtered = await Person.fetch_page(size=100, filters={"age": 3}, columns=["username"])
    assert filtered["next"] is None and len(filtered["rows"]) == 6
    with pytest.raises(ValidationError, match="invalid page cursor"):
        await Person.fetch_page(after="not-a-cursor")


# ------------------------------------------------------------------ raw SQL


async def test_raw_sql_escape_hatch(db: AsyncDatabaseManager) -> None:
    await _people()
    result = await db.execute("UPDATE person SET age = age + ? WHERE team = ?", [1, "red"])
    assert result["rowcount"] == 2
    rows = await db.fetch_all("SELECT team, count(*) AS n FROM person GROUP BY team ORDER BY team")
    assert rows == [{"team": "blue", "n": 1}, {"team": "red", "n": 2}]
    assert await db.fetch_one("SELECT age FROM person WHERE username = :u", {"u": "bob"}) == {
        "age": 21
    }
    assert await db.fetch_one("SELECT age FROM person WHERE username = ?", ["nobody"]) is None
    with pytest.raises(ProgrammingError):
        await db.execute("SELECT * FROM nowhere")
    with pytest.raises(ValidationError, match="journal_mode"):
        await db.execute("PRAGMA journal_mode = DELETE")
    with pytest.raises(ValidationError, match="transaction control"):
        await db.execute("BEGIN")
