"""The installed ``fqdb`` console script, run as a subprocess against a file and a daemon."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import pty
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastquartdb.cli.filters import WhereSyntaxError, parse_param, parse_where
from fastquartdb.server import ServerConfig
from tests.helpers import DaemonProcess

FQDB = os.path.join(os.path.dirname(sys.executable), "fqdb")
ROOT = Path(__file__).resolve().parents[2]

SCHEMA = """
CREATE TABLE user (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    age INTEGER,
    email TEXT DEFAULT 'none',
    avatar BLOB
);
CREATE INDEX ix_user_age ON user (age);
CREATE TABLE team (name TEXT PRIMARY KEY, size INTEGER);
CREATE TABLE log (id INTEGER PRIMARY KEY, payload TEXT);
INSERT INTO user (username, age, email, avatar) VALUES
    ('alice', 30, 'alice@example.com', x'00ff'),
    ('bob', 17, NULL, NULL),
    ('carol', 45, 'carol@example.com', NULL),
    ('dave', 22, 'dave@example.com', NULL);
INSERT INTO team VALUES ('red', 3), ('blue', 5);
"""


class Result:
    """One finished ``fqdb`` run."""

    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self) -> Any:
        return json.loads(self.out)

    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.out.splitlines()]

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out[:400]!r}, err={self.err!r})"


def _env() -> dict[str, str]:
    # Show every warning (ResourceWarning included) so the checks below see leaks.
    return {**os.environ, "PYTHONWARNINGS": "default", "FQDB_SOCKET": ""}


def _checked(result: Result, expect: int | None) -> Result:
    assert "Traceback" not in result.err, result
    assert "Warning" not in result.err, result
    if expect is not None:
        assert result.code == expect, result
    if result.code == 1:
        # One line, prefixed: what scripts and people both can read.
        assert result.err.startswith("fqdb: ") and result.err.count("\n") == 1, result
    if result.code == 2:
        assert "usage:" in result.err and "error:" in result.err, result
    return result


def fqdb(*args: str, input: str | None = None, expect: int | None = 0) -> Result:
    """Run the installed script; check its exit status and that it never shows a traceback."""
    proc = subprocess.run(
        [FQDB, *args], input=input, capture_output=True, text=True, timeout=60, env=_env()
    )
    return _checked(Result(proc), expect)


def fqdb_all(*runs: list[str], expect: int | None = 0) -> list[Result]:
    """Run several ``fqdb`` commands at once (none may depend on another); results in order."""
    procs = [
        subprocess.Popen(
            [FQDB, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
        )
        for args in runs
    ]
    # Every process is waited for (and its pipes closed) before any result is judged.
    outputs = [proc.communicate(timeout=60) for proc in procs]
    finished = [
        Result(subprocess.CompletedProcess(args, proc.returncode, out, err))
        for args, proc, (out, err) in zip(runs, procs, outputs)
    ]
    return [_checked(result, expect) for result in finished]


def catalog(db: str) -> list[tuple[Any, ...]]:
    """The schema and the row counts, to prove a command changed nothing."""
    with sqlite3.connect(db) as conn:
        schema = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone() for t in ("user", "team")]
    conn.close()
    return schema + counts


def query(db: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "app.db")
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.close()
    return path


@pytest.fixture(params=["file", "daemon"])
def target(request: pytest.FixtureRequest, db: str) -> Iterator[str]:
    """The database, directly as a file or served by a real fqdb-server."""
    if request.param == "file":
        yield db
        return
    daemon = DaemonProcess(db).start()
    try:
        yield db
    finally:
        assert daemon.stop() == 0


@pytest.fixture
def daemon(db: str) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(db).start()
    try:
        yield proc
    finally:
        assert proc.stop() == 0


class Writer:
    """A ``tests.cli.writer`` process writing rows through the daemon."""

    def __init__(self, db: str, stop: Path) -> None:
        self.stop_file = stop
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.cli.writer", db, str(stop)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()  # 20 rows acknowledged: writes are under way
        assert first.strip() == "20", (first, self.proc.stderr.read() if self.proc.stderr else "")

    def stop(self) -> int:
        """Stop writing; returns how many rows were acknowledged."""
        self.stop_file.touch()
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        return int(out.split()[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def writer(db: str, daemon: DaemonProcess, tmp_path: Path) -> Iterator[Writer]:
    started = Writer(db, tmp_path / "stop-writing")
    try:
        yield started
    finally:
        started.kill()


# ---------------------------------------------------------------- inspection


def test_tables(target: str) -> None:
    table, as_json = fqdb_all(["tables", target], ["tables", target, "--json"])
    assert table.out.splitlines() == [
        "name  type",
        "----  -----",
        "log   table",
        "team  table",
        "user  table",
    ]
    assert as_json.json() == [
        {"name": "log", "type": "table"},
        {"name": "team", "type": "table"},
        {"name": "user", "type": "table"},
    ]


def test_schema(target: str) -> None:
    columns, everything, sql = fqdb_all(
        ["schema", target, "user", "--json"],
        ["schema", target, "--csv"],
        ["schema", target, "user", "--sql"],
    )
    assert [
        (c["column"], c["type"], c["notnull"], c["pk"], c["unique"]) for c in columns.json()
    ] == [
        ("id", "INTEGER", 0, 1, 1),
        ("username", "TEXT", 1, 0, 1),
        ("age", "INTEGER", 0, 0, 0),
        ("email", "TEXT", 0, 0, 0),
        ("avatar", "BLOB", 0, 0, 0),
    ]
    assert columns.json()[3]["default"] == "'none'"
    rows = list(csv.DictReader(io.StringIO(everything.out)))
    assert {r["table"] for r in rows} == {"log", "team", "user"}
    assert ("team", "name", "1") in {(r["table"], r["column"], r["unique"]) for r in rows}
    assert sql.out.startswith("CREATE TABLE user (") and "CREATE INDEX ix_user_age" in sql.out
    assert "team" not in sql.out
    missing = fqdb("schema", target, "nosuch", expect=1)
    assert missing.err == "fqdb: unknown table 'nosuch' (tables: log, team, user)\n"


def test_rows_every_output_format(db: str) -> None:
    table = fqdb("rows", db, "user", "--order", "id").out.splitlines()
    assert table == [
        "id  username  age  email              avatar",
        "--  --------  ---  -----------------  -------",
        " 1  alice      30  alice@example.com  X'00ff'",
        " 2  bob        17  NULL               NULL",
        " 3  carol      45  carol@example.com  NULL",
        " 4  dave       22  dave@example.com   NULL",
    ]
    as_json = fqdb("rows", db, "user", "--json", "--limit", "2").json()
    assert as_json == [
        {
            "id": 1,
            "username": "alice",
            "age": 30,
            "email": "alice@example.com",
            "avatar": "X'00ff'",
        },
        {"id": 2, "username": "bob", "age": 17, "email": None, "avatar": None},
    ]
    as_nl = fqdb("rows", db, "user", "--nl", "-c", "id,email", "-n", "2")
    assert as_nl.out == '{"id": 1, "email": "alice@example.com"}\n{"id": 2, "email": null}\n'
    as_csv = fqdb("rows", db, "user", "--csv", "--columns", "username", "-c", "age", "-n", "2")
    assert as_csv.out == "username,age\nalice,30\nbob,17\n"
    empty = fqdb("rows", db, "user", "--where", "age > 100", "--json")
    assert empty.json() == []


def test_rows_filters_order_limit(target: str) -> None:
    cases = [
        (["--where", "age > 20", "--order", "-age"], ["carol", "alice", "dave"]),
        (
            ["--where", "age >= 18", "--where", "email LIKE '%example.com'", "--order", "age"],
            ["dave", "alice", "carol"],
        ),
        (["-w", "username IN ('bob', 'dave', 'nobody')", "--order", "username"], ["bob", "dave"]),
        (
            ["-w", "age BETWEEN 20 AND 35", "-w", "email IS NOT NULL", "--order=-id"],
            ["dave", "alice"],
        ),
        (["-w", "email IS NULL"], ["bob"]),
        (["--order", "-age,username", "--limit", "1"], ["carol"]),
    ]
    results = fqdb_all(*(["rows", target, "user", "--nl", "-c", "username", *o] for o, _ in cases))
    for (options, expected), result in zip(cases, results):
        assert [row["username"] for row in result.lines()] == expected, options
    unknown = fqdb("rows", target, "user", "-w", "agee > 1", expect=1)
    assert "unknown column 'agee' in table 'user' (columns: id, username, age" in unknown.err


def test_count(target: str) -> None:
    plain, where, as_json, as_csv = fqdb_all(
        ["count", target, "user"],
        ["count", target, "user", "-w", "age < 40", "-w", "age > 18"],
        ["count", target, "team", "--json"],
        ["count", target, "team", "--csv"],
    )
    assert (plain.out, where.out) == ("4\n", "2\n")
    assert as_json.json() == {"count": 2}
    assert as_csv.out == "count\n2\n"
    assert fqdb("count", target, "nosuch", expect=1).err.startswith("fqdb: unknown table")


def test_query(target: str) -> None:
    sql = "SELECT username, age FROM user WHERE age > :min AND username != :skip ORDER BY age"
    rows, counted = fqdb_all(
        ["query", target, sql, "-p", "min:=20", "-p", "skip=dave", "--json"],
        ["query", target, "SELECT count(*) AS n FROM team", "--csv"],
    )
    assert rows.json() == [{"username": "alice", "age": 30}, {"username": "carol", "age": 45}]
    assert counted.out == "n\n2\n"
    changed = fqdb("query", target, "UPDATE user SET age = age + 1 WHERE age > :a", "-p", "a=20")
    assert changed.out == "ok: 3 rows changed\n"
    summary = fqdb("query", target, "INSERT INTO team VALUES (:n, NULL)", "-p", "n=green", "--nl")
    assert summary.lines() == [{"rowcount": 1, "lastrowid": 3}]
    assert query(target, "SELECT size FROM team WHERE name = 'green'") == [(None,)]
    two, refused, missing = fqdb_all(
        ["query", target, "SELECT 1; DROP TABLE user"],
        ["query", target, "PRAGMA journal_mode = DELETE"],
        ["query", target, "SELECT * FROM nosuch"],
        expect=1,
    )
    assert "one statement" in two.err
    assert "journal_mode is managed by FastQuartDB" in refused.err
    assert "no such table: nosuch" in missing.err
    assert query(target, "SELECT count(*) FROM user") == [(4,)]


WHERE_INJECTIONS = [
    "age > 1; DROP TABLE user",
    "age) OR 1=1 --",
    "age > 1 OR 1=1",
    "age > 1 --",
    "age > (SELECT 1)",
    "1=1",
    "age > abs(1)",
    "age = 'x'; DELETE FROM user; --'",
]


def test_where_injection_is_a_usage_error(db: str) -> None:
    before = catalog(db)
    runs = (["rows", db, "user", "--where", text] for text in WHERE_INJECTIONS)
    for text, result in zip(WHERE_INJECTIONS, fqdb_all(*runs, expect=2)):
        assert f"--where {text!r}" in result.err
        assert result.out == ""
    assert catalog(db) == before


def test_injection_is_refused_by_the_engine_too(target: str) -> None:
    before = catalog(target)
    where, col, order, table = fqdb_all(
        ["count", target, "user", "-w", "age > 1; DROP TABLE user", "-w", "age) OR 1=1 --"],
        ["rows", target, "user", "--columns", "id,(SELECT 1)"],
        ["rows", target, "user", "--order", "id; DROP TABLE user"],
        ["count", target, 'user"; DROP TABLE user; --'],
        expect=None,
    )
    assert where.code == 2 and "unexpected ';'" in where.err
    # Identifiers go to the engine, which checks them against the live schema.
    assert col.code == 1 and "invalid column name '(SELECT 1)'" in col.err
    assert order.code == 1 and "invalid column name 'id; DROP TABLE user'" in order.err
    assert table.code == 1 and "invalid table name" in table.err
    assert catalog(target) == before


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("age > 20", ["age", ">", 20]),
        ("age>=-2.5e1", ["age", ">=", -25.0]),
        ("name == 'O''Brien'", ["name", "=", "O'Brien"]),
        ('name != "say ""hi"""', ["name", "!=", 'say "hi"']),
        ("name <> 'x'", ["name", "!=", "x"]),
        ("name not  like 'a%'", ["name", "NOT LIKE", "a%"]),
        ("name GLOB 'a*'", ["name", "GLOB", "a*"]),
        ("id IN (1, 2,3)", ["id", "IN", [1, 2, 3]]),
        ("id not in ()", ["id", "NOT IN", []]),
        ("id BETWEEN 1 AND 5", ["id", "BETWEEN", [1, 5]]),
        ("email IS NULL", ["email", "IS", None]),
        ("email is not null", ["email", "IS NOT", None]),
        ("email = NULL", ["email", "=", None]),
        ("age IS 3", ["age", "IS", 3]),
    ],
)
def test_where_grammar(text: str, parsed: list[Any]) -> None:
    assert parse_where(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("age > 1; DROP TABLE user", "unexpected ';' at position 8"),
        ("age) OR 1=1 --", "expected an operator after the column, got ')' at position 4"),
        ("age > abc", "quote it: 'abc'"),
        ("age > NULL", "use IS NULL or IS NOT NULL"),
        ("age BETWEEN 1 5", "expected AND"),
        ("age IN (1, 2", "expected ',' or ')'"),
        ("age IN 1", "expected '(' after IN"),
        ("age = 'open", "unterminated quoted string"),
        ("age = 1 AND age = 2", "one condition per --where"),
        ("age = 99999999999999999999", "does not fit SQLite's 64-bit INTEGER"),
        ("", "expected a column name first, got end of text"),
        ("age", "expected an operator"),
        ("age REGEXP 'x'", "expected an operator"),
    ],
)
def test_where_grammar_errors(text: str, message: str) -> None:
    with pytest.raises(WhereSyntaxError, match=None) as caught:
        parse_where(text)
    assert message in str(caught.value)


