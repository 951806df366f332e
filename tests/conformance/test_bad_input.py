"""Bad input: every mistake gets its error class and a message that says what was wrong.

SQL smuggled in through a table name, column name, order_by entry, operator or
value is refused (or, for values, stored as plain data), and the schema is the
same afterwards.
"""

from __future__ import annotations

import math
import os
from typing import Any

import pytest

from fastquartdb import (
    AsyncDatabaseManager,
    BaseModel,
    Column,
    DatabaseError,
    FQDBError,
    IntegrityError,
    InterfaceError,
    NotInitializedError,
    ProgrammingError,
    ValidationError,
)

from .models import Item, User

USER_COLUMNS = "(columns: id, username, age)"
OPERATORS = "= == != <> < <= > >= LIKE NOT LIKE GLOB IN NOT IN BETWEEN IS IS NOT"
ROWS = [
    {"id": 1, "username": "alice", "age": 30},
    {"id": 2, "username": "bob", "age": 25},
    {"id": 3, "username": "carol", "age": None},
]


async def schema(db: AsyncDatabaseManager) -> list[dict[str, Any]]:
    return await db.fetch_all("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")


@pytest.fixture
async def seeded(db: AsyncDatabaseManager) -> Any:
    """Three users in the table; on teardown the schema and the rows must be untouched."""
    await User.insert_many(ROWS)
    before = await schema(db)
    assert {"user", "items"} <= {row["name"] for row in before}
    yield db
    assert await schema(db) == before
    assert await User.fetch(order_by="id") == ROWS


def check(exc_info: pytest.ExceptionInfo[BaseException], *parts: str) -> None:
    """The error is a ValidationError (hence a ValueError) and its message has every part."""
    exc = exc_info.value
    assert isinstance(exc, ValidationError)
    assert isinstance(exc, ValueError)
    assert isinstance(exc, ProgrammingError)
    assert isinstance(exc, FQDBError)
    message = str(exc)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# ------------------------------------------------------------------ filters


@pytest.mark.parametrize(
    ("filters", "parts"),
    [
        ({"agee": 1}, ["unknown column 'agee' in table 'user' " + USER_COLUMNS]),
        ({"Age": 1}, ["unknown column 'Age' in table 'user'", USER_COLUMNS]),
        ({"": 1}, ["unknown column '' in table 'user'", USER_COLUMNS]),
        ({1: 1}, ["unknown column 1 in table 'user'", USER_COLUMNS]),
        ({None: 1}, ["unknown column None in table 'user'", USER_COLUMNS]),
        (
            {"age": [("===", 1)]},
            ["unknown operator '===' for column 'age'", f"(allowed: {OPERATORS})"],
        ),
        ({"age": [("", 1)]}, ["unknown operator ''", "allowed:"]),
        ({"age": [("NOT", 1)]}, ["unknown operator 'NOT'"]),
        ({"age": [("REGEXP", "1")]}, ["unknown operator 'REGEXP'"]),
        ({"age": [("MATCH", "1")]}, ["unknown operator 'MATCH'"]),
        ({"age": [("=>", 1)]}, ["unknown operator '=>'"]),
        ({"age": [("ISNOT", 1)]}, ["unknown operator 'ISNOT'"]),
        ({"age": [("NOTIN", [1])]}, ["unknown operator 'NOTIN'"]),
        ({"age": ("LIKE%", 1)}, ["unknown operator 'LIKE%'"]),
        ({"age": [(1, 2)]}, ["filter for column 'age' must be a value, None, or a list of"]),
        ({"age": [(">", 1, 2)]}, ["filter for column 'age'", "(operator, value) pairs"]),
        ({"age": [(">",)]}, ["filter for column 'age'"]),
        ({"age": []}, ["filter for column 'age'", "got []"]),
        ({"age": [(">", 1), 5]}, ["filter for column 'age'"]),
        ({"age": {">": 1}}, ["filter for column 'age'", "got {'>': 1}"]),
        ({"age": {1, 2}}, ["filter for column 'age'"]),
        ({"age": ("IN", 5)}, ["IN needs a list of values for column 'age', got 5"]),
        ({"age": ("IN", "abc")}, ["IN needs a list of values for column 'age'"]),
        ({"age": ("NOT IN", 5)}, ["NOT IN needs a list of values for column 'age'"]),
        ({"age": ("IN", {"a": 1})}, ["IN needs a list of values"]),
        ({"age": ("BETWEEN", 1)}, ["BETWEEN needs (low, high) for column 'age', got 1"]),
        ({"age": ("BETWEEN", (1, 2, 3))}, ["BETWEEN needs (low, high) for column 'age'"]),
        ({"age": ("BETWEEN", [1])}, ["BETWEEN needs (low, high)"]),
        (
            {"username": ("LIKE", None)},
            ["operator LIKE cannot compare column 'username' with None"],
        ),
        ({"age": ("<", None)}, ["operator < cannot compare column 'age' with None"]),
        ({"age": object()}, ["column 'age' of table 'user'", "has type object"]),
        ({"age": ("IN", [1, object()])}, ["column 'age' of table 'user'", "has type object"]),
        ({"age": 2**70}, ["integer 1180591620717411303424", "64-bit INTEGER"]),
        ({"age": ("IN", [2**64])}, ["does not fit SQLite's 64-bit INTEGER"]),
        ({"age": -(2**63) - 1}, ["does not fit SQLite's 64-bit INTEGER"]),
        ("age = 1", ["filters must be a map like {'age': [('>', 20)]}", "got 'age = 1'"]),
        (5, ["filters must be a map like"]),
        (b"age", ["filters must be a map like"]),
        (["age"], ["a list of filters must hold maps (ORed groups), got 'age'"]),
        ([{"age": 1}, None], ["a list of filters must hold maps"]),
        ([{"agee": 1}], ["unknown column 'agee' in table 'user' " + USER_COLUMNS]),
        ([{"age": 1}, {"age": [("~", 1)]}], ["unknown operator '~'"]),
    ],
)
async def test_bad_filters(seeded: AsyncDatabaseManager, filters: Any, parts: list[str]) -> None:
    with pytest.raises(ValidationError) as info:
        await User.fetch(filters=filters)
    check(info, *parts)
    # The same check guards every operation that takes filters.
    for call in (
        lambda: User.count(filters),
        lambda: User.fetch_one(filters),
        lambda: User.update({"age": 1}, filters),
        lambda: User.delete(filters),
    ):
        with pytest.raises(ValidationError) as info:
            await call()
        check(info, *parts)


