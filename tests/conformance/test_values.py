"""Values: plain types round-trip; BOOLEAN, DATE, DATETIME and JSON convert both ways."""

from __future__ import annotations

import datetime as dt
import itertools
import math
from typing import Any

import pytest

from fastquartdb import AsyncDatabaseManager, BaseModel, Column, ValidationError

from .models import Item

UTC = dt.timezone.utc
PLUS_2 = dt.timezone(dt.timedelta(hours=2))
MINUS_5_30 = dt.timezone(-dt.timedelta(hours=5, minutes=30))


class Plain(BaseModel):
    id = Column("INTEGER", primary_key=True)
    i = Column("INTEGER")
    f = Column("REAL")
    s = Column("TEXT")
    b = Column("BLOB")
    n = Column("NUMERIC")


class Doc(BaseModel):
    id = Column("INTEGER", primary_key=True)
    meta = Column("JSON")


async def roundtrip(model: type[BaseModel], column: str, value: Any) -> Any:
    pk = await model.insert({column: value})
    pk_name = next(n for n, c in model.__columns__.items() if c.primary_key)
    row = await model.fetch_one({pk_name: pk}, columns=[column])
    assert row is not None
    return row[column]


# ------------------------------------------------------------------ plain values


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("i", 0),
        ("i", 42),
        ("i", -7),
        ("i", 2**63 - 1),
        ("i", -(2**63)),
        ("f", 3.5),
        ("f", -0.25),
        ("f", 1e300),
        ("f", math.pi),
        ("f", math.inf),
        ("s", ""),
        ("s", "hello"),
        ("s", "ünïcødé ✓ 日本語 🎉"),
        ("s", "line\nbreak\ttab"),
        ("s", "x" * 100_000),
        ("b", b""),
        ("b", b"\x00\x01\xff binary"),
        ("b", bytes(range(256)) * 100),
        ("n", 12),
        ("n", 1.5),
        ("i", None),
        ("f", None),
        ("s", None),
        ("b", None),
    ],
)
async def test_plain_values_round_trip(db: AsyncDatabaseManager, column: str, value: Any) -> None:
    back = await roundtrip(Plain, column, value)
    assert back == value
    assert type(back) is type(value)


async def test_bytearray_and_memoryview_are_stored_as_bytes(db: AsyncDatabaseManager) -> None:
    assert await roundtrip(Plain, "b", bytearray(b"abc")) == b"abc"
    assert await roundtrip(Plain, "b", memoryview(b"xyz")) == b"xyz"


async def test_bool_in_plain_number_column_is_refused(db: AsyncDatabaseManager) -> None:
    # True is an int to Python, but in an INTEGER or REAL column it is a caller's mistake:
    # BOOLEAN columns are for booleans.
    for column in ("i", "f", "n"):
        with pytest.raises(ValidationError, match="got bool True"):
            await Plain.insert({column: True})
    assert await Plain.count() == 0


async def test_whole_row_round_trip(db: AsyncDatabaseManager) -> None:
    row = {"i": 1, "f": 2.5, "s": "three", "b": b"four", "n": None}
    pk = await Plain.insert(row)
    assert await Plain.fetch_one({"id": pk}) == {"id": pk, **row}


# ------------------------------------------------------------------ BOOLEAN


async def test_boolean_returns_bool(db: AsyncDatabaseManager) -> None:
    await Item.insert({"sku": "t", "name": "T", "active": True})
    await Item.insert({"sku": "f", "name": "F", "active": False})
    await Item.insert({"sku": "n", "name": "N", "active": None})
    await Item.insert({"sku": "d", "name": "D"})  # default True
    await Item.insert({"sku": "0", "name": "Zero", "active": 0})
    rows = await Item.fetch(columns=["sku", "active"], order_by="sku")
    assert rows == [
        {"sku": "0", "active": False},
        {"sku": "d", "active": True},
        {"sku": "f", "active": False},
        {"sku": "n", "active": None},
        {"sku": "t", "active": True},
    ]
    assert all(type(r["active"]) is bool for r in rows if r["active"] is not None)
    # Stored as 0/1 in the file.
    raw = await db.fetch_all("SELECT sku, active FROM items ORDER BY sku")
    assert [r["active"] for r in raw] == [0, 1, 0, None, 1]


async def test_filter_by_bool(db: AsyncDatabaseManager) -> None:
    await Item.insert_many(
        [
            {"sku": "a", "name": "A", "active": True},
            {"sku": "b", "name": "B", "active": False},
            {"sku": "c", "name": "C", "active": True},
        ]
    )
    assert [r["sku"] for r in await Item.fetch({"active": True}, order_by="sku")] == ["a", "c"]
    assert [r["sku"] for r in await Item.fetch({"active": [("=", False)]})] == ["b"]
    assert await Item.count({"active": ("IN", [True, False])}) == 3
    assert await Item.update({"active": False}, {"active": True}) == 2
    assert await Item.count({"active": False}) == 3