def test_param_values() -> None:
    """``NAME=VALUE`` is the text VALUE exactly; ``NAME:=VALUE`` a JSON number, true/false,
    null or "string"."""
    texts = ("007", "42", "NULL", "'007'", "alice", "a b", "", "true")
    assert [parse_param(f"p={v}") for v in texts] == [("p", v) for v in texts]
    typed = ("42", "-1.5", "null", "true", '"007"', "1e3")
    assert [parse_param(f":p:={v}")[1] for v in typed] == [42, -1.5, None, True, "007", 1000.0]
    for bad in ("p:=abc", "p:=[1]", "p:={}", "p:=007", "p", "=1", "1x=2"):
        with pytest.raises(ValueError):
            parse_param(bad)


# ---------------------------------------------------------------- writing


def test_insert_every_input_format(target: str, tmp_path: Path) -> None:
    users_csv = tmp_path / "users.csv"
    users_csv.write_text('username,age,email\nerin,31,\n"frank, jr",40,f@example.com\n')
    assert fqdb("insert", target, "user", str(users_csv), "--csv").out == (
        "inserted 2 rows into user\n"
    )
    users_json = tmp_path / "users.json"
    users_json.write_text(json.dumps([{"username": "gina", "age": 5}, {"username": "hal"}]))
    fqdb("insert", target, "user", str(users_json), "--json")
    users_nl = tmp_path / "users.nl"
    users_nl.write_text('{"username": "ivy", "age": 50, "avatar": null}\n\n{"username": "jo"}\n')
    fqdb("insert", target, "user", str(users_nl), "--nl")
    fqdb("insert", target, "team", "-", "--nl", input='{"name": "green", "size": 1}\n')
    rows = query(target, "SELECT username, age, email FROM user WHERE id > 4 ORDER BY id")
    assert rows == [
        ("erin", 31, None),  # CSV: '31' into an INTEGER column is stored as 31; '' is NULL
        ("frank, jr", 40, "f@example.com"),
        ("gina", 5, "none"),  # a key left out gets the column's default
        ("hal", None, "none"),
        ("ivy", 50, "none"),
        ("jo", None, "none"),
    ]
    assert query(target, "SELECT * FROM team WHERE name = 'green'") == [("green", 1)]