# ------------------------------------------------------------------ columns, order_by, paging


@pytest.mark.parametrize(
    ("kwargs", "parts"),
    [
        ({"columns": ["agee"]}, ["unknown column 'agee' in table 'user' " + USER_COLUMNS]),
        ({"columns": "agee"}, ["unknown column 'agee' in table 'user'"]),
        ({"columns": ["id", 1]}, ["unknown column 1 in table 'user'"]),
        ({"columns": ["*"]}, ["unknown column '*' in table 'user'"]),
        ({"columns": []}, ["'columns' must be a non-empty list of column names"]),
        ({"columns": ["count(*)"]}, ["unknown column 'count(*)'"]),
        ({"order_by": "agee"}, ["unknown column 'agee' in table 'user' " + USER_COLUMNS]),
        ({"order_by": ["-agee"]}, ["unknown column 'agee' in table 'user'"]),
        ({"order_by": ["--age"]}, ["unknown column '-age' in table 'user'"]),
        ({"order_by": ["age DESC"]}, ["unknown column 'age DESC'"]),
        ({"order_by": ["age", ""]}, ["order_by takes column names like '-age', got ''"]),
        ({"order_by": [1]}, ["order_by takes column names like '-age', got 1"]),
        ({"order_by": [None]}, ["order_by takes column names"]),
        ({"order_by": []}, ["'order_by' must be a list such as ['-age', 'username']"]),
        ({"order_by": "-"}, ["unknown column '' in table 'user'"]),
        ({"limit": -1}, ["limit must be a non-negative integer, got -1"]),
        ({"limit": "5"}, ["limit must be a non-negative integer, got '5'"]),
        ({"limit": 1.5}, ["limit must be a non-negative integer, got 1.5"]),
        ({"limit": True}, ["limit must be a non-negative integer, got True"]),
        ({"offset": -3}, ["offset must be a non-negative integer, got -3"]),
        ({"offset": False}, ["offset must be a non-negative integer, got False"]),
        ({"offset": "1"}, ["offset must be a non-negative integer"]),
    ],
)
async def test_bad_fetch_arguments(
    seeded: AsyncDatabaseManager, kwargs: dict[str, Any], parts: list[str]
) -> None:
    with pytest.raises(ValidationError) as info:
        await User.fetch(**kwargs)
    check(info, *parts)


async def test_between_with_none_bound_is_refused(seeded: AsyncDatabaseManager) -> None:
    with pytest.raises(ValidationError) as info:
        await User.fetch({"age": ("BETWEEN", (None, 40))})
    check(info, "BETWEEN", "'age'", "None")


