"""``fqdb`` on a dqlite cluster: moving a table from a file to a cluster and back."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from .cluster import Cluster

FQDB = os.path.join(os.path.dirname(sys.executable), "fqdb")

SCHEMA = (
    "CREATE TABLE user (id INTEGER PRIMARY KEY, username TEXT NOT NULL UNIQUE, "
    "age INTEGER, avatar BLOB)"
)


def fqdb(*args: str, input: str | None = None, expect: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([FQDB, *args], input=input, capture_output=True, text=True, timeout=60)
    assert done.returncode == expect, done
    assert "Traceback" not in done.stderr
    return done


def rows(path: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT * FROM user ORDER BY id").fetchall()


def test_move_a_table_to_a_cluster_and_back(dqlite_cluster: Cluster, tmp_path: Path) -> None:
    source = str(tmp_path / "source.db")
    with sqlite3.connect(source) as conn:
        conn.execute(SCHEMA)
        conn.executemany(
            "INSERT INTO user VALUES (?, ?, ?, ?)",
            [(1, "alice", 30, b"\x00\xff"), (2, "bob", None, None), (3, "c'q\u00e9", 5, b"")],
        )
    url = dqlite_cluster.url()
    fqdb("query", url, SCHEMA)
    dumped = fqdb("rows", source, "user", "--nl").stdout
    assert fqdb("insert", url, "user", "-", "--nl", input=dumped).stdout == (
        "inserted 3 rows into user\n"
    )
    assert fqdb("count", url, "user").stdout == "3\n"
    assert fqdb("tables", url, "--json").stdout.count('"user"') == 1
    columns = [c["column"] for c in json.loads(fqdb("schema", url, "user", "--json").stdout)]
    assert columns == ["id", "username", "age", "avatar"]
    assert json.loads(fqdb("ping", url, "--json").stdout)["mode"] == "dqlite"
    back = str(tmp_path / "back.db")
    with sqlite3.connect(back) as conn:
        conn.execute(SCHEMA)
    from_cluster = fqdb("rows", url, "user", "--nl").stdout
    assert from_cluster == dumped
    fqdb("insert", back, "user", "-", "--nl", input=from_cluster)
    assert rows(back) == rows(source)


def test_file_only_commands_refuse_a_cluster(dqlite_cluster: Cluster) -> None:
    url = dqlite_cluster.url()
    for command in (["dump", url], ["backup", url, "/tmp/x.db"], ["vacuum", url], ["stats", url]):
        done = fqdb(*command, expect=1)
        assert "works on a database file, not on a dqlite cluster" in done.stderr
    done = fqdb("rows", url, "user", "--mode", "daemon", expect=1)
    assert "a dqlite:// URL names a cluster" in done.stderr