# ------------------------------------------------------------------ DATE / DATETIME


@pytest.mark.parametrize(
    "value", [dt.date(2024, 2, 29), dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.date(1970, 1, 1)]
)
async def test_date_round_trip(db: AsyncDatabaseManager, value: dt.date) -> None:
    pk = await Item.insert({"sku": "x", "name": "X", "added": value})
    row = await Item.fetch_one({"sku": pk}, columns=["added"])
    assert row == {"added": value}
    assert type(row["added"]) is dt.date
    raw = await db.fetch_one("SELECT added FROM items WHERE sku = ?", ["x"])
    assert raw == {"added": value.isoformat()}


async def test_date_accepts_iso_string(db: AsyncDatabaseManager) -> None:
    await Item.insert({"sku": "x", "name": "X", "added": "2024-05-06"})
    assert await Item.fetch_one(columns=["added"]) == {"added": dt.date(2024, 5, 6)}


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2024, 5, 6, 7, 8, 9),
        dt.datetime(2024, 5, 6, 7, 8, 9, 123456),
        dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
        dt.datetime(2024, 5, 6, 7, 8, 9, 500, tzinfo=PLUS_2),
        dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=MINUS_5_30),
    ],
    ids=["naive", "naive-micro", "utc", "plus2", "minus530"],
)
async def test_datetime_round_trip_keeps_timezone(
    db: AsyncDatabaseManager, value: dt.datetime
) -> None:
    await Item.insert({"sku": "x", "name": "X", "seen": value})
    row = await Item.fetch_one({"sku": "x"}, columns=["seen"])
    assert row is not None
    back = row["seen"]
    assert type(back) is dt.datetime
    assert back == value
    # Equal is not enough for aware datetimes: the offset itself must come back.
    assert back.utcoffset() == value.utcoffset()
    assert (back.tzinfo is None) == (value.tzinfo is None)
    raw = await db.fetch_one("SELECT seen FROM items")
    assert raw == {"seen": value.isoformat()}


async def test_datetime_accepts_iso_string(db: AsyncDatabaseManager) -> None:
    await Item.insert({"sku": "x", "name": "X", "seen": "2024-05-06T07:08:09+02:00"})
    row = await Item.fetch_one(columns=["seen"])
    assert row == {"seen": dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=PLUS_2)}


async def test_filter_by_date_and_datetime(db: AsyncDatabaseManager) -> None:
    days = [dt.date(2024, 1, d) for d in (1, 15, 31)]
    await Item.insert_many(
        [
            {"sku": f"s{i}", "name": f"n{i}", "added": day, "seen": dt.datetime(2024, 1, d, 12)}
            for i, (day, d) in enumerate(zip(days, (1, 15, 31)))
        ]
    )

    async def skus(filters: Any) -> list[str]:
        return [r["sku"] for r in await Item.fetch(filters, columns=["sku"], order_by="sku")]

    assert await skus({"added": dt.date(2024, 1, 15)}) == ["s1"]
    assert await skus({"added": [(">", dt.date(2024, 1, 10))]}) == ["s1", "s2"]
    assert await skus({"added": ("BETWEEN", (dt.date(2024, 1, 1), dt.date(2024, 1, 15)))}) == [
        "s0",
        "s1",
    ]
    assert await skus({"added": ("IN", [dt.date(2024, 1, 1), dt.date(2024, 1, 31)])}) == [
        "s0",
        "s2",
    ]
    assert await skus({"seen": [("<", dt.datetime(2024, 1, 15, 12))]}) == ["s0"]
    assert await skus({"seen": dt.datetime(2024, 1, 31, 12)}) == ["s2"]
    assert await Item.update({"added": dt.date(2000, 1, 1)}, {"added": dt.date(2024, 1, 1)}) == 1
    assert await Item.fetch_one({"sku": "s0"}, columns=["added"]) == {"added": dt.date(2000, 1, 1)}


# ------------------------------------------------------------------ JSON


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": "two", "c": None, "d": True, "e": 1.5},
        [1, "two", None, False, 2.5],
        {"nested": {"list": [1, [2, [3, {"deep": "yes"}]]], "empty": {}}, "arr": []},
        [{"id": 1, "tags": ["x", "y"]}, {"id": 2, "tags": []}],
        {},
        [],
        {"unicode": "日本語 ✓", "quote": 'it\'s "quoted"'},
    ],
)
async def test_json_round_trip(db: AsyncDatabaseManager, value: Any) -> None:
    back = await roundtrip(Doc, "meta", value)
    assert back == value
    assert type(back) is type(value)


async def test_json_round_trip_through_item(db: AsyncDatabaseManager) -> None:
    meta = {"colors": ["red", "green"], "size": {"w": 10, "h": 2.5}, "ok": True}
    await Item.insert({"sku": "j", "name": "J", "meta": meta})
    await Item.insert({"sku": "k", "name": "K", "meta": [meta, meta]})
    rows = await Item.fetch(columns=["sku", "meta"], order_by="sku")
    assert rows == [{"sku": "j", "meta": meta}, {"sku": "k", "meta": [meta, meta]}]
    assert await Item.update({"meta": {"v": 2}}, {"sku": "j"}) == 1
    assert await Item.fetch_one({"sku": "j"}, columns=["meta"]) == {"meta": {"v": 2}}