@pytest.mark.parametrize("arg", ["limit", "offset"])
async def test_huge_limit_names_the_argument(seeded: AsyncDatabaseManager, arg: str) -> None:
    with pytest.raises(ValidationError) as info:
        await User.fetch(**{arg: 2**70})
    check(info, f"{arg} must be a non-negative integer")


async def test_order_by_mapping_is_refused(seeded: AsyncDatabaseManager) -> None:
    with pytest.raises(ValidationError) as info:
        await User.fetch(order_by={"age": "desc"})
    check(info, "order_by")


# ------------------------------------------------------------------ values


@pytest.mark.parametrize(
    ("data", "parts"),
    [
        ({"username": "x", "agee": 1}, ["unknown column 'agee' in table 'user' " + USER_COLUMNS]),
        ({"username": "x", 5: 1}, ["unknown column 5 in table 'user'"]),
        ({"username": object()}, ["column 'username' of table 'user'", "has type object"]),
        ({"username": {1, 2}}, ["column 'username' of table 'user'", "has type set"]),
        ({"username": frozenset()}, ["has type frozenset"]),
        ({"username": {"a": 1}}, ["has type dict"]),
        ({"username": ["a"]}, ["has type list"]),
        ({"username": ("a",)}, ["has type tuple"]),
        ({"username": "x", "age": 2**70}, ["integer 1180591620717411303424", "64-bit INTEGER"]),
        ({"username": "x", "age": 2**63}, ["does not fit SQLite's 64-bit INTEGER"]),
        ({"username": "x", "age": 1 + 2j}, ["has type complex"]),
        ({"username": "x", "age": __import__("decimal").Decimal("1.5")}, ["has type Decimal"]),
        ({"username": "x", "age": __import__("datetime").date(2020, 1, 1)}, ["has type date"]),
        ({"username": "\ud800"}, ["surrogates not allowed"]),
    ],
)
async def test_bad_values(seeded: AsyncDatabaseManager, data: Any, parts: list[str]) -> None:
    with pytest.raises(ValidationError) as info:
        await User.insert(data)
    check(info, *parts)
    with pytest.raises(ValidationError) as info:
        await User.insert_many([{"username": "ok"}, data])
    check(info, *parts)
    with pytest.raises(ValidationError) as info:
        await User.update(data, {"id": 1})
    check(info, *parts)


async def test_nan_is_refused(db: AsyncDatabaseManager) -> None:
    # SQLite turns NaN into NULL: storing it would silently lose the value.
    with pytest.raises(ValidationError) as info:
        await User.insert({"username": "nan", "age": math.nan})
    check(info, "nan")
    assert await User.count() == 0


@pytest.mark.parametrize(
    ("data", "parts"),
    [
        ({"active": "yes"}, ["column 'active' of table 'items' is BOOLEAN and takes True/False"]),
        ({"active": 2}, ["is BOOLEAN and takes True/False, got int 2"]),
        ({"active": 1.0}, ["is BOOLEAN"]),
        ({"added": "2020-13-01"}, ["column 'added' of table 'items' is DATE", "'2020-13-01'"]),
        ({"added": "yesterday"}, ["is DATE and takes a datetime.date or an ISO date string"]),
        ({"added": 20200101}, ["is DATE", "got int"]),
        ({"added": __import__("datetime").datetime(2020, 1, 1)}, ["is DATE", "got datetime"]),
        ({"seen": "noon"}, ["column 'seen' of table 'items' is DATETIME", "'noon'"]),
        ({"seen": __import__("datetime").date(2020, 1, 1)}, ["is DATETIME", "got date"]),
        ({"seen": 1700000000}, ["is DATETIME", "got int"]),
        ({"meta": object()}, ["column 'meta' of table 'items' is JSON and cannot store"]),
        ({"meta": {"a": {1, 2}}}, ["is JSON and cannot store"]),
        ({"meta": math.nan}, ["is JSON and cannot store nan"]),
        ({"meta": [math.inf]}, ["is JSON and cannot store"]),
        ({"blob": object()}, ["column 'blob' of table 'items'", "has type object"]),
        ({"price": "free", "sku": 5, "bogus": 1}, ["unknown column 'bogus' in table 'items'"]),
    ],
)
async def test_bad_typed_values(seeded: AsyncDatabaseManager, data: Any, parts: list[str]) -> None:
    with pytest.raises(ValidationError) as info:
        await Item.insert({"sku": "s", "name": "n", **data})
    check(info, *parts)
    if not any(isinstance(v, (dict, list)) for v in data.values()):
        # (A dict or list in a filter is a filter spec, not a value.)
        with pytest.raises(ValidationError) as info:
            await Item.fetch(filters=dict(data))
        check(info, *parts)
    assert await Item.count() == 0