def test_rows_output_loads_back_unchanged(target: str, tmp_path: Path) -> None:
    """``rows --nl`` into ``insert --nl``: BLOBs, NULLs and text come back as they were."""
    copy = str(tmp_path / "copy.db")
    conn = sqlite3.connect(copy)
    conn.executescript(SCHEMA.split("INSERT INTO")[0])
    conn.close()
    dumped = fqdb("rows", target, "user", "--nl").out
    assert (
        fqdb("insert", copy, "user", "-", "--nl", input=dumped).out == "inserted 4 rows into user\n"
    )
    sql = "SELECT id, username, age, email, typeof(avatar), avatar FROM user ORDER BY id"
    assert query(copy, sql) == query(target, sql)
    assert query(copy, "SELECT avatar FROM user WHERE username = 'alice'") == [(b"\x00\xff",)]
    # Text that only looks like a BLOB literal stays text outside a BLOB column.
    looks = json.dumps({"name": "X'00ff'", "size": 1})
    fqdb("insert", copy, "team", "-", "--nl", input=looks)
    assert query(copy, "SELECT name FROM team") == [("X'00ff'",)]
    # A column with no type has BLOB affinity: its bytes come back as bytes too.
    with contextlib.closing(sqlite3.connect(copy)) as conn, conn:
        conn.execute("CREATE TABLE loose (k INTEGER PRIMARY KEY, v)")
        conn.execute("INSERT INTO loose VALUES (1, x'cafe'), (2, 'text')")
    again = fqdb("rows", copy, "loose", "--nl").out
    with contextlib.closing(sqlite3.connect(copy)) as conn, conn:
        conn.execute("DELETE FROM loose")
    fqdb("insert", copy, "loose", "-", "--nl", input=again)
    assert query(copy, "SELECT k, v FROM loose ORDER BY k") == [(1, b"\xca\xfe"), (2, "text")]


