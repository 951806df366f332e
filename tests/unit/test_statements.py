"""Requests to SQL: filters, ordering, CRUD statements and identifier checks."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from fastquartdb.engine.schema import (
    TableInfo,
    check_expression,
    check_identifier,
    load_table,
    quote,
)
from fastquartdb.engine.statements import (
    OPERATORS,
    build_aggregate,
    build_count,
    build_delete,
    build_insert,
    build_insert_many,
    build_select,
    build_update,
    build_upsert,
    build_upsert_many,
    build_where,
    check_value,
)
from fastquartdb.protocol.errors import ValidationError

ALL = '"id", "username", "age", "score", "avatar"'


@pytest.fixture(scope="module")
def conn() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:")
    conn.execute(
        'CREATE TABLE "user" ("id" INTEGER PRIMARY KEY, "username" TEXT NOT NULL, '
        '"age" INTEGER, "score" REAL, "avatar" BLOB)'
    )
    conn.executemany(
        "INSERT INTO user (username, age, score) VALUES (?, ?, ?)",
        [("alice", 30, 1.5), ("bob", 17, None), ("carol", 42, 3.0), ("dave", None, 0.0)],
    )
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def table(conn: sqlite3.Connection) -> TableInfo:
    info = load_table(conn, "user")
    assert info is not None
    return info


def select(table: TableInfo, request: dict[str, Any]) -> tuple[str, list[Any]]:
    """build_select with a lookup that knows no other table (no joins here)."""

    def lookup(name: object) -> TableInfo:
        raise ValidationError(f"unknown table {name!r}")

    return build_select(table, request, lookup)


def where(table: TableInfo, filters: Any) -> tuple[str, list[Any]]:
    params: list[Any] = []
    return build_where(table, filters, params), params


def names(conn: sqlite3.Connection, sql: str, params: list[Any]) -> list[str]:
    return [row[0] for row in conn.execute(sql, params)]


# ------------------------------------------------------------------ TableInfo


def test_table_info(conn: sqlite3.Connection, table: TableInfo) -> None:
    assert table.name == "user"
    assert table.columns == ("id", "username", "age", "score", "avatar")
    assert table.pk == ("id",)
    assert table.rowid_pk
    assert table.quoted_columns == ALL
    assert table.declared["score"] == "REAL"
    assert load_table(conn, "nope") is None


def test_table_info_composite_and_text_keys() -> None:
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute('CREATE TABLE "m" ("b" TEXT, "a" INT, PRIMARY KEY ("a", "b"))')
        conn.execute('CREATE TABLE "k" ("code" TEXT PRIMARY KEY)')
        conn.execute('CREATE TABLE "i" ("n" INT PRIMARY KEY)')
        m, k, i = (load_table(conn, n) for n in ("m", "k", "i"))
        assert m is not None and k is not None and i is not None
        assert m.pk == ("a", "b")
        assert not m.rowid_pk
        assert not k.rowid_pk
        # Only a column declared exactly INTEGER aliases the rowid.
        assert not i.rowid_pk
    finally:
        conn.close()


def test_check_column_message_lists_columns(table: TableInfo) -> None:
    assert table.check_column("age") == "age"
    with pytest.raises(ValidationError) as caught:
        table.check_column("agee")
    assert str(caught.value) == (
        "unknown column 'agee' in table 'user' (columns: id, username, age, score, avatar)"
    )
    # Column names are matched exactly as declared.
    with pytest.raises(ValidationError, match="unknown column 'AGE'"):
        table.check_column("AGE")
    with pytest.raises(ValidationError, match="invalid column name"):
        table.check_column('age"; --')


# ------------------------------------------------------------------ where


@pytest.mark.parametrize(
    ("filters", "sql", "params"),
    [
        (None, "", []),
        ([], "", []),
        ([[["age", ">", 20]]], ' WHERE "age" > ?', [20]),
        (
            [[["age", ">", 20], ["age", "<", 40]]],
            ' WHERE ("age" > ? AND "age" < ?)',
            [20, 40],
        ),
        (
            [[["age", ">", 20], ["age", "<", 40]], [["username", "=", "dave"]]],
            ' WHERE ("age" > ? AND "age" < ?) OR "username" = ?',
            [20, 40, "dave"],
        ),
        ([[["age", "==", 1]]], ' WHERE "age" = ?', [1]),
        ([[["age", "<>", 1]]], ' WHERE "age" != ?', [1]),
        ([[["age", "!=", 1]]], ' WHERE "age" != ?', [1]),
        ([[["age", "<=", 1]]], ' WHERE "age" <= ?', [1]),
        ([[["age", ">=", 1]]], ' WHERE "age" >= ?', [1]),
        ([[["username", "like", "a%"]]], ' WHERE "username" LIKE ?', ["a%"]),
        ([[["username", "Not  Like", "a%"]]], ' WHERE "username" NOT LIKE ?', ["a%"]),
        ([[["username", "glob", "a*"]]], ' WHERE "username" GLOB ?', ["a*"]),
        ([[["age", "in", [1, 2, 3]]]], ' WHERE "age" IN (?, ?, ?)', [1, 2, 3]),
        ([[["age", "NOT IN", [1]]]], ' WHERE "age" NOT IN (?)', [1]),
        ([[["age", "IN", []]]], " WHERE 0", []),
        ([[["age", "NOT IN", []]]], " WHERE 1", []),
        ([[["age", "between", [18, 65]]]], ' WHERE "age" BETWEEN ? AND ?', [18, 65]),
        ([[["age", "=", None]]], ' WHERE "age" IS NULL', []),
        ([[["age", "==", None]]], ' WHERE "age" IS NULL', []),
        ([[["age", "IS", None]]], ' WHERE "age" IS NULL', []),
        ([[["age", "!=", None]]], ' WHERE "age" IS NOT NULL', []),
        ([[["age", "<>", None]]], ' WHERE "age" IS NOT NULL', []),
        ([[["age", "is not", None]]], ' WHERE "age" IS NOT NULL', []),
        ([[["age", "IS", 3]]], ' WHERE "age" IS ?', [3]),
        ([[["avatar", "=", b"\x00"]]], ' WHERE "avatar" = ?', [b"\x00"]),
        ([[["age", "=", True]]], ' WHERE "age" = ?', [True]),
        # An empty group is true for every row: the whole filter is no filter.
        ([[["age", ">", 1]], []], "", []),
        # Tuples are accepted as well as lists (the Python API's README form).
        ([[("age", ">", 1)]], ' WHERE "age" > ?', [1]),
    ],
)
def test_where(table: TableInfo, filters: Any, sql: str, params: list[Any]) -> None:
    assert where(table, filters) == (sql, params)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([[["age", "IN", []]]], []),
        ([[["age", "NOT IN", []]]], ["alice", "bob", "carol", "dave"]),  # NULL age included
        ([[["age", "=", None]]], ["dave"]),
        ([[["age", "!=", None]]], ["alice", "bob", "carol"]),
        ([[["age", ">", 20], ["age", "<", 40]], [["username", "=", "dave"]]], ["alice", "dave"]),
        ([[["age", "BETWEEN", [17, 30]]]], ["alice", "bob"]),
        ([[["username", "LIKE", "A%"]]], ["alice"]),
        ([[["username", "GLOB", "A*"]]], []),
        ([[["score", "IS", 3.0]]], ["carol"]),
    ],
)
def test_where_selects_the_expected_rows(
    conn: sqlite3.Connection, table: TableInfo, filters: Any, expected: list[str]
) -> None:
    sql, params = select(
        table, {"columns": ["username"], "where": filters, "order_by": ["username"]}
    )
    assert names(conn, sql, params) == expected


def test_params_are_appended_after_existing_ones(table: TableInfo) -> None:
    params: list[Any] = ["before"]
    assert build_where(table, [[["age", "=", 1]]], params) == ' WHERE "age" = ?'
    assert params == ["before", 1]


def test_a_failing_filter_leaves_params_untouched(table: TableInfo) -> None:
    params: list[Any] = ["before"]
    with pytest.raises(ValidationError):
        build_where(table, [[["age", "=", 1], ["nope", "=", 2]]], params)
    assert params == ["before"]


def test_operator_whitelist() -> None:
    assert set(OPERATORS) == {
        "=",
        "==",
        "!=",
        "<>",
        "<",
        "<=",
        ">",
        ">=",
        "LIKE",
        "NOT LIKE",
        "GLOB",
        "IN",
        "NOT IN",
        "BETWEEN",
        "IS",
        "IS NOT",
    }


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"age": 1}, "'where' must be a list"),
        ("age = 1", "'where' must be a list"),
        ([{"age": 1}], "each 'where' group must be a list"),
        ([["age", ">", 1]], "a condition must be"),
        ([[["age", ">"]]], "a condition must be"),
        ([[["age", ">", 1, 2]]], "a condition must be"),
        ([[["agee", ">", 1]]], "unknown column 'agee'"),
        ([[[None, ">", 1]]], "invalid column name"),
        ([[["age", "=~", 1]]], "unknown operator '=~'"),
        ([[["age", None, 1]]], "unknown operator None"),
        ([[["age", "<", None]]], "cannot compare column 'age' with None"),
        ([[["username", "LIKE", None]]], "cannot compare"),
        ([[["age", "IN", 5]]], "IN needs a list"),
        ([[["age", "IN", "abc"]]], "IN needs a list"),
        ([[["age", "IN", [[1]]]]], "has type list"),
        ([[["age", "BETWEEN", [1]]]], "BETWEEN needs \\[low, high\\]"),
        ([[["age", "BETWEEN", 5]]], "BETWEEN needs"),
        ([[["age", "=", {"a": 1}]]], "has type dict"),
        ([[["age", "=", [1]]]], "has type list"),
        ([[["age", "=", 2**63]]], "does not fit"),
        ([[["age", "=", object()]]], "has type object"),
    ],
)
def test_bad_filters(table: TableInfo, filters: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        where(table, filters)


@pytest.mark.parametrize(
    "operator",
    [
        "= 1 OR 1=1 --",
        "=; DROP TABLE user",
        "= ? OR ?",
        "IS NOT NULL OR",
        "LIKE '%' --",
        ">/**/",
        "NOT",
        "",
        "IN (SELECT 1)",
        "\u2264",  # ≤
        "\uff1d",  # fullwidth =
    ],
)
def test_operator_injection_is_rejected(table: TableInfo, operator: str) -> None:
    with pytest.raises(ValidationError, match="unknown operator") as caught:
        where(table, [[["age", operator, 1]]])
    for allowed in ("NOT LIKE", "BETWEEN", "IS NOT"):
        assert allowed in str(caught.value)


INJECTED_NAMES = [
    "age; DROP TABLE user",
    'age" = 1 OR "1',
    "age--",
    "age/*",
    "age)",
    "*",
    "user.age",
    "age AS x",
    "",
    " age",
    "age\x00",
    "\u0430ge",  # with a Cyrillic a
]


@pytest.mark.parametrize("name", INJECTED_NAMES)
def test_column_injection_is_rejected_everywhere(table: TableInfo, name: str) -> None:
    requests = [
        (select, {"columns": [name]}),
        (select, {"where": [[[name, "=", 1]]]}),
        (select, {"order_by": [name]}),
        (select, {"order_by": ["-" + name]}),
        (build_count, {"where": [[[name, "=", 1]]]}),
        (build_insert, {"values": {name: 1}}),
        (build_insert_many, {"columns": [name], "rows": [[1]]}),
        (build_update, {"values": {name: 1}, "all_rows": True}),
        (build_update, {"values": {"age": 1}, "where": [[[name, "=", 1]]]}),
        (build_delete, {"where": [[[name, "=", 1]]]}),
    ]
    for build, request in requests:
        with pytest.raises(ValidationError):
            build(table, request)


# ------------------------------------------------------------------ select


def test_select_defaults(table: TableInfo) -> None:
    assert select(table, {}) == (f'SELECT {ALL} FROM "user"', [])


def test_select_everything(table: TableInfo) -> None:
    sql, params = select(
        table,
        {
            "columns": ["id", "username"],
            "where": [[["age", ">", 20]]],
            "order_by": ["-age", "username", "+id"],
            "limit": 10,
            "offset": 5,
        },
    )
    assert sql == (
        'SELECT "id", "username" FROM "user" WHERE "age" > ? '
        'ORDER BY "age" DESC, "username", "id" LIMIT ? OFFSET ?'
    )
    assert params == [20, 10, 5]


def test_order_by_as_one_string(table: TableInfo) -> None:
    assert select(table, {"order_by": "-age"})[0].endswith(' ORDER BY "age" DESC')


def test_order_by_runs(conn: sqlite3.Connection, table: TableInfo) -> None:
    sql, params = select(table, {"columns": ["username"], "order_by": ["-score", "id"]})
    assert names(conn, sql, params) == ["carol", "alice", "dave", "bob"]


@pytest.mark.parametrize(
    ("limit", "offset", "tail", "params"),
    [
        (0, None, " LIMIT ?", [0]),
        (3, None, " LIMIT ?", [3]),
        (None, 2, " LIMIT ? OFFSET ?", [-1, 2]),
        (2**63 - 1, 0, " LIMIT ? OFFSET ?", [2**63 - 1, 0]),
    ],
)
def test_limit_offset(
    table: TableInfo, limit: Any, offset: Any, tail: str, params: list[Any]
) -> None:
    sql, got = select(table, {"limit": limit, "offset": offset})
    assert sql == f'SELECT {ALL} FROM "user"{tail}'
    assert got == params


def test_offset_without_limit_runs(conn: sqlite3.Connection, table: TableInfo) -> None:
    sql, params = select(table, {"columns": ["username"], "order_by": ["id"], "offset": 3})
    assert names(conn, sql, params) == ["dave"]


@pytest.mark.parametrize("field", ["limit", "offset"])
@pytest.mark.parametrize("value", [-1, 1.5, "10", True, False, [1], 2**63, "1; DROP TABLE user"])
def test_limit_offset_validation(table: TableInfo, field: str, value: Any) -> None:
    with pytest.raises(ValidationError, match=f"'{field}' must be a non-negative integer"):
        select(table, {field: value})


@pytest.mark.parametrize(
    ("columns", "message"),
    [([], "non-empty list"), ("id", "non-empty list"), ({"id": 1}, "non-empty list")],
)
def test_bad_columns(table: TableInfo, columns: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        select(table, {"columns": columns})


@pytest.mark.parametrize(
    "order_by",
    [[], {}, 5, [5], [""], ["-"], ["--age"], ["age DESC"], ["age; DROP TABLE user"], [None]],
)
def test_bad_order_by(table: TableInfo, order_by: Any) -> None:
    with pytest.raises(ValidationError):
        select(table, {"order_by": order_by})


def test_count(table: TableInfo) -> None:
    assert build_count(table, {}) == ('SELECT count(*) FROM "user"', [])
    assert build_count(table, {"where": [[["age", "IN", [1, 2]]]]}) == (
        'SELECT count(*) FROM "user" WHERE "age" IN (?, ?)',
        [1, 2],
    )


# ------------------------------------------------------------------ insert


def test_insert(table: TableInfo) -> None:
    assert build_insert(table, {"values": {"username": "x", "age": None}}) == (
        'INSERT INTO "user" ("username", "age") VALUES (?, ?)',
        ["x", None],
    )
    assert build_insert(table, {"values": {}}) == ('INSERT INTO "user" DEFAULT VALUES', [])


@pytest.mark.parametrize("values", [None, [], "username=x", [["username", "x"]]])
def test_insert_needs_a_map(table: TableInfo, values: Any) -> None:
    with pytest.raises(ValidationError, match="insert needs 'values'"):
        build_insert(table, {"values": values})


def test_insert_rejects_unbindable_values(table: TableInfo) -> None:
    with pytest.raises(ValidationError, match="column 'age'"):
        build_insert(table, {"values": {"age": [1, 2]}})


def test_insert_many(table: TableInfo) -> None:
    sql, rows = build_insert_many(
        table, {"columns": ["username", "age"], "rows": [["a", 1], ["b", None]]}
    )
    assert sql == 'INSERT INTO "user" ("username", "age") VALUES (?, ?)'
    assert rows == [["a", 1], ["b", None]]
    assert build_insert_many(table, {"columns": ["age"], "rows": []})[1] == []


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"columns": [], "rows": []}, "needs 'columns'"),
        ({"columns": "age", "rows": []}, "needs 'columns'"),
        ({"columns": ["age", "age"], "rows": []}, "names a column twice"),
        ({"columns": ["age"], "rows": None}, "needs 'rows'"),
        ({"columns": ["age"], "rows": [1]}, "row 0 of insert_many must be a list of 1"),
        ({"columns": ["age"], "rows": [[1], [1, 2]]}, "row 1 of insert_many"),
        ({"columns": ["age"], "rows": [[{"x": 1}]]}, "has type dict"),
    ],
)
def test_insert_many_validation(table: TableInfo, request_: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        build_insert_many(table, request_)


# ------------------------------------------------------------------ update / delete


def test_update(table: TableInfo) -> None:
    assert build_update(
        table, {"values": {"age": 31, "score": 2.0}, "where": [[["username", "=", "alice"]]]}
    ) == ('UPDATE "user" SET "age" = ?, "score" = ? WHERE "username" = ?', [31, 2.0, "alice"])


def test_delete(table: TableInfo) -> None:
    assert build_delete(table, {"where": [[["age", "<", 18]]]}) == (
        'DELETE FROM "user" WHERE "age" < ?',
        [18],
    )


@pytest.mark.parametrize("filters", [None, [], [[]], [[["age", "=", 1]], []]])
def test_update_and_delete_refuse_every_row(table: TableInfo, filters: Any) -> None:
    with pytest.raises(ValidationError, match="update without filters would touch every row"):
        build_update(table, {"values": {"age": 1}, "where": filters})
    with pytest.raises(ValidationError, match="delete without filters would touch every row"):
        build_delete(table, {"where": filters})
    with pytest.raises(ValidationError):
        build_delete(table, {"where": filters, "all_rows": False})


def test_all_rows_must_be_said(table: TableInfo) -> None:
    assert build_update(table, {"values": {"age": 1}, "all_rows": True}) == (
        'UPDATE "user" SET "age" = ?',
        [1],
    )
    assert build_delete(table, {"all_rows": True}) == ('DELETE FROM "user"', [])
    # With a filter, all_rows changes nothing.
    assert build_delete(table, {"all_rows": True, "where": [[["id", "=", 1]]]})[0] == (
        'DELETE FROM "user" WHERE "id" = ?'
    )


@pytest.mark.parametrize("all_rows", [1, "true", "yes", [True]])
def test_all_rows_must_be_a_bool(table: TableInfo, all_rows: Any) -> None:
    with pytest.raises(ValidationError, match="'all_rows' must be true or false"):
        build_delete(table, {"all_rows": all_rows, "where": [[["id", "=", 1]]]})


def test_all_rows_null_means_absent(table: TableInfo) -> None:
    request = {"where": [[["id", "=", 1]]], "all_rows": None}
    assert build_delete(table, request) == ('DELETE FROM "user" WHERE "id" = ?', [1])


def test_in_empty_makes_update_a_no_op_not_a_refusal(table: TableInfo) -> None:
    # IN [] is a filter (that matches nothing), not the absence of one.
    assert build_update(table, {"values": {"age": 1}, "where": [[["id", "IN", []]]]}) == (
        'UPDATE "user" SET "age" = ? WHERE 0',
        [1],
    )


def test_update_needs_values(table: TableInfo) -> None:
    with pytest.raises(ValidationError, match="at least one column"):
        build_update(table, {"values": {}, "all_rows": True})


# ------------------------------------------------------------------ values


@pytest.mark.parametrize("value", [None, True, 0, -(2**63), 2**63 - 1, 1.5, "", "é", b"", b"\x00"])
def test_check_value_accepts_scalars(value: Any) -> None:
    assert check_value(value, "here") is value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (2**63, "does not fit SQLite's 64-bit INTEGER"),
        (-(2**63) - 1, "does not fit"),
        ([1], "has type list"),
        ({"a": 1}, "has type dict"),
        (bytearray(b"x"), "has type bytearray"),
        (object(), "has type object"),
    ],
)
def test_check_value_rejects(value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        check_value(value, "column 'age'")
    assert "column 'age'" in str(caught.value)


# ------------------------------------------------------------------ identifiers


@pytest.mark.parametrize(
    "name", ["user", "_private", "A", "a1", "snake_case_name", "x" * 64, "User", "sqlite"]
)
def test_identifiers_accepted(name: str) -> None:
    assert check_identifier(name) == name
    assert quote(name) == f'"{name}"'


@pytest.mark.parametrize(
    "name",
    [
        "",
        "1abc",
        "x" * 65,
        "has space",
        "dash-name",
        "dot.name",
        'quo"te',
        "quo'te",
        "back`tick",
        "[bracket]",
        "semi;colon",
        "nul\x00",
        "\x00",
        "new\nline",
        "trailing\n",
        "tab\t",
        "us\u0435r",  # with a Cyrillic ie
        "\uff55\uff53\uff45\uff52",  # user in fullwidth letters
        "café",
        "ß",
        "user\u200b",  # zero-width space
        "İd",  # dotted capital I: lower() becomes two characters
        "١٢",  # Arabic-Indic digits
        "a" + "\u0301",  # combining accent
    ],
)
def test_identifiers_rejected(name: str) -> None:
    with pytest.raises(ValidationError, match="invalid table name") as caught:
        check_identifier(name, "table name")
    assert "1-64 ASCII letters, digits or '_'" in str(caught.value)


@pytest.mark.parametrize("name", ["sqlite_master", "SQLITE_sequence", "Sqlite_x", "sqlite_"])
def test_sqlite_prefix_is_reserved(name: str) -> None:
    with pytest.raises(ValidationError, match="reserved"):
        check_identifier(name, "table name")


@pytest.mark.parametrize("name", [None, 1, b"user", ["user"], True])
def test_non_string_identifiers_rejected(name: Any) -> None:
    with pytest.raises(ValidationError, match="invalid column name"):
        check_identifier(name, "column name")


def test_long_names_are_shortened_in_messages() -> None:
    with pytest.raises(ValidationError) as caught:
        check_identifier("x" * 10_000)
    assert len(str(caught.value)) < 300


# ------------------------------------------------------------------ joins, aggregates, upserts


@pytest.fixture(scope="module")
def blog() -> Iterator[dict[str, TableInfo]]:
    conn = sqlite3.connect(":memory:")
    conn.executescript(
        """
        CREATE TABLE "user" ("id" INTEGER PRIMARY KEY, "username" TEXT UNIQUE, "age" INTEGER);
        CREATE TABLE "post" ("id" INTEGER PRIMARY KEY,
                             "user_id" INTEGER REFERENCES "user" ("id"), "title" TEXT);
        CREATE TABLE "tag" ("name" TEXT, "lang" TEXT, "n" INTEGER);
        CREATE UNIQUE INDEX "ux_tag_name_lang" ON "tag" ("name", "lang");
        """
    )
    tables = {name: load_table(conn, name) for name in ("user", "post", "tag")}
    conn.close()
    yield {name: info for name, info in tables.items() if info is not None}


def lookup_in(tables: dict[str, TableInfo]) -> Any:
    def lookup(name: object) -> TableInfo:
        info = tables.get(name) if isinstance(name, str) else None
        if info is None:
            raise ValidationError(f"unknown table {name!r}")
        return info

    return lookup


def test_table_info_knows_keys_and_unique_sets(blog: dict[str, TableInfo]) -> None:
    assert blog["post"].foreign_keys == [("user_id", "user", "id")]
    assert frozenset({"id"}) in blog["user"].unique_sets
    assert frozenset({"username"}) in blog["user"].unique_sets
    assert frozenset({"name", "lang"}) in blog["tag"].unique_sets


def test_join_follows_the_foreign_key(blog: dict[str, TableInfo]) -> None:
    sql, params = build_select(
        blog["post"],
        {
            "columns": ["title", "user.username"],
            "join": [{"table": "user", "kind": "left"}],
            "where": [[["user.age", ">", 18]]],
            "order_by": ["-user.age", "id"],
            "distinct": True,
        },
        lookup_in(blog),
    )
    assert sql == (
        'SELECT DISTINCT "post"."title" AS "title", "user"."username" AS "user.username" '
        'FROM "post" LEFT JOIN "user" ON "post"."user_id" = "user"."id" '
        'WHERE "user"."age" > ? ORDER BY "user"."age" DESC, "post"."id"'
    )
    assert params == [18]


@pytest.mark.parametrize(
    ("join", "message"),
    [
        ([], "non-empty list"),
        ({"table": "user"}, "non-empty list"),
        (["user"], "must be a map"),
        ([{"table": "user", "kind": "outer"}], "'inner' or 'left'"),
        ([{"table": "user"}, {"table": "user"}], "joined twice"),
        ([{"table": "tag"}], "no foreign key"),
        ([{"table": "nope"}], "unknown table"),
        ([{"table": 'user" ON 1=1 --'}], "unknown table"),
    ],
)
def test_bad_joins(blog: dict[str, TableInfo], join: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        build_select(blog["post"], {"join": join}, lookup_in(blog))


@pytest.mark.parametrize(
    "name",
    ["user.agee", "usr.age", "user.age; DROP TABLE user", 'user."age"', "user.", ".age", "tag.n"],
)
def test_qualified_names_are_checked(blog: dict[str, TableInfo], name: str) -> None:
    for request in (
        {"columns": [name]},
        {"where": [[[name, "=", 1]]]},
        {"order_by": [name]},
    ):
        with pytest.raises(ValidationError):
            build_select(blog["post"], {**request, "join": [{"table": "user"}]}, lookup_in(blog))


def test_distinct_must_be_a_bool(blog: dict[str, TableInfo]) -> None:
    with pytest.raises(ValidationError, match="'distinct' must be true or false"):
        build_select(blog["user"], {"distinct": "yes"}, lookup_in(blog))


def test_aggregate(blog: dict[str, TableInfo]) -> None:
    sql, params = build_aggregate(
        blog["post"],
        {
            "aggregates": {"n": ["count", "*"], "longest": ["MAX", "title"]},
            "group_by": ["user_id"],
            "where": [[["title", "LIKE", "a%"]]],
            "having": [[["n", ">", 1]]],
            "order_by": ["-n", "user_id"],
            "limit": 5,
        },
        lookup_in(blog),
    )
    assert sql == (
        'SELECT "user_id" AS "user_id", count(*) AS "n", max("title") AS "longest" '
        'FROM "post" WHERE "title" LIKE ? GROUP BY "user_id" HAVING "n" > ? '
        'ORDER BY "n" DESC, "user_id" LIMIT ?'
    )
    assert params == ["a%", 1, 5]


@pytest.mark.parametrize(
    ("aggregates", "message"),
    [
        (None, "needs 'aggregates'"),
        ({}, "needs 'aggregates'"),
        ({"n": ["median", "age"]}, "unknown aggregate function 'median'"),
        ({"n": ["count(*) FROM user; --", "age"]}, "unknown aggregate function"),
        ({"n": ["sum", "*"]}, "only count takes"),
        ({"n": ["sum"]}, "must be \\(function, column\\)"),
        ({"n": ["sum", "agee"]}, "unknown column"),
        ({"n": ["sum", "age) FROM user --"]}, "invalid column name"),
        ({'n" FROM user --': ["count", "*"]}, "invalid aggregate name"),
        ({"age": ["count", "*"]}, "used twice"),
    ],
)
def test_bad_aggregates(blog: dict[str, TableInfo], aggregates: Any, message: str) -> None:
    request = {"aggregates": aggregates, "group_by": ["age"]}
    with pytest.raises(ValidationError, match=message):
        build_aggregate(blog["user"], request, lookup_in(blog))


def test_upsert(blog: dict[str, TableInfo]) -> None:
    assert build_upsert(
        blog["user"], {"values": {"username": "a", "age": 3}, "conflict": "username"}
    ) == (
        'INSERT INTO "user" ("username", "age") VALUES (?, ?) '
        'ON CONFLICT ("username") DO UPDATE SET "age" = excluded."age"',
        ["a", 3],
    )
    sql, _ = build_upsert(
        blog["tag"], {"values": {"name": "x", "lang": "en"}, "conflict": ["name", "lang"]}
    )
    assert sql.endswith(' ON CONFLICT ("name", "lang") DO NOTHING')
    sql, rows = build_upsert_many(
        blog["tag"],
        {
            "columns": ["name", "lang", "n"],
            "rows": [["x", "en", 1]],
            "conflict": ["lang", "name"],
            "update": ["n"],
        },
    )
    assert sql == (
        'INSERT INTO "tag" ("name", "lang", "n") VALUES (?, ?, ?) '
        'ON CONFLICT ("lang", "name") DO UPDATE SET "n" = excluded."n"'
    )
    assert rows == [["x", "en", 1]]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"values": {"username": "a", "age": 1}, "conflict": "age"}, "not the primary key"),
        ({"values": {"username": "a"}, "conflict": None}, "'conflict' must be"),
        ({"values": {"username": "a"}, "conflict": []}, "'conflict' must be"),
        ({"values": {"age": 1}, "conflict": "username"}, "needs a value for its conflict"),
        ({"values": {}, "conflict": "username"}, "at least one column"),
        ({"values": {"username": "a"}, "conflict": "username", "update": ["age"]}, "does not give"),
        ({"values": {"username": "a"}, "conflict": 'username") DO NOTHING; --'}, "invalid column"),
    ],
)
def test_bad_upserts(blog: dict[str, TableInfo], request_: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        build_upsert(blog["user"], request_)


def test_insert_on_conflict(table: TableInfo) -> None:
    sql, _ = build_insert(table, {"values": {"age": 1}, "on_conflict": "ignore"})
    assert sql == 'INSERT OR IGNORE INTO "user" ("age") VALUES (?)'
    for bad in ("replace", "IGNORE", "ignore; DROP TABLE user", True):
        with pytest.raises(ValidationError, match="on_conflict"):
            build_insert(table, {"values": {"age": 1}, "on_conflict": bad})


@pytest.mark.parametrize(
    ("expression", "sql"),
    [
        ("age >= 0", '"age" >= 0'),
        ("age between 0 and 150", '"age" BETWEEN 0 AND 150'),
        ("length(age) < 5 or age is null", 'length ( "age" ) < 5 OR "age" IS NULL'),
        ("age in (1, 2.5, 'x''y')", "\"age\" IN ( 1 , 2.5 , 'x''y' )"),
    ],
)
def test_check_expressions(expression: str, sql: str) -> None:
    assert check_expression(expression, "age") == sql


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "1 = 1",
        "other > 0",
        "age > 0); DROP TABLE user; --",
        "age > (SELECT 1)",
        "age > 0 -- comment",
        "load_extension('x') OR age",
        "age > 0)",
        "(age > 0",
        'age > "x"',
        "age > 'open",
        "age = x'00'",
        5,
    ],
)
def test_bad_check_expressions(expression: Any) -> None:
    with pytest.raises(ValidationError):
        check_expression(expression, "age")