@pytest.mark.parametrize(
    ("call", "parts"),
    [
        (lambda: User.insert([("username", "x")]), ["User data must be a dict", "got list"]),
        (lambda: User.insert(None), ["User data must be a dict", "got NoneType"]),
        (lambda: User.insert("username=x"), ["got str"]),
        (lambda: User.insert_many([{"username": "x"}, 5]), ["User data must be a dict", "got int"]),
        (lambda: User.insert_many("ab"), ["User data must be a dict"]),
        (
            lambda: User.insert_many([{"username": "x"}], chunk_size=0),
            ["chunk_size must be a positive integer, got 0"],
        ),
        (lambda: User.insert_many([{"username": "x"}], chunk_size=-1), ["chunk_size"]),
        (lambda: User.insert_many([{"username": "x"}], chunk_size=1.5), ["chunk_size"]),
        (lambda: User.insert_many([{"username": "x"}], chunk_size=True), ["chunk_size"]),
        (lambda: User.update({}, {"id": 1}), ["update needs at least one column to change"]),
        (lambda: User.update(None, {"id": 1}), ["User data must be a dict"]),
        (
            lambda: User.update({"age": 1}),
            ["update without filters would touch every row", "all_rows=True"],
        ),
        (lambda: User.delete(), ["delete without filters would touch every row", "all_rows=True"]),
        (lambda: User.delete({}), ["all_rows=True"]),
        (lambda: User.delete([]), ["all_rows=True"]),
    ],
)
async def test_bad_calls(seeded: AsyncDatabaseManager, call: Any, parts: list[str]) -> None:
    with pytest.raises(ValidationError) as info:
        await call()
    check(info, *parts)


@pytest.mark.parametrize("all_rows", ["false", "no", 1, [0]])
async def test_all_rows_must_be_true_itself(db: AsyncDatabaseManager, all_rows: Any) -> None:
    await User.insert_many(ROWS)
    with pytest.raises(ValidationError) as info:
        await User.update({"age": 0}, all_rows=all_rows)
    check(info, "all_rows")
    with pytest.raises(ValidationError) as info:
        await User.delete(all_rows=all_rows)
    check(info, "all_rows")
    assert await User.fetch(order_by="id") == ROWS


# ------------------------------------------------------------------ injection


@pytest.mark.parametrize(
    "order_by",
    [
        "age; DROP TABLE user",
        "age --",
        'age"',
        "age/*",
        "age */",
        'age" DESC; DROP TABLE "user',
        "-age; DROP TABLE user",
        "(SELECT 1)",
        "1",
        "age,username",
        "age\x00",
    ],
)
async def test_order_by_injection_is_refused(seeded: AsyncDatabaseManager, order_by: str) -> None:
    with pytest.raises(ValidationError) as info:
        await User.fetch(order_by=[order_by])
    check(info, "unknown column", "in table 'user'", USER_COLUMNS)


@pytest.mark.parametrize(
    "column",
    [
        "age; DROP TABLE user",
        "age --",
        'age"',
        'age" = 1 OR "1',
        "age/*",
        "1=1 OR age",
        "age) OR (1=1",
        "username, (SELECT sql FROM sqlite_master)",
    ],
)
async def test_column_name_injection_is_refused(seeded: AsyncDatabaseManager, column: str) -> None:
    for call in (
        lambda: User.fetch(filters={column: 1}),
        lambda: User.fetch(columns=[column]),
        lambda: User.insert({"username": "x", column: 1}),
        lambda: User.update({column: 1}, {"id": 1}),
        lambda: User.delete({column: 1}),
        lambda: User.count([{"id": 1}, {column: 1}]),
    ):
        with pytest.raises(ValidationError) as info:
            await call()
        check(info, f"unknown column {column!r} in table 'user' {USER_COLUMNS}")


@pytest.mark.parametrize(
    "op",
    [
        "= 1 OR 1=1 --",
        "= 1; DROP TABLE user; --",
        "IS NOT NULL OR 1=1 OR age =",
        "= age OR 1 =",
        "/**/=",
        "= ?",
        ";",
        "IN (SELECT age FROM user) OR age IN",
    ],
)
async def test_operator_injection_is_refused(seeded: AsyncDatabaseManager, op: str) -> None:
    for call in (
        lambda: User.fetch(filters={"age": [(op, 1)]}),
        lambda: User.delete({"age": (op, 1)}),
        lambda: User.update({"age": 0}, {"age": [("=", 30), (op, 1)]}),
    ):
        with pytest.raises(ValidationError) as info:
            await call()
        check(info, f"unknown operator {op!r} for column 'age'", f"(allowed: {OPERATORS})")