def test_insert_upsert(target: str, tmp_path: Path) -> None:
    data = tmp_path / "users.nl"
    data.write_text(
        '{"username": "alice", "age": 31}\n'
        '{"username": "zoe", "age": 9}\n'
        '{"username": "bob", "age": 18, "email": "bob@example.com"}\n'
    )
    result = fqdb("insert", target, "user", str(data), "--nl", "--upsert", "username")
    assert result.out == "upserted 3 rows into user\n"
    assert query(target, "SELECT id, username, age, email FROM user ORDER BY id") == [
        (1, "alice", 31, "alice@example.com"),  # columns the record leaves out stay as they were
        (2, "bob", 18, "bob@example.com"),
        (3, "carol", 45, "carol@example.com"),
        (4, "dave", 22, "dave@example.com"),
        (5, "zoe", 9, "none"),
    ]
    teams = tmp_path / "teams.csv"
    teams.write_text("name,size\nred,30\nviolet,1\n")
    fqdb("insert", target, "team", str(teams), "--csv", "--upsert", "name")
    assert query(target, "SELECT * FROM team ORDER BY name") == [
        ("blue", 5),
        ("red", 30),
        ("violet", 1),
    ]
    not_unique = fqdb("insert", target, "user", str(data), "--nl", "--upsert", "age", expect=1)
    assert "conflict target (age) is not the primary key or a unique index" in not_unique.err
    assert "(unique keys: id; username)" in not_unique.err
    unknown = fqdb("insert", target, "user", str(data), "--nl", "--upsert", "nick", expect=1)
    assert "unknown column 'nick'" in unknown.err


