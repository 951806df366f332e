"""The README flow and the dqlite-specific edges on a real 3-node cluster.

The whole conformance suite also runs on dqlite (``tests/conformance``, transport
``dqlite``); these tests cover what is particular to the cluster: the URL, the
leader, error codes from dqlite, raw SQL checks made on the text, and the wire codec.
"""

from __future__ import annotations

import json
import struct

import pytest

from fastquartdb import AsyncDatabaseManager, BaseModel, Column
from fastquartdb.client.dqlite import DqliteTransport, parse_dqlite_url
from fastquartdb.client.dqlite.transport import translate_dqlite_error
from fastquartdb.engine.dqlite import wire
from fastquartdb.engine.dqlite.connection import DqliteRequestError
from fastquartdb.protocol.errors import (
    ConnectionLostError,
    DaemonUnavailableError,
    DatabaseBusyError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    ValidationError,
)

from .cluster import Cluster


async def test_readme_flow(dqlite_cluster: Cluster) -> None:
    class User(BaseModel):
        id = Column("INTEGER", primary_key=True)
        username = Column("TEXT", nullable=False)
        age = Column("INTEGER")

    db = await AsyncDatabaseManager.init_engine(dqlite_cluster.url())
    assert db.mode == "dqlite"
    assert isinstance(db.transport, DqliteTransport)
    assert db.transport.leader in dqlite_cluster.addresses

    assert await User.insert({"username": "Alice", "age": 30}) == 1
    assert await User.insert({"username": "Kid", "age": 12}) == 2
    users = await User.fetch(filters={"age": [(">", 20), ("<", 40)]}, columns=["id", "username"])
    assert users == [{"id": 1, "username": "Alice"}]
    assert await User.update(data={"age": 31}, filters={"username": [("=", "Alice")]}) == 1
    assert await User.delete(filters={"age": [("<", 18)]}) == 1
    rows = await User.fetch()
    assert rows == [{"id": 1, "username": "Alice", "age": 31}]
    assert json.loads(json.dumps(rows)) == rows
    await AsyncDatabaseManager.close()


async def test_every_node_serves_the_same_database(dqlite_cluster: Cluster) -> None:
    """A URL listing any one node finds the leader; the data is the cluster's."""
    url = dqlite_cluster.url()
    name = url.rsplit("/", 1)[1]
    db = await AsyncDatabaseManager.init_engine(url)
    await db.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER)")
    await db.execute("INSERT INTO kv VALUES (?, ?)", ["a", 1])
    await AsyncDatabaseManager.close()
    for address in dqlite_cluster.addresses:
        db = await AsyncDatabaseManager.init_engine(f"dqlite://{address}/{name}")
        assert await db.fetch_all("SELECT k, v FROM kv") == [{"k": "a", "v": 1}]
        await AsyncDatabaseManager.close()


async def test_filters_upsert_aggregate_and_transactions(ddb: AsyncDatabaseManager) -> None:
    class Member(BaseModel):
        id = Column("INTEGER", primary_key=True)
        name = Column("TEXT", nullable=False, unique=True)
        team = Column("TEXT")
        active = Column("BOOLEAN")
        joined = Column("DATETIME")

    await ddb.ensure_table(Member)
    await Member.insert_many(
        [{"name": f"m{i}", "team": "red" if i % 2 else "blue", "active": None} for i in range(10)]
    )
    # dqlite would send NULL in BOOLEAN / DATETIME columns as False / "": they must stay None.
    assert await Member.fetch_one({"name": "m0"}, columns=["active", "joined"]) == {
        "active": None,
        "joined": None,
    }
    assert await Member.count([{"team": "red"}, {"name": ("IN", ["m0", "m2"])}]) == 7
    pk = await Member.upsert({"name": "m1", "team": "green"}, conflict="name")
    assert pk == 2
    assert await Member.fetch_one({"id": 2}, columns=["team"]) == {"team": "green"}
    result = await Member.aggregate(
        {"n": ("count", "*")}, group_by=["team"], order_by=["-n", "team"]
    )
    assert result == [
        {"team": "blue", "n": 5},
        {"team": "red", "n": 4},
        {"team": "green", "n": 1},
    ]
    with pytest.raises(IntegrityError, match="UNIQUE"):
        await Member.insert({"name": "m3"})
    with pytest.raises(RuntimeError):
        async with ddb.transaction():
            await Member.update({"team": "x"}, {"team": "red"})
            raise RuntimeError
    assert await Member.count({"team": "x"}) == 0
    async with ddb.transaction():
        await Member.update({"team": "y"}, {"name": "m0"})
        with pytest.raises(IntegrityError):
            async with ddb.transaction():  # a savepoint
                await Member.insert({"name": "m5"})
    assert await Member.count({"team": "y"}) == 1