@pytest.mark.parametrize(
    "text",
    [
        "Robert'); DROP TABLE user; --",
        "x' OR '1'='1",
        '"; DROP TABLE "user"; --',
        "1; DELETE FROM user",
        "*/ DROP TABLE user /*",
        "%' OR 1=1 --",
        "\x00'); DROP TABLE user; --",
    ],
)
async def test_values_with_sql_are_stored_literally(db: AsyncDatabaseManager, text: str) -> None:
    await User.insert_many(ROWS)
    before = await schema(db)
    pk = await User.insert({"username": text, "age": 1})
    assert await User.fetch_one({"id": pk}) == {"id": pk, "username": text, "age": 1}
    # As a filter value it matches itself only.
    assert await User.fetch({"username": text}, columns=["id"]) == [{"id": pk}]
    assert await User.count({"username": [("LIKE", text)]}) <= 1
    assert await User.count({"username": ("IN", [text, "nobody"])}) == 1
    assert await User.update({"username": text + "!"}, {"username": text}) == 1
    assert await User.fetch_one({"id": pk}, columns=["username"]) == {"username": text + "!"}
    assert await User.delete({"username": text + "!"}) == 1
    # Typed columns too.
    await Item.insert({"sku": text, "name": text, "meta": {text: [text]}})
    assert await Item.fetch_one({"sku": text}, columns=["name", "meta"]) == {
        "name": text,
        "meta": {text: [text]},
    }
    # Raw SQL binds parameters the same way.
    assert await db.fetch_all("SELECT count(*) AS n FROM user WHERE username = ?", [text]) == [
        {"n": 0}
    ]
    assert await schema(db) == before
    assert await User.fetch(order_by="id") == ROWS


@pytest.mark.parametrize(
    "name",
    [
        "user; DROP TABLE user",
        'user"; DROP TABLE "user',
        "user --",
        "user/*",
        "user WHERE 1=1",
        "",
        "1user",
        "sqlite_master",
        "sqlite_sequence",
        "us er",
        "usér",
        "u" * 65,
        "user\x00",
    ],
)
async def test_table_name_injection_fails_at_class_definition(
    seeded: AsyncDatabaseManager, name: str
) -> None:
    with pytest.raises(ValidationError) as info:

        class Evil(BaseModel):
            __tablename__ = name
            id = Column("INTEGER", primary_key=True)

    check(info, "invalid table name")
    assert name not in AsyncDatabaseManager._models


async def test_table_name_not_a_string(seeded: AsyncDatabaseManager) -> None:
    with pytest.raises(ValidationError) as info:

        class Evil(BaseModel):
            __tablename__ = 5  # type: ignore[assignment]
            id = Column("INTEGER", primary_key=True)

    check(info, "invalid table name 5")


@pytest.mark.parametrize(
    "name", ["age; DROP TABLE user", 'age"', "age --", "age/*", "a b", "1age", "sqlite_x", "é"]
)
async def test_column_name_injection_fails_at_class_definition(
    seeded: AsyncDatabaseManager, name: str
) -> None:
    with pytest.raises(ValidationError) as info:
        type(
            "Evil", (BaseModel,), {"id": Column("INTEGER", primary_key=True), name: Column("TEXT")}
        )
    check(info, "invalid column name in model Evil", repr(name))
    assert "evil" not in AsyncDatabaseManager._models


