"""Declared column types: what is accepted, how it is spelled in the table, and its affinity."""

from __future__ import annotations

import sqlite3

import pytest

from fastquartdb.engine.sqltypes import KINDS, SqlType, affinity_of, parse_type
from fastquartdb.protocol.errors import ValidationError

ACCEPTED = [
    # text as written -> (declared, affinity, kind)
    ("INTEGER", "INTEGER", "INTEGER", "plain"),
    ("integer", "INTEGER", "INTEGER", "plain"),
    ("Int", "INT", "INTEGER", "plain"),
    ("BIGINT", "BIGINT", "INTEGER", "plain"),
    ("smallint", "SMALLINT", "INTEGER", "plain"),
    ("TINYINT", "TINYINT", "INTEGER", "plain"),
    ("MEDIUMINT", "MEDIUMINT", "INTEGER", "plain"),
    ("TEXT", "TEXT", "TEXT", "plain"),
    ("VARCHAR(80)", "VARCHAR(80)", "TEXT", "plain"),
    ("varchar(255)", "VARCHAR(255)", "TEXT", "plain"),
    ("  VarChar ( 80 )  ", "VARCHAR(80)", "TEXT", "plain"),
    ("CHAR(2)", "CHAR(2)", "TEXT", "plain"),
    ("NCHAR(10)", "NCHAR(10)", "TEXT", "plain"),
    ("NVARCHAR(100)", "NVARCHAR(100)", "TEXT", "plain"),
    ("CHARACTER(20)", "CHARACTER(20)", "TEXT", "plain"),
    ("CLOB", "CLOB", "TEXT", "plain"),
    ("REAL", "REAL", "REAL", "plain"),
    ("FLOAT", "FLOAT", "REAL", "plain"),
    ("DOUBLE", "DOUBLE", "REAL", "plain"),
    ("double   precision", "DOUBLE PRECISION", "REAL", "plain"),
    ("BLOB", "BLOB", "BLOB", "plain"),
    ("NUMERIC", "NUMERIC", "NUMERIC", "plain"),
    ("DECIMAL(10,2)", "DECIMAL(10,2)", "NUMERIC", "plain"),
    ("decimal( 10 , 2 )", "DECIMAL(10,2)", "NUMERIC", "plain"),
    ("NUMERIC(5)", "NUMERIC(5)", "NUMERIC", "plain"),
    ("BOOLEAN", "BOOLEAN", "NUMERIC", "bool"),
    ("bool", "BOOL", "NUMERIC", "bool"),
    ("DATE", "DATE", "NUMERIC", "date"),
    ("DATETIME", "DATETIME", "NUMERIC", "datetime"),
    ("timestamp", "TIMESTAMP", "NUMERIC", "datetime"),
    # JSON is declared "JSON TEXT" so that SQLite gives it TEXT affinity and keeps 1.0 a float.
    ("JSON", "JSON TEXT", "TEXT", "json"),
    ("\tjson\n", "JSON TEXT", "TEXT", "json"),
    ("JSON TEXT", "JSON TEXT", "TEXT", "json"),
]


@pytest.mark.parametrize(("text", "declared", "affinity", "kind"), ACCEPTED)
def test_accepted_types(text: str, declared: str, affinity: str, kind: str) -> None:
    assert parse_type(text) == SqlType(declared, affinity, kind)


@pytest.mark.parametrize(("text", "declared", "affinity", "kind"), ACCEPTED)
def test_declared_type_is_what_sqlite_sees(
    text: str, declared: str, affinity: str, kind: str
) -> None:
    # The declared spelling is valid in CREATE TABLE and SQLite keeps it as written.
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(f'CREATE TABLE "t" ("c" {parse_type(text).declared})')
        assert conn.execute('PRAGMA table_info("t")').fetchone()[2] == declared
    finally:
        conn.close()


def test_kinds_are_the_documented_ones() -> None:
    assert KINDS == ("plain", "bool", "date", "datetime", "json")
    for _text, _declared, _affinity, kind in ACCEPTED:
        assert kind in KINDS