def test_insert_errors_name_the_line(target: str, tmp_path: Path) -> None:
    data = tmp_path / "users.nl"
    data.write_text(
        '{"username": "n1"}\n{"username": "n2"}\n{"username": "alice"}\n{"username": "n3"}\n'
    )
    duplicate = fqdb("insert", target, "user", str(data), "--nl", expect=1)
    assert duplicate.err == (
        f"fqdb: {data} line 3: UNIQUE constraint failed: user.username; "
        "the 2 rows before it were written\n"
    )
    assert query(target, "SELECT username FROM user WHERE id > 4") == [("n1",), ("n2",)]
    # Two records of one batch that clash with each other: the second one is named.
    data.write_text('{"username": "m1"}\n{"username": "m2"}\n{"username": "m1"}\n')
    clash = fqdb("insert", target, "user", str(data), "--nl", expect=1)
    assert clash.err.endswith(
        " line 3: UNIQUE constraint failed: user.username; the 2 rows before it were written\n"
    )
    data.write_text('{"username": "o1"}\n{"username": "alice"}\n')
    atomic = fqdb("insert", target, "user", str(data), "--nl", "--atomic", expect=1)
    assert atomic.err.endswith(
        "line 2: UNIQUE constraint failed: user.username; nothing was written (--atomic)\n"
    )
    data.write_text('{"username": "x", "nick": "y"}\n')
    unknown = fqdb("insert", target, "user", str(data), "--nl", expect=1)
    assert "line 1: unknown column 'nick' in table 'user'" in unknown.err
    assert query(target, "SELECT count(*) FROM user") == [(8,)]