@pytest.mark.parametrize(
    ("request_", "parts"),
    [
        ({"op": "fetch", "table": "user; DROP TABLE user"}, ["invalid table name"]),
        ({"op": "fetch", "table": 'user"'}, ["invalid table name"]),
        ({"op": "fetch", "table": "sqlite_master"}, ["reserved"]),
        ({"op": "fetch", "table": "nosuch"}, ["unknown table 'nosuch'", "user"]),
        ({"op": "fetch", "table": None}, ["invalid table name"]),
        (
            {"op": "fetch", "table": "user", "where": [[["age", "= 1 OR 1=1 --", 1]]]},
            ["unknown operator '= 1 OR 1=1 --'"],
        ),
        (
            {"op": "fetch", "table": "user", "where": [[['age" OR 1=1 --', "=", 1]]]},
            ["invalid column name 'age\" OR 1=1 --'"],
        ),
        (
            {"op": "fetch", "table": "user", "where": [[["agee", "=", 1]]]},
            ["unknown column 'agee' in table 'user' " + USER_COLUMNS],
        ),
        ({"op": "fetch", "table": "user", "where": "1=1"}, ["'where' must be a list"]),
        ({"op": "fetch", "table": "user", "where": [["age", "=", 1]]}, ["condition"]),
        ({"op": "fetch", "table": "user", "order_by": ['age"']}, ["invalid column name 'age\"'"]),
        (
            {"op": "fetch", "table": "user", "order_by": ["age; DROP TABLE user"]},
            ["invalid column"],
        ),
        ({"op": "fetch", "table": "user", "columns": ["*"]}, ["invalid column name '*'"]),
        ({"op": "fetch", "table": "user", "limit": "1; DROP TABLE user"}, ["'limit'"]),
        ({"op": "delete", "table": "user"}, ["all_rows=True"]),
        (
            {"op": "delete", "table": "user", "all_rows": "yes"},
            ["'all_rows' must be true or false"],
        ),
        (
            {
                "op": "update",
                "table": "user",
                "values": {"age; --": 1},
                "where": [[["id", "=", 1]]],
            },
            ["invalid column name"],
        ),
        ({"op": "insert", "table": "user", "values": "x"}, ["insert needs 'values'"]),
        (
            {"op": "insert_many", "table": "user", "columns": ["username"], "rows": [["a", "b"]]},
            ["must be a list of 1 values"],
        ),
        (
            {"op": "insert_many", "table": "user", "columns": ["username", "username"], "rows": []},
            ["twice"],
        ),
        ({"op": "drop_table", "table": "user"}, ["unknown op 'drop_table'"]),
        (
            {
                "op": "ensure_table",
                "table": "t",
                "columns": [{"name": "a", "type": "INT); DROP TABLE user; --"}],
            },
            ["unknown column type 'INT); DROP TABLE user; --'"],
        ),
        (
            {"op": "ensure_table", "table": "t", "columns": [{"name": "a b", "type": "TEXT"}]},
            ["invalid column name 'a b'"],
        ),
        (
            {
                "op": "ensure_table",
                "table": "t; DROP TABLE user",
                "columns": [{"name": "a", "type": "TEXT"}],
            },
            ["invalid table name"],
        ),
        (
            {
                "op": "ensure_table",
                "table": "t",
                "columns": [{"name": "a", "type": "TEXT", "default": [1]}],
            },
            ["default of column 'a' must be a plain value"],
        ),
    ],
)
async def test_engine_checks_raw_requests_again(
    seeded: AsyncDatabaseManager, request_: dict[str, Any], parts: list[str]
) -> None:
    # Past the models layer (another client, a hand-made frame): the engine checks again.
    with pytest.raises(ValidationError) as info:
        await seeded.request(dict(request_))
    check(info, *parts)


async def test_sql_in_a_column_default_is_stored_literally(seeded: AsyncDatabaseManager) -> None:
    evil = "x'); DROP TABLE user; --"

    class Defaulted(BaseModel):
        id = Column("INTEGER", primary_key=True)
        note = Column("TEXT", default=evil)

    pk = await Defaulted.insert({})
    assert await Defaulted.fetch_one({"id": pk}) == {"id": pk, "note": evil}
    await seeded.execute('DROP TABLE "defaulted"')  # leave the schema as the fixture found it


async def test_raw_sql_is_one_statement(seeded: AsyncDatabaseManager) -> None:
    with pytest.raises(ProgrammingError, match="one statement"):
        await seeded.execute("SELECT 1; DROP TABLE user")
    with pytest.raises(ValidationError, match="ATTACH"):
        await seeded.execute("ATTACH DATABASE ':memory:' AS other")
    with pytest.raises(ValidationError, match="transaction control"):
        await seeded.execute("BEGIN")


async def test_keywords_as_names_are_quoted(db: AsyncDatabaseManager) -> None:
    class Select(BaseModel):
        __tablename__ = "order"
        select = Column("INTEGER", primary_key=True)
        where = Column("TEXT")
        group = Column("INTEGER")

    await Select.insert_many([{"where": "a", "group": 2}, {"where": "b", "group": 1}])
    assert await Select.fetch({"group": [(">", 0)]}, columns=["where"], order_by="group") == [
        {"where": "b"},
        {"where": "a"},
    ]
    assert await Select.update({"where": "c"}, {"select": 1}) == 1
    assert await Select.delete({"where": "c"}) == 1


# ------------------------------------------------------------------ model definition