async def test_raw_sql_guards(ddb: AsyncDatabaseManager) -> None:
    assert await ddb.fetch_one("SELECT :a + :b AS s, :a AS a", {"a": 2, "b": 3}) == {
        "s": 5,
        "a": 2,
    }
    assert await ddb.fetch_one("SELECT ':a' AS t -- :b\n") == {"t": ":a"}
    for sql in (
        "BEGIN",
        " /* c */ commit",
        "SAVEPOINT x",
        "ATTACH 'x.db' AS x",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA foreign_keys=OFF",
        "SELECT load_extension('x')",
        "SELECT 1; DROP TABLE y",
    ):
        with pytest.raises(ValidationError):
            await ddb.execute(sql)
    assert await ddb.fetch_all("SELECT 1 AS one;  ") == [{"one": 1}]
    with pytest.raises(ProgrammingError):
        await ddb.execute("SELEC 1")
    with pytest.raises(ValidationError, match="at most 255"):
        await ddb.execute("SELECT " + ", ".join("?" * 300), list(range(300)))


async def test_no_leader_reachable_is_daemon_unavailable() -> None:
    with pytest.raises(DaemonUnavailableError, match="no dqlite leader"):
        await DqliteTransport.open("dqlite://127.0.0.1:9/app", failover_timeout=0.3)


def test_parse_url() -> None:
    assert parse_dqlite_url("dqlite://127.0.0.1:9001,127.0.0.1:9002/app") == (
        ["127.0.0.1:9001", "127.0.0.1:9002"],
        "app",
    )
    for bad in ("dqlite://127.0.0.1:9001", "dqlite:///app", "dqlite://host/app", "x://h:1/a"):
        with pytest.raises(ValidationError):
            parse_dqlite_url(bad)


def test_error_codes_map_to_classes() -> None:
    for code in (2067, 1555, 787, 275, 1299, 19):
        assert isinstance(translate_dqlite_error(DqliteRequestError(code, "x")), IntegrityError)
    # The same table as the engine's, by result code: every SQLITE_ERROR is the statement's.
    for message in ("no such table: t", "table t already exists", "view v already exists"):
        error = translate_dqlite_error(DqliteRequestError(1, message))
        assert type(error) is ProgrammingError
    assert type(translate_dqlite_error(DqliteRequestError(5, "database is locked"))) is (
        DatabaseBusyError
    )
    for code in (10, 13, 14, 9):  # IOERR, FULL, CANTOPEN, INTERRUPT: the world's doing
        assert type(translate_dqlite_error(DqliteRequestError(code, "x"))) is OperationalError
    assert isinstance(
        translate_dqlite_error(DqliteRequestError(10 | (40 << 8), "not leader")),
        ConnectionLostError,
    )


def test_wire_roundtrip_of_rows() -> None:
    # A ROWS body as a node sends it: 2 columns, one row (int, NULL), then DONE.
    body = struct.pack("<Q", 2) + b"a\x00\x00\x00\x00\x00\x00\x00" + b"b\x00" + b"\x00" * 6
    body += bytes([0x51]) + b"\x00" * 7 + struct.pack("<q", -5) + struct.pack("<Q", 0)
    body += b"\xff" * 8
    reader = wire.MessageReader()
    frame = struct.pack("<IBBH", len(body) // 8, wire.RESPONSE_ROWS, 0, 0) + body
    reader.feed(frame[:5])
    assert reader.next_message() is None
    reader.feed(frame[5:])
    message = reader.next_message()
    assert message is not None
    rows = wire.decode_rows(message)
    assert rows.columns == ("a", "b")
    assert rows.rows == [(-5, None)]
    assert not rows.more


def test_wire_params() -> None:
    encoded = wire.encode_params([1, 2.5, "hé", b"\x01", None, True])
    assert encoded[0] == 6
    assert list(encoded[1:7]) == [1, 2, 3, 4, 5, 1]
    assert len(encoded) % 8 == 0
    with pytest.raises(wire.WireError):
        wire.encode_params(["a\x00b"])
    with pytest.raises(wire.WireError):
        wire.encode_params(list(range(256)))