@pytest.mark.parametrize("value", ["a string", "123", 42, 2.5, True, None])
async def test_json_scalars_round_trip(db: AsyncDatabaseManager, value: Any) -> None:
    back = await roundtrip(Doc, "meta", value)
    assert back == value
    assert type(back) is type(value)


@pytest.mark.parametrize("value", [1.0, -3.0])
async def test_json_integral_float_stays_float(db: AsyncDatabaseManager, value: float) -> None:
    back = await roundtrip(Doc, "meta", value)
    assert back == value
    assert type(back) is float


@pytest.mark.parametrize("value", [2**63, 2**70 + 1])
async def test_json_big_integer_is_exact_or_refused(db: AsyncDatabaseManager, value: int) -> None:
    try:
        pk = await Doc.insert({"meta": value})
    except ValidationError as exc:
        assert "meta" in str(exc)
        return
    row = await Doc.fetch_one({"id": pk})
    assert row == {"id": pk, "meta": value}
    assert type(row["meta"]) is int


# ------------------------------------------------------------------ defaults


async def test_static_defaults(db: AsyncDatabaseManager) -> None:
    class Defaults(BaseModel):
        id = Column("INTEGER", primary_key=True)
        count = Column("INTEGER", default=7)
        ratio = Column("REAL", default=0.5)
        label = Column("TEXT", default="it's new")
        flag = Column("BOOLEAN", default=False)
        day = Column("DATE", default=dt.date(2020, 2, 2))
        data = Column("BLOB", default=b"\x00\x01")
        tags = Column("JSON", default=["a", "b"])

    pk = await Defaults.insert({})
    assert await Defaults.fetch_one({"id": pk}) == {
        "id": pk,
        "count": 7,
        "ratio": 0.5,
        "label": "it's new",
        "flag": False,
        "day": dt.date(2020, 2, 2),
        "data": b"\x00\x01",
        "tags": ["a", "b"],
    }
    # A given value wins over the default, None included.
    pk = await Defaults.insert({"count": 1, "label": None, "flag": True})
    row = await Defaults.fetch_one({"id": pk}, columns=["count", "label", "flag", "ratio"])
    assert row == {"count": 1, "label": None, "flag": True, "ratio": 0.5}
    # Static defaults live in the table, so raw SQL inserts get them too.
    await db.execute('INSERT INTO "defaults" (id) VALUES (100)')
    assert await Defaults.fetch_one({"id": 100}, columns=["count", "flag"]) == {
        "count": 7,
        "flag": False,
    }


async def test_callable_defaults_called_per_insert(db: AsyncDatabaseManager) -> None:
    counter = itertools.count(1)
    stamp = dt.datetime(2024, 1, 1, tzinfo=UTC)

    class Stamped(BaseModel):
        id = Column("INTEGER", primary_key=True)
        serial = Column("INTEGER", default=lambda: next(counter))
        created = Column("DATETIME", default=lambda: stamp)
        meta = Column("JSON", default=dict)

    await Stamped.insert({})
    await Stamped.insert({"serial": 100})
    await Stamped.insert_many([{}, {}])
    rows = await Stamped.fetch(order_by="id")
    assert [r["serial"] for r in rows] == [1, 100, 2, 3]
    assert all(r["created"] == stamp and r["created"].tzinfo is not None for r in rows)
    assert all(r["meta"] == {} for r in rows)


async def test_plain_columns_take_values_of_their_type(db: AsyncDatabaseManager) -> None:
    class Typed(BaseModel):
        id = Column("INTEGER", primary_key=True)
        n = Column("INTEGER")
        r = Column("REAL")
        t = Column("TEXT")
        b = Column("BLOB")
        d = Column("DECIMAL(10,2)")

    for bad, wanted in [
        ({"n": "30"}, "INTEGER and takes an integer"),
        ({"n": True}, "INTEGER and takes an integer, got bool True"),
        ({"n": 1.5}, "INTEGER and takes an integer"),
        ({"r": "1.5"}, "REAL and takes a number"),
        ({"t": 5}, "TEXT and takes a string"),
        ({"b": "bytes?"}, "BLOB and takes bytes"),
        ({"d": b"\x01"}, r"DECIMAL\(10,2\) and takes a number"),
    ]:
        with pytest.raises(ValidationError, match=wanted):
            await Typed.insert(bad)
    pk = await Typed.insert({"n": 1, "r": 2, "t": "x", "b": bytearray(b"\x00"), "d": "12.50"})
    row = await Typed.fetch_one({"id": pk})
    assert row == {"id": pk, "n": 1, "r": 2.0, "t": "x", "b": b"\x00", "d": 12.5}
    assert await Typed.count() == 1