@pytest.mark.parametrize(
    ("type_", "parts"),
    [
        ("STRNG", ["unknown column type 'STRNG'", "known: BIGINT, BLOB", "VARCHAR(80)"]),
        ("INTEGER; DROP TABLE user", ["unknown column type 'INTEGER; DROP TABLE user'"]),
        ("TEXT) ; DROP TABLE user; --", ["unknown column type"]),
        ("TEXT -- comment", ["unknown column type"]),
        ("VARCHAR(abc)", ["unknown column type 'VARCHAR(abc)'"]),
        ("VARCHAR(80", ["unknown column type"]),
        ("", ["unknown column type ''"]),
        ("INTEGER PRIMARY KEY", ["unknown column type"]),
        (5, ["column type must be a string such as 'INTEGER', got 5"]),
        (None, ["column type must be a string"]),
        (int, ["column type must be a string"]),
    ],
)
def test_wrong_column_type_fails_at_definition(type_: Any, parts: list[str]) -> None:
    with pytest.raises(ValidationError) as info:

        class Bad(BaseModel):
            id = Column("INTEGER", primary_key=True)
            x = Column(type_)

    check(info, *parts)
    assert "bad" not in AsyncDatabaseManager._models


@pytest.mark.parametrize(
    ("type_", "default"),
    [("BOOLEAN", "yes"), ("INTEGER", object()), ("INTEGER", 2**70), ("DATE", "not a date")],
)
def test_default_the_type_cannot_hold_fails_at_definition(type_: str, default: Any) -> None:
    with pytest.raises(ValidationError) as info:

        class Bad(BaseModel):
            id = Column("INTEGER", primary_key=True)
            x = Column(type_, default=default)

    check(info, "'x'")


async def test_columns_differing_only_in_case_are_refused(db: AsyncDatabaseManager) -> None:
    # SQLite names are case-insensitive: 'age' and 'Age' are one column.
    with pytest.raises(ValidationError) as info:

        class Twice(BaseModel):
            id = Column("INTEGER", primary_key=True)
            age = Column("INTEGER")
            Age = Column("INTEGER")

        await Twice.fetch()
    check(info, "'Age'")


# ------------------------------------------------------------------ database errors


async def test_not_null_violation_is_integrity_error(seeded: AsyncDatabaseManager) -> None:
    with pytest.raises(IntegrityError, match=r"NOT NULL constraint failed: user\.username") as info:
        await User.insert({"age": 1})
    assert isinstance(info.value, DatabaseError)
    assert not isinstance(info.value, ValueError)
    with pytest.raises(IntegrityError, match="NOT NULL"):
        await User.insert({"username": None})
    with pytest.raises(IntegrityError, match="NOT NULL"):
        await User.update({"username": None}, {"id": 1})


async def test_unique_violation_is_integrity_error(seeded: AsyncDatabaseManager) -> None:
    await Item.insert({"sku": "a", "name": "anvil"})
    with pytest.raises(IntegrityError, match=r"UNIQUE constraint failed: items\.name"):
        await Item.insert({"sku": "b", "name": "anvil"})
    with pytest.raises(IntegrityError, match=r"UNIQUE constraint failed: items\.sku"):
        await Item.insert({"sku": "a", "name": "other"})
    with pytest.raises(IntegrityError, match="UNIQUE"):
        await User.insert({"id": 1, "username": "again"})
    await Item.insert({"sku": "c", "name": "crate"})
    with pytest.raises(IntegrityError, match="UNIQUE"):
        await Item.update({"name": "anvil"}, {"sku": "c"})
    assert await Item.fetch(columns=["sku", "name"], order_by="sku") == [
        {"sku": "a", "name": "anvil"},
        {"sku": "c", "name": "crate"},
    ]
    await Item.delete(all_rows=True)


# ------------------------------------------------------------------ lifecycle


async def test_get_before_init_engine(db: AsyncDatabaseManager) -> None:
    await AsyncDatabaseManager.close()
    with pytest.raises(NotInitializedError, match=r"init_engine") as info:
        AsyncDatabaseManager.get()
    assert isinstance(info.value, InterfaceError)
    with pytest.raises(NotInitializedError, match="init_engine"):
        await User.fetch()
    with pytest.raises(NotInitializedError, match="init_engine"):
        await User.insert({"username": "x"})
    await AsyncDatabaseManager.close()  # twice is harmless


async def test_handle_used_after_close(db: AsyncDatabaseManager) -> None:
    await AsyncDatabaseManager.close()
    with pytest.raises(InterfaceError, match="closed"):
        await db.fetch_all("SELECT 1")