def test_insert_malformed_input(db: str, tmp_path: Path) -> None:
    files = {
        "nested.nl": '{"username": "x", "tags": [1, 2]}\n',
        "broken.nl": '{"username": "x"}\nnot json\n',
        "short.csv": "username,age\nx\n",
        "object.json": '{"username": "x"}',
        "header.csv": "username,,age\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    nested, broken, short, obj, header, missing = fqdb_all(
        ["insert", db, "user", str(tmp_path / "nested.nl"), "--nl"],
        ["insert", db, "user", str(tmp_path / "broken.nl"), "--nl"],
        ["insert", db, "user", str(tmp_path / "short.csv"), "--csv"],
        ["insert", db, "user", str(tmp_path / "object.json"), "--json"],
        ["insert", db, "user", str(tmp_path / "header.csv"), "--csv"],
        ["insert", db, "user", str(tmp_path / "nope.csv"), "--csv"],
        expect=1,
    )
    assert "nested.nl line 1: the value of 'tags' is a JSON array" in nested.err
    assert "broken.nl line 2: not valid JSON" in broken.err
    assert "short.csv line 2: 1 field, but the header has 2" in short.err
    assert "--json expects an array of objects" in obj.err
    assert "header.csv line 1: the header must name every column" in header.err
    assert missing.err == f"fqdb: No such file or directory: {tmp_path / 'nope.csv'}\n"
    fqdb("insert", db, "user", str(tmp_path / "nested.nl"), expect=2)  # no input format
    assert query(db, "SELECT count(*) FROM user") == [(4,)]