@pytest.mark.parametrize(
    ("declared", "affinity"),
    [
        # SQLite's rules, in order (https://sqlite.org/datatype3.html, section 3.1)
        ("INT", "INTEGER"),
        ("UNSIGNED BIG INT", "INTEGER"),
        ("INT8", "INTEGER"),
        ("POINT", "INTEGER"),  # rule 1 wins: "INT" inside the name
        ("CHARINT", "INTEGER"),  # rule 1 before rule 2
        ("VARCHAR(80)", "TEXT"),
        ("NATIVE CHARACTER(70)", "TEXT"),
        ("CLOB", "TEXT"),
        ("text", "TEXT"),
        ("BLOB", "BLOB"),
        ("", "BLOB"),  # no type at all
        ("REAL", "REAL"),
        ("FLOAT", "REAL"),
        ("DOUBLE PRECISION", "REAL"),
        ("NUMERIC", "NUMERIC"),
        ("DECIMAL(10,5)", "NUMERIC"),
        ("BOOLEAN", "NUMERIC"),
        ("DATE", "NUMERIC"),
        ("DATETIME", "NUMERIC"),
        ("JSON", "NUMERIC"),
        ("STRING", "NUMERIC"),  # a classic surprise: not TEXT
    ],
)
def test_affinity_follows_sqlite_rules(declared: str, affinity: str) -> None:
    assert affinity_of(declared) == affinity
    assert affinity_of(declared.lower()) == affinity


def test_affinity_matches_sqlite_itself() -> None:
    # Ask SQLite: typeof() of '5' stored in a column tells its affinity.
    expected = {"INTEGER": "integer", "TEXT": "text", "BLOB": "text", "REAL": "real"}
    conn = sqlite3.connect(":memory:")
    try:
        for declared in ["INT", "VARCHAR(9)", "BLOB", "REAL", "NUMERIC", "BOOLEAN", "JSON"]:
            conn.execute(f'CREATE TABLE "t" ("c" {declared})')
            conn.execute("INSERT INTO t VALUES ('5')")
            stored = conn.execute("SELECT typeof(c) FROM t").fetchone()[0]
            wanted = expected.get(affinity_of(declared), "integer")  # NUMERIC -> integer
            assert stored == wanted, declared
            conn.execute("DROP TABLE t")
    finally:
        conn.close()


@pytest.mark.parametrize(
    "text",
    [
        "STRNG",
        "",
        "   ",
        "INTEGER PRIMARY KEY",
        "TEXT NOT NULL",
        "VARCHAR(80",
        "VARCHAR 80)",
        "VARCHAR()",
        "VARCHAR(-1)",
        "VARCHAR(1.5)",
        "DECIMAL(1,2,3)",
        "INT; DROP TABLE user",
        "TEXT--",
        "TEXT/*x*/",
        'TEXT"',
        "TEXT'",
        "INTEGER\x00",
        "\uff29\uff2e\uff34\uff25\uff27\uff25\uff32",  # INTEGER in fullwidth letters
        "INTEG\u0415R",  # with a Cyrillic capital ie
        "UNSIGNED BIG INT",  # three words: SQLite would accept it, we do not
        "SERIAL",
        "UUID",
    ],
)
def test_unknown_or_garbage_types_are_rejected(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_type(text)
    message = str(caught.value)
    assert repr(text) in message
    # The message lists what is known.
    for known in ("INTEGER", "TEXT", "REAL", "BLOB", "NUMERIC", "VARCHAR", "BOOLEAN", "JSON"):
        assert known in message
    assert "VARCHAR(80)" in message


@pytest.mark.parametrize("value", [None, 1, b"TEXT", ["TEXT"], str])
def test_non_string_types_are_rejected(value: object) -> None:
    with pytest.raises(ValidationError, match="must be a string"):
        parse_type(value)


def test_non_ascii_digits_in_a_size_are_rejected() -> None:
    with pytest.raises(ValidationError):
        parse_type("VARCHAR(\u0668\u0660)")