async def test_init_engine_twice_same_file_is_harmless(
    db: AsyncDatabaseManager, transport: str
) -> None:
    await User.insert({"username": "kept"})
    directory, name = os.path.split(db.path)
    again = await AsyncDatabaseManager.init_engine(
        os.path.join(directory, ".", name), mode=transport
    )
    assert again is db
    assert AsyncDatabaseManager.get() is db
    assert await User.fetch(columns=["username"]) == [{"username": "kept"}]


async def test_init_engine_other_file_is_an_error(
    db: AsyncDatabaseManager, transport: str, tmp_path: Any
) -> None:
    other = str(tmp_path / "other.db")
    with pytest.raises(InterfaceError, match="already initialised") as info:
        await AsyncDatabaseManager.init_engine(other, mode=transport)
    assert db.path in str(info.value)
    assert "close()" in str(info.value)
    assert AsyncDatabaseManager.get() is db
    assert not os.path.exists(other)
    assert await User.count() == 0


async def test_init_engine_bad_mode(db: AsyncDatabaseManager) -> None:
    with pytest.raises(ValidationError) as info:
        await AsyncDatabaseManager.init_engine(db.path, mode="turbo")
    check(info, "mode must be one of auto, daemon, embedded, got 'turbo'")


# ------------------------------------------------------------------ limits (issue 13)


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


async def test_deep_json_is_refused_at_write_naming_the_limit(db: AsyncDatabaseManager) -> None:
    with pytest.raises(ValidationError) as info:
        await Item.insert({"sku": "deep", "name": "deep", "meta": _nested(5000)})
    check(info, "column 'meta' of table 'items'", "more than 100 levels deep")
    with pytest.raises(ValidationError, match="more than 100 levels"):
        await Item.insert({"sku": "deep", "name": "deep", "meta": {"a": _nested(101)}})
    await Item.insert({"sku": "ok", "name": "ok", "meta": _nested(100)})
    assert (await Item.fetch_one(filters={"sku": "ok"}))["meta"] == _nested(100)
    assert await Item.count() == 1


async def test_one_bad_json_row_never_makes_the_table_unreadable(
    db: AsyncDatabaseManager,
) -> None:
    """JSON too deep for Python's parser (stored by raw SQL, or by another tool) comes back
    as the text it is, like any text that is not JSON; the other rows decode as usual."""
    await Item.insert({"sku": "a", "name": "a", "meta": {"k": 1}})
    deep = "[" * 5000 + "]" * 5000
    await db.execute(
        "INSERT INTO items (sku, name, meta) VALUES ('b', 'b', :m), ('c', 'c', 'not json')",
        {"m": deep},
    )
    rows = {r["sku"]: r["meta"] for r in await Item.fetch(order_by="sku")}
    assert rows == {"a": {"k": 1}, "b": deep, "c": "not json"}
    assert [r["meta"] async for r in Item.iterate(batch_size=2)] == [{"k": 1}, deep, "not json"]


async def test_too_many_filter_conditions_is_a_validation_error(
    seeded: AsyncDatabaseManager,
) -> None:
    with pytest.raises(ValidationError) as info:
        await User.fetch(filters={"age": [(">", i) for i in range(10_000)]})
    check(info, "10000 filter conditions in one request: at most 1000")
    with pytest.raises(ValidationError, match="at most 1000"):
        await User.count(filters=[{"id": i} for i in range(10_000)])
    with pytest.raises(ValidationError, match="at most 1000"):
        await User.delete(filters=[{"age": None}] * 1001)
    # 1000 conditions is fine (nested so SQLite's expression depth is never reached); IS NULL
    # binds no value, so this runs on dqlite too (255 bound values per statement there).
    assert await User.count(filters=[{"age": None}] * 1000) == 1
    assert await User.count(filters={"age": [("IS", None)] * 1000}) == 1


async def test_a_value_larger_than_one_frame_is_refused_in_every_mode(
    seeded: AsyncDatabaseManager,
) -> None:
    """What the daemon could not carry (one 64 MiB frame) is refused embedded and on dqlite
    too, with the same error, before anything runs."""
    big = "x" * (64 * 1024 * 1024 + 1)
    with pytest.raises(ValidationError) as info:
        await User.insert({"username": big})
    check(info, "exceeds the maximum frame size of 67108864 bytes")
    with pytest.raises(ValidationError, match="maximum frame size"):
        await User.fetch(filters={"username": big})
    # The shape of a point read, by a key no point read takes (a reader thread's, measured).
    with pytest.raises(ValidationError, match="maximum frame size"):
        await seeded.request({"op": "fetch", "table": "user", "where": [[["id", "=", big]]]})
    with pytest.raises(ValidationError, match="maximum frame size"):
        await seeded.execute("SELECT length(?)", [big])