def test_insert_large_file_shows_progress_on_a_terminal(db: str, tmp_path: Path) -> None:
    data = tmp_path / "log.nl"
    with data.open("w") as f:
        for i in range(12_000):
            f.write(json.dumps({"id": i + 1, "payload": f"row {i:06d} " + "x" * 80}) + "\n")
    assert data.stat().st_size > 1 << 20
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [FQDB, "insert", db, "log", str(data), "--nl"],
        stdout=subprocess.PIPE,
        stderr=secondary,
        env=_env(),
    )
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(primary)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, shown
    assert out == b"inserted 12000 rows into log\n"
    assert b"\rfqdb: log [" in shown and b"100.0%  12,000 rows" in shown, shown
    assert query(db, "SELECT count(*) FROM log") == [(12_000,)]

    # Not a terminal: no bar, whatever the size. Upserting the same rows changes nothing.
    again = fqdb("insert", db, "log", str(data), "--nl", "--upsert", "id")
    assert again.err == "" and again.out == "upserted 12000 rows into log\n"
    assert query(db, "SELECT count(*) FROM log") == [(12_000,)]

    # A reader that goes away early (| head) ends fqdb without a traceback.
    head = subprocess.Popen(
        [FQDB, "rows", db, "log", "--csv"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    assert head.stdout is not None and head.stderr is not None
    assert head.stdout.readline() == b"id,payload\n"
    head.stdout.close()
    err = head.stderr.read()
    head.stderr.close()
    head.wait(timeout=60)
    assert err == b"" and head.returncode in (0, 1)


# ---------------------------------------------------------------- the file itself


def test_dump(target: str, tmp_path: Path) -> None:
    result = fqdb("dump", target)
    assert result.out.startswith("BEGIN TRANSACTION;\n") and result.out.endswith("COMMIT;\n")
    copy = sqlite3.connect(tmp_path / "copy.db")
    copy.executescript(result.out)
    assert copy.execute("SELECT * FROM user ORDER BY id").fetchall() == query(
        target, "SELECT * FROM user ORDER BY id"
    )
    copy.close()


def test_backup_while_the_daemon_serves_and_a_writer_writes(
    db: str, writer: Writer, tmp_path: Path
) -> None:
    dest = tmp_path / "backup.db"
    committed = query(db, "SELECT count(*), max(id) FROM log")[0]
    assert committed[0] >= 20
    result = fqdb("backup", db, str(dest))
    assert result.out.startswith(f"backed up {db} to {dest} (")
    written = writer.stop()
    conn = sqlite3.connect(dest)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        count, top = conn.execute("SELECT count(*), max(id) FROM log").fetchone()
        # Every row committed before the backup began is in it, and nothing half-written.
        assert count >= committed[0] and top >= committed[1]
        assert conn.execute(
            "SELECT count(*) FROM log WHERE id <= ?", (committed[1],)
        ).fetchone() == (committed[0],)
        assert conn.execute("SELECT count(*) FROM user").fetchone() == (4,)
    finally:
        conn.close()
    assert written > count, "the writer kept writing during the backup"
    assert os.stat(dest).st_mode & 0o777 == os.stat(db).st_mode & 0o777
    assert fqdb("backup", db, str(dest), expect=1).err == (
        f"fqdb: {dest} exists; remove it or pass --force to replace it\n"
    )
    fqdb("backup", db, str(dest), "--force")
    assert fqdb("backup", db, db, expect=1).err.endswith(
        "is the database itself; choose another destination\n"
    )
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_vacuum(target: str) -> None:
    conn = sqlite3.connect(target)
    conn.executemany("INSERT INTO log (payload) VALUES (?)", [("x" * 2000,)] * 300)
    conn.commit()
    conn.execute("DELETE FROM log")
    conn.commit()
    conn.close()
    result = fqdb("vacuum", target)
    before, after = (int(n) for n in result.out.split(": ")[1].split(" bytes")[0].split(" -> "))
    assert after < before
    assert fqdb("count", target, "user").out == "4\n"  # and whoever serves it still answers


# ---------------------------------------------------------------- the daemon


def test_stats_without_a_daemon(db: str) -> None:
    result = fqdb("stats", db, expect=1)
    assert result.err == (
        f"fqdb: no fqdb-server is running for {db} (nothing answers on {db}.sock); "
        f"stats come from a live daemon: start one with 'fqdb-server {db}'\n"
    )


def test_stats_of_a_busy_daemon(db: str, daemon: DaemonProcess, writer: Writer) -> None:
    stats = fqdb("stats", db, "--json").json()
    assert stats["pid"] == daemon.pid and stats["db"] == os.path.realpath(db)
    assert stats["clients"] == 1 and stats["client_pids"] == [writer.proc.pid]
    assert stats["requests"] >= 20 and stats["requests_per_s"] > 0
    assert stats["requests_per_s_avg"] > 0 and stats["batch_max"] >= 1
    assert stats["queue_depth"] >= 0 and stats["batch_mean"] >= 1.0
    assert 0 < stats["latency_p50_ms"] <= stats["latency_p95_ms"] <= stats["latency_p99_ms"]
    assert stats["replication"] == "off"
    assert stats["writes_resent"] == stats["writes_deduplicated"] == 0  # nothing was lost
    table = fqdb("stats", db, "--interval", "0.1").out
    lines = dict(line.split(None, 1) for line in table.splitlines())
    assert float(lines["latency_p99_ms"]) > 0
    assert lines["client_pids"] == str(writer.proc.pid)
    assert float(lines["requests_per_s"]) > 0
    writer.stop()


def test_ping(target: str, request: pytest.FixtureRequest) -> None:
    served = request.node.callspec.params["target"] == "daemon"
    text, as_json = fqdb_all(["ping", target], ["ping", target, "--json"])
    record = as_json.json()
    assert record["db"] == os.path.realpath(target) and record["ms"] >= 0
    if served:
        assert text.out.startswith("pong from fastquartdb/") and f"on {target}.sock" in text.out
        assert record["mode"] == "daemon" and record["server_pid"] > 0
    else:
        assert text.out.startswith(f"pong from {target} (embedded) in ")
        assert record["mode"] == "embedded"
        no_daemon = fqdb("ping", target, "--mode", "daemon", expect=1)
        assert "no fqdb-server is running for" in no_daemon.err


@pytest.mark.skipif(
    "raw_sql" not in ServerConfig.__dataclass_fields__, reason="fqdb-server has no --no-raw-sql"
)
def test_daemon_without_raw_sql(db: str) -> None:
    daemon = DaemonProcess(db, "--no-raw-sql").start()
    try:
        assert [t["name"] for t in fqdb("tables", db, "--json").json()] == ["log", "team", "user"]
        assert len(fqdb("schema", db, "team", "--json").json()) == 2
        assert fqdb("count", db, "user", "-w", "age > 20").out == "3\n"
        refused = fqdb("query", db, "SELECT 1", expect=1)
        assert "raw SQL is disabled" in refused.err
    finally:
        assert daemon.stop() == 0


# ---------------------------------------------------------------- exit codes


def test_a_missing_database_is_never_created(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.db")
    results = fqdb_all(
        ["tables", missing],
        ["rows", missing, "user", "--where", "age > 1"],
        ["insert", missing, "user", "-", "--nl"],
        ["stats", missing],
        ["backup", missing, str(tmp_path / "b.db")],
        ["dump", missing],
        ["vacuum", missing],
        expect=1,
    )
    for result in results:
        assert result.err == f"fqdb: no such database file: {missing}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database, " * 100)
    results = fqdb_all(
        ["tables", str(text)],
        ["rows", str(text), "user"],
        ["dump", str(text)],
        ["backup", str(text), str(tmp_path / "b.db")],
        ["vacuum", str(text)],
        ["tables", str(tmp_path)],
        expect=1,
    )
    for result in results[:-1]:
        assert result.err == f"fqdb: {text}: file is not a database\n"
    assert results[-1].err == f"fqdb: not a database file: {tmp_path} (a directory or a device?)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_usage_errors(db: str) -> None:
    fqdb_all(
        [],
        ["frobnicate", db],
        ["rows", db],
        ["rows", db, "user", "--limit", "-1"],
        ["rows", db, "user", "--json", "--csv"],
        ["rows", db, "user", "--columns", "id,,age"],
        ["query", db, "SELECT :a", "-p", "a"],
        ["schema", db, "--sql", "--json"],
        expect=2,
    )
    helped, version = fqdb_all(["--help"], ["--version"])
    assert helped.out.startswith("usage: fqdb")
    assert "exit status: 0 ok, 1 error" in helped.out
    assert version.out.startswith("fqdb ")
