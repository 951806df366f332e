"""``fqdb`` checks what the models check, and names what it means (issue 12, section 2)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_cli import fqdb, fqdb_all, query
from tests.helpers import DaemonProcess

CUSTOMER = """
CREATE TABLE customer (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    age INTEGER,
    score REAL,
    vip BOOLEAN,
    born DATE,
    data JSON TEXT,
    loose,
    tag STRING,
    photo BLOB
);
"""


@pytest.fixture
def shop(tmp_path: Path) -> str:
    path = str(tmp_path / "shop.db")
    with sqlite3.connect(path) as conn:
        conn.executescript(CUSTOMER)
    conn.close()
    return path


@pytest.fixture(params=["file", "daemon"])
def served(request: pytest.FixtureRequest, shop: str) -> Iterator[str]:
    """The shop database, directly as a file or served by a real fqdb-server."""
    if request.param == "file":
        yield shop
        return
    daemon = DaemonProcess(shop).start()
    try:
        yield shop
    finally:
        assert daemon.stop() == 0


# ---------------------------------------------------------------- values are checked


def test_insert_checks_values_as_the_models_do(served: str) -> None:
    csv_run = fqdb(
        "insert", served, "customer", "-", "--csv", input="name,age\nFay,notanumber\n", expect=1
    )
    assert csv_run.err == (
        "fqdb: <stdin> line 2: column 'age' of table 'customer' is INTEGER and takes an "
        "integer, got str 'notanumber'; nothing was written\n"
    )
    nl_run = fqdb(
        "insert",
        served,
        "customer",
        "-",
        "--nl",
        input='{"name": "Ann", "age": 3}\n{"name": "Fay", "age": "notanumber"}\n',
        expect=1,
    )
    assert nl_run.err == (
        "fqdb: <stdin> line 2: column 'age' of table 'customer' is INTEGER and takes an "
        "integer, got str 'notanumber'; the row before it was written\n"
    )
    assert query(served, "SELECT name, age, typeof(age) FROM customer") == [("Ann", 3, "integer")]


def test_csv_text_is_converted_per_column_type(served: str) -> None:
    good = (
        "name,age,score,vip,born,data,loose,tag\n"
        'Ann,42,1.5,true,2024-01-02,"{""a"": [1, 2]}",anything,hello\n'
        "Bob,-7,3,FALSE,,,,\n"
        "Cy,,,1,,,X'00ff',\n"
    )
    assert fqdb("insert", served, "customer", "-", "--csv", input=good).out == (
        "inserted 3 rows into customer\n"
    )
    sql = (
        "SELECT name, age, typeof(age), score, typeof(score), vip, born, data, loose, tag "
        "FROM customer ORDER BY id"
    )
    assert query(served, sql) == [
        ("Ann", 42, "integer", 1.5, "real", 1, "2024-01-02", '{"a":[1,2]}', "anything", "hello"),
        ("Bob", -7, "integer", 3.0, "real", 0, None, None, None, None),
        # An untyped column takes anything (a BLOB literal is bytes); so does a type only
        # another tool declares (STRING: SQLite's affinity stores the text as it is).
        ("Cy", None, "null", None, "null", 1, None, None, b"\x00\xff", None),
    ]
    bad = {
        "score": ("name,score\nX,abc\n", "is REAL and takes a number, got str 'abc'"),
        "vip": ("name,vip\nX,yes\n", "is BOOLEAN and takes True/False, got str 'yes'"),
        "born": ("name,born\nX,2024-13-01\n", "is DATE and takes a datetime.date or an ISO"),
        "data": ("name,data\nX,{oops\n", "is JSON and takes JSON text, got str '{oops'"),
        "photo": (
            "name,photo\nX,hi\n",
            "is BLOB and takes bytes, got str 'hi'; write bytes as X'00ff'",
        ),
    }
    for column, (text, message) in bad.items():
        result = fqdb("insert", served, "customer", "-", "--csv", input=text, expect=1)
        assert f"<stdin> line 2: column '{column}' of table 'customer' {message}" in result.err
        assert result.err.endswith("; nothing was written\n")
    assert query(served, "SELECT count(*) FROM customer") == [(3,)]


# ---------------------------------------------------------------- --where on a BOOLEAN column


def test_where_true_false_on_a_boolean_column(served: str) -> None:
    with sqlite3.connect(served) as conn:
        conn.executemany(
            "INSERT INTO customer (name, vip) VALUES (?, ?)", [("a", 1), ("b", 0), ("c", 1)]
        )
    conn.close()
    yes, no, counted, upper = fqdb_all(
        ["rows", served, "customer", "--where", "vip = true", "--columns", "name", "--nl"],
        ["rows", served, "customer", "--where", "vip != true", "--columns", "name", "--nl"],
        ["count", served, "customer", "--where", "vip IN (false)"],
        ["count", served, "customer", "--where", "vip = TRUE"],
    )
    assert [r["name"] for r in yes.lines()] == ["a", "c"]
    assert [r["name"] for r in no.lines()] == ["b"]
    assert counted.out == "1\n" and upper.out == "2\n"
    # Only a BOOLEAN column takes true/false: elsewhere it is a mistake, and the hint says how
    # to compare with the text.
    text = fqdb("count", served, "customer", "--where", "name = true", expect=2)
    assert "column 'name' of table 'customer' is TEXT and takes a string, got bool True" in text.err
    assert "quote it: 'true'" in text.err


# ---------------------------------------------------------------- -p parameters


def test_params_are_text_unless_asked_for_a_number(shop: str) -> None:
    sql = "SELECT :z AS z, typeof(:z) AS t"
    text, number, null, missing = fqdb_all(
        ["query", shop, sql, "-p", "z=007", "--nl"],
        ["query", shop, sql, "-p", "z:=7", "--nl"],
        ["query", shop, sql, "-p", "z:=null", "--nl"],
        ["query", shop, sql, "-p", "z:=0x7"],
        expect=None,
    )
    assert text.lines() == [{"z": "007", "t": "text"}]
    assert number.lines() == [{"z": 7, "t": "integer"}]
    assert null.lines() == [{"z": None, "t": "null"}]
    assert missing.code == 2 and "-p 'z:=0x7'" in missing.err and "JSON" in missing.err


# ---------------------------------------------------------------- names that tables prints


def test_every_name_tables_prints_is_usable(served: str) -> None:
    with sqlite3.connect(served) as conn:
        conn.execute('CREATE TABLE "my table" ("first name" TEXT, n INTEGER)')
        conn.execute("""INSERT INTO "my table" VALUES ('ann', 1), ('bob', 2)""")
        conn.execute("CREATE VIEW adults AS SELECT name FROM customer WHERE age >= 18")
    conn.close()
    names = [t["name"] for t in fqdb("tables", served, "--json").json()]
    assert names == ["adults", "customer", "my table"]
    rows, counted, described = fqdb_all(
        ["rows", served, "my table", "--where", "n > 1", "--nl"],
        ["count", served, "my table"],
        ["schema", served, "my table", "--json"],
    )
    assert rows.lines() == [{"first name": "bob", "n": 2}]
    assert counted.out == "2\n"
    assert [c["column"] for c in described.json()] == ["first name", "n"]
    inserted = fqdb("insert", served, "my table", "-", "--nl", input='{"first name": "cy", "n": 3}')
    assert inserted.out == "inserted 1 row into my table\n"
    assert query(served, 'SELECT count(*) FROM "my table"') == [(3,)]
    # An unknown name lists the views too; a name that is not an identifier and names
    # nothing is still refused as such.
    unknown, rows_unknown, invalid = fqdb_all(
        ["schema", served, "nosuch"],
        ["rows", served, "nosuch"],
        ["rows", served, "no such; table"],
        expect=1,
    )
    listing = "(tables: customer, my table; views: adults)"
    assert unknown.err == f"fqdb: unknown table 'nosuch' {listing}\n"
    assert rows_unknown.err == f"fqdb: unknown table 'nosuch' {listing}\n"
    assert "invalid table name 'no such; table'" in invalid.err


# ---------------------------------------------------------------- inspection changes nothing


def test_inspection_commands_leave_the_file_as_it_was(tmp_path: Path) -> None:
    """A rollback-journal file stays one: same bytes, same journal mode, no -wal/-shm."""
    path = tmp_path / "plain.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(CUSTOMER + "INSERT INTO customer (name, age) VALUES ('ann', 30);")
    conn.close()
    before = path.read_bytes()
    db = str(path)
    fqdb_all(
        ["tables", db],
        ["schema", db],
        ["schema", db, "customer", "--sql"],
        ["rows", db, "customer", "--where", "age > 1"],
        ["count", db, "customer"],
        ["query", db, "SELECT name FROM customer WHERE age > :a", "-p", "a:=1"],
        ["ping", db],
        ["rows", db, "customer", "--mode", "embedded"],
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.db"]
    assert path.read_bytes() == before
    assert query(db, "PRAGMA journal_mode") == [("delete",)]
    # A statement that writes still works, through the writer.
    assert fqdb("query", db, "UPDATE customer SET age = 31").out == "ok: 1 row changed\n"
    assert query(db, "SELECT age FROM customer") == [(31,)]


# ---------------------------------------------------------------- upsert is the engine's op


def test_upsert_through_a_daemon_without_raw_sql(shop: str) -> None:
    with sqlite3.connect(shop) as conn:
        conn.execute("INSERT INTO customer (name, age) VALUES ('ann', 30), ('bob', 40)")
    conn.close()
    daemon = DaemonProcess(shop, "--no-raw-sql").start()
    try:
        data = '{"name": "ann", "age": 31}\n{"name": "cy", "age": 5}\n'
        result = fqdb("insert", shop, "customer", "-", "--nl", "--upsert", "name", input=data)
        assert result.out == "upserted 2 rows into customer\n"
        not_unique, unknown, missing_key = (
            fqdb("insert", shop, "customer", "-", "--nl", "--upsert", key, input=text, expect=1)
            for key, text in (
                ("age", data),
                ("nick", data),
                ("name", '{"name": "dee"}\n{"age": 3}\n'),
            )
        )
    finally:
        assert daemon.stop() == 0
    assert query(shop, "SELECT name, age FROM customer ORDER BY id") == [
        ("ann", 31),
        ("bob", 40),
        ("cy", 5),
        ("dee", None),
    ]
    assert not_unique.err.startswith("fqdb: --upsert age: conflict target (age) is not the")
    assert "(unique keys: id; name)" in not_unique.err
    assert "unknown column 'nick' in table 'customer'" in unknown.err
    assert missing_key.err == (
        "fqdb: <stdin> line 2: upsert needs a value for its conflict column(s) name; "
        "the row before it was written\n"
    )


# ---------------------------------------------------------------- messages name the right thing


def test_messages_name_the_right_thing(shop: str, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_text("not a database, " * 100)
    tables, inserted, dumped, vacuumed = fqdb_all(
        ["tables", str(garbage)],
        ["insert", str(garbage), "t", "-", "--nl"],
        ["dump", str(garbage)],
        ["vacuum", str(garbage)],
        expect=1,
    )
    for result in (tables, inserted, dumped, vacuumed):
        assert result.err == f"fqdb: {garbage}: file is not a database\n", result
    missing_dir = tmp_path / "missing" / "dir" / "x.db"
    backup = fqdb("backup", shop, str(missing_dir), expect=1)
    assert backup.err == f"fqdb: no such directory: {missing_dir.parent} (for {missing_dir})\n"
    assert not (tmp_path / "missing").exists()
    no_param, one_missing, positional = fqdb_all(
        ["query", shop, "SELECT * FROM customer WHERE age > :min AND name = ':not_me'"],
        ["query", shop, "SELECT :a, :b -- :c", "-p", "a=1"],
        ["query", shop, "SELECT ?"],
        expect=2,
    )
    assert "no value for :min: give one with -p min=TEXT or -p min:=NUMBER" in no_param.err
    assert "no value for :b:" in one_missing.err and ":c" not in one_missing.err
    assert "-p binds :NAME placeholders; write :name for ?" in positional.err
    items = tmp_path / "items.json"
    items.write_text('[{"name": "ann"}, {"name": "bob"}, {"name": "ann"}]')
    duplicate = fqdb("insert", shop, "customer", str(items), "--json", expect=1)
    assert duplicate.err == (
        f"fqdb: {items} item 3 of 3: UNIQUE constraint failed: customer.name; "
        "the 2 rows before it were written\n"
    )


def test_placeholders_skip_quotes_and_comments() -> None:
    from fastquartdb.engine.dqlite.rawsql import placeholders

    assert placeholders(
        "SELECT :a, ':b', \":c\", [:d], `:e` -- :f\n/* :g */ FROM t WHERE x = @a"
    ) == (
        ["a"],
        False,
    )
    assert placeholders("SELECT $q, ?1, 'it''s :no', :yes") == (["q", "yes"], True)
