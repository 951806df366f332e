"""Request keys in the engine: a keyed write runs once, whoever sends it how often."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastquartdb.engine import Engine, requestkeys
from fastquartdb.protocol.errors import (
    ConnectionLostError,
    IdempotencyKeyError,
    RequestTimeoutError,
    ValidationError,
)

TABLE = {
    "op": "ensure_table",
    "table": "note",
    "columns": [
        {"name": "id", "type": "INTEGER", "primary_key": True},
        {"name": "body", "type": "TEXT"},
    ],
}


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "keys.db")


@pytest.fixture
def engine(path: str) -> Iterator[Engine]:
    eng = Engine(Engine.connect(path))
    assert eng.run_batch([TABLE])[0][0]
    yield eng
    eng.conn.close()


def _insert(body: str, seq: int, client: str = "c1", **extra: Any) -> dict[str, Any]:
    return {
        "op": "insert",
        "table": "note",
        "values": {"body": body},
        "key": [client, seq],
        **extra,
    }


def _rows(engine: Engine) -> list[str]:
    return [r[0] for r in engine.conn.execute("SELECT body FROM note ORDER BY id")]


def test_a_resent_write_is_answered_from_its_record(engine: Engine) -> None:
    assert engine.run_batch([_insert("a", 1), _insert("b", 2)]) == [(True, 1), (True, 2)]
    # The reply was lost; the client resends both, and one new write with them.
    again = engine.run_batch(
        [_insert("a", 1, resent=True), _insert("c", 3), _insert("b", 2, resent=True)]
    )
    assert again == [(True, 1), (True, 3), (True, 2)]
    assert _rows(engine) == ["a", "b", "c"]
    assert engine.keys.stats.deduplicated == 2
    assert engine.keys.stats.resent == 2


def test_a_first_send_already_recorded_elsewhere_still_runs_once(path: str, engine: Engine) -> None:
    # Another writer of the file (embedded mode, a new daemon) ran the resend first; this
    # writer was stopped and now runs the first send, which it does not look up.
    other = Engine(Engine.connect(path))
    assert other.run_batch([_insert("a", 7, resent=True)]) == [(True, 1)]
    other.conn.close()
    outcomes = engine.run_batch([_insert("x", 8), _insert("a", 7), _insert("y", 9)])
    assert outcomes == [(True, 2), (True, 1), (True, 3)]
    assert _rows(engine) == ["a", "x", "y"]


def test_the_same_key_twice_in_one_batch_runs_once(engine: Engine) -> None:
    outcomes = engine.run_batch([_insert("a", 1), _insert("a", 1, resent=True)])
    assert outcomes == [(True, 1), (True, 1)]
    assert _rows(engine) == ["a"]


def test_a_failed_write_leaves_no_record(engine: Engine) -> None:
    bad = {"op": "insert", "table": "note", "values": {"nope": 1}, "key": ["c1", 1]}
    ok, error = engine.run_batch([bad])[0]
    assert not ok and isinstance(error, ValidationError)
    tables = engine.conn.execute("SELECT name FROM sqlite_master WHERE name = '_fqdb_requests'")
    assert tables.fetchone() is None  # not even the table: nothing was recorded
    # Resent, it runs again (and fails again): nothing had committed.
    assert not engine.run_batch([dict(bad, resent=True)])[0][0]


def test_a_rolled_back_batch_takes_its_records_with_it(engine: Engine) -> None:
    # A deferred foreign key fails at COMMIT: the offender is rolled back, record and all.
    engine.conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    engine.conn.execute(
        "CREATE TABLE child (id INTEGER PRIMARY KEY, p INTEGER "
        "REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"
    )
    engine._forget_schema()
    good = _insert("ok", 1)
    orphan = {"op": "insert", "table": "child", "values": {"p": 99}, "key": ["c1", 2]}
    (ok1, _), (ok2, _) = engine.run_batch([good, orphan])
    assert ok1 and not ok2
    seqs = [r[0] for r in engine.conn.execute("SELECT seq FROM _fqdb_requests")]
    assert seqs == [1]


def test_idempotency_key_returns_the_first_result_and_refuses_other_content(engine: Engine) -> None:
    first = {
        "op": "insert",
        "table": "note",
        "values": {"body": "order", "id": 40},
        "idempotency_key": "k-1",
    }
    assert engine.run_batch([first]) == [(True, 40)]
    # The same request, its map in another order: the same answer, nothing run.
    reordered = {
        "values": {"id": 40, "body": "order"},
        "table": "note",
        "op": "insert",
        "idempotency_key": "k-1",
    }
    assert engine.run_batch([reordered]) == [(True, 40)]
    other = dict(first, values={"body": "other"})
    ok, error = engine.run_batch([other])[0]
    assert not ok and isinstance(error, IdempotencyKeyError)
    assert "already used for a different request" in str(error)
    assert _rows(engine) == ["order"]


@pytest.mark.parametrize(
    "key",
    [
        ["c1"],
        ["", 1],
        ["c1", -1],
        ["c1", "1"],
        "c1:1",
        ["x" * 65, 1],
        ["c1", True],
        None,
        ["c1", 2**63],
        ["c1", 2**64 - 1],
    ],
)
def test_a_malformed_key_fails_alone(engine: Engine, key: Any) -> None:
    ok, error = engine.run_batch([dict(_insert("a", 1), key=key), _insert("b", 2)])[0]
    assert not ok and isinstance(error, ValidationError)
    assert "'key' must be [client, seq]" in str(error)
    assert _rows(engine) == ["b"]
    assert engine.run_batch([_insert("c", 3)]) == [(True, 2)]


@pytest.mark.parametrize("acked", [2**64 - 1, -1, "7", 1.5])
def test_a_malformed_acked_fails_alone_and_is_not_kept(engine: Engine, acked: Any) -> None:
    # Once, an acked beyond SQLite's integers failed every later write batch until restart.
    ok, error = engine.run_batch([_insert("a", 1, acked=acked), _insert("b", 2)])[0]
    assert not ok and isinstance(error, ValidationError) and "'acked'" in str(error)
    assert engine.run_batch([_insert("c", 3)]) == [(True, 2)]
    assert _rows(engine) == ["b", "c"]


def test_an_expired_request_is_refused_not_run(engine: Engine) -> None:
    # Its client gave up on this copy (a stopped daemon resuming) and resent it elsewhere.
    stale = _insert("stale", 1, expires=time.time() - 1)
    live = _insert("live", 2, expires=time.time() + 60)
    (ok, error), (ok2, _) = engine.run_batch([stale, live])
    assert not ok and isinstance(error, RequestTimeoutError) and ok2
    assert _rows(engine) == ["live"]


def test_a_failed_interactive_commit_on_a_new_file_leaves_keys_working(engine: Engine) -> None:
    # record_commit creates the record tables inside the transaction; COMMIT fails on a
    # deferred foreign key and the client rolls back: the tables are gone with it.
    engine.conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    engine.conn.execute(
        "CREATE TABLE child (id INTEGER PRIMARY KEY, p INTEGER "
        "REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"
    )
    engine._forget_schema()
    steps = [
        {"op": "begin", "txn": 1},
        {"op": "insert", "table": "child", "values": {"p": 9}, "txn": 1},
        {"op": "commit", "txn": 1, "key": ["c1", 1]},
        {"op": "rollback", "txn": 1},
    ]
    outcomes = engine.run_in_transaction(steps)
    assert [ok for ok, _ in outcomes] == [True, True, False, True]
    assert engine.run_batch([_insert("a", 2), _insert("b", 3)]) == [(True, 1), (True, 2)]


def test_a_key_resolved_earlier_in_the_batch_is_not_answered_as_success(engine: Engine) -> None:
    resolve = {"op": "resolve", "key": ["c1", 4]}
    (ok, answer), (ok2, error) = engine.run_batch([resolve, _insert("late", 4, resent=True)])
    assert ok and answer == {"committed": False}
    assert not ok2 and isinstance(error, ConnectionLostError)
    assert _rows(engine) == []


def test_counts_are_taken_once_when_a_batch_runs_again(path: str, engine: Engine) -> None:
    other = Engine(Engine.connect(path))
    assert other.run_batch([_insert("a", 7, resent=True)]) == [(True, 1)]
    other.conn.close()
    before = engine.keys.stats.as_dict()
    # The first send of 7 collides at flush: the batch runs again, looking keys up.
    outcomes = engine.run_batch([_insert("r", 8, resent=True), _insert("a", 7)])
    assert outcomes == [(True, 2), (True, 1)]
    after = engine.keys.stats.as_dict()
    assert after["resent"] - before["resent"] == 1
    assert after["deduplicated"] - before["deduplicated"] == 1


def test_a_raw_read_is_not_recorded_but_a_raw_write_is(engine: Engine) -> None:
    read = {"op": "execute", "sql": "SELECT 1 AS one", "key": ["c1", 1]}
    write = {"op": "execute", "sql": "INSERT INTO note (body) VALUES ('r')", "key": ["c1", 2]}
    assert engine.run_batch([read, write])[1][1]["rowcount"] == 1
    seqs = [r[0] for r in engine.conn.execute("SELECT seq FROM _fqdb_requests")]
    assert seqs == [2]
    again = engine.run_batch([dict(write, resent=True)])[0][1]
    assert again["rowcount"] == 1 and _rows(engine) == ["r"]


def test_resolve_answers_and_makes_never_final(engine: Engine) -> None:
    assert engine.run_batch([_insert("a", 1)])[0][0]
    resolve = {"op": "resolve", "key": ["c1", 1]}
    assert engine.run_batch([resolve]) == [(True, {"committed": True, "result": 1})]
    never = {"op": "resolve", "key": ["c1", 5]}
    assert engine.run_batch([never, never]) == [(True, {"committed": False})] * 2
    # The commit of key 5 arrives late (its writer was stopped): it must not commit now.
    txn = [{"op": "begin", "txn": 1}, _insert("late", 0, txn=1)]
    txn[1].pop("key")
    assert all(ok for ok, _ in engine.run_in_transaction(txn))
    ok, error = engine.run_in_transaction([{"op": "commit", "txn": 1, "key": ["c1", 5]}])[0]
    assert not ok and isinstance(error, ConnectionLostError)
    assert not engine.in_transaction
    assert _rows(engine) == ["a"]


def test_a_keyed_commit_is_recorded_with_its_transaction(engine: Engine) -> None:
    steps = [
        {"op": "begin", "txn": 1},
        {"op": "insert", "table": "note", "values": {"body": "t"}, "txn": 1},
    ]
    assert all(ok for ok, _ in engine.run_in_transaction(steps))
    assert engine.run_in_transaction([{"op": "commit", "txn": 1, "key": ["c1", 3]}]) == [
        (True, None)
    ]
    assert engine.run_batch([{"op": "resolve", "key": ["c1", 3]}]) == [
        (True, {"committed": True, "result": None})
    ]


def test_records_are_pruned_by_ack_and_by_age(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert all(ok for ok, _ in engine.run_batch([_insert(str(i), i) for i in range(10)]))
    assert all(ok for ok, _ in engine.run_batch([_insert("z", 0, client="c2")]))
    # c1 waits for nothing below 8 any more.
    assert engine.run_batch([_insert("n", 10, acked=8)])[0][0]
    left = [
        tuple(r)
        for r in engine.conn.execute("SELECT client, seq FROM _fqdb_requests ORDER BY 1, 2")
    ]
    assert left == [("c1", 8), ("c1", 9), ("c1", 10), ("c2", 0)]
    # Past the window, everything goes (c2 died and will never ack).
    # Both clocks move on (a wall clock that jumped alone would be skipped: see the next test).
    step = engine.keys.window + 5
    wall, mono = time.time() + step, time.monotonic() + step
    monkeypatch.setattr(requestkeys.time, "time", lambda: wall)
    monkeypatch.setattr(requestkeys.time, "monotonic", lambda: mono)
    assert engine.run_batch([_insert("m", 11)])[0][0]
    left = [tuple(r) for r in engine.conn.execute("SELECT client, seq FROM _fqdb_requests")]
    assert left == [("c1", 11)]
    assert engine.keys.stats.pruned == 8 + 4


def test_a_wall_clock_jump_does_not_prune_everything(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert engine.run_batch([_insert("a", 1)])[0][0]
    wall = time.time() + engine.keys.window + 5  # a VM resumed, a clock step
    monkeypatch.setattr(requestkeys.time, "time", lambda: wall)
    engine.keys._next_prune = 0.0
    assert engine.run_batch([_insert("b", 2)])[0][0]
    seqs = sorted(r[0] for r in engine.conn.execute("SELECT seq FROM _fqdb_requests"))
    assert seqs == [1, 2]


def test_caller_keys_are_bounded_in_number(engine: Engine) -> None:
    engine.keys.idempotency_max = 3
    for i in range(6):
        req = {
            "op": "insert",
            "table": "note",
            "values": {"body": str(i)},
            "idempotency_key": f"k{i}",
        }
        engine.keys._next_prune = 0.0
        assert engine.run_batch([req])[0][0]
    keys = [r[0] for r in engine.conn.execute("SELECT key FROM _fqdb_idempotency ORDER BY at")]
    assert len(keys) == 3 and keys[-1] == "k5"  # the newest kept, the oldest gone


def test_raw_sql_may_read_the_records_but_not_write_them(engine: Engine) -> None:
    assert engine.run_batch([_insert("a", 1)])[0][0]
    ok, rows = engine.run_batch([{"op": "execute", "sql": "SELECT seq FROM _fqdb_requests"}])[0]
    assert ok and [list(r) for r in rows["rows"]] == [[1]]
    for sql in (
        "DELETE FROM _fqdb_requests",
        "DROP TABLE _fqdb_requests",
        "CREATE INDEX ix ON _fqdb_requests (at)",
        "CREATE TRIGGER t BEFORE INSERT ON _fqdb_requests BEGIN SELECT RAISE(IGNORE); END",
        "CREATE TRIGGER _fqdb_t AFTER INSERT ON note BEGIN DELETE FROM _fqdb_requests; END",
        "CREATE TABLE _fqdb_mine (x)",
    ):
        ok, error = engine.run_batch([{"op": "execute", "sql": sql}])[0]
        assert not ok and isinstance(error, ValidationError), sql
        assert "FastQuartDB's own records" in str(error), sql
    assert engine.conn.execute("SELECT count(*) FROM _fqdb_requests").fetchone()[0] == 1


def test_a_raw_trigger_cannot_reach_the_records_through_the_engine(engine: Engine) -> None:
    # Made by raw SQL on a user table, fired by the engine's own insert (not raw): refused.
    sql = "CREATE TRIGGER wipe AFTER INSERT ON note BEGIN DELETE FROM _fqdb_requests; END"
    assert engine.run_batch([{"op": "execute", "sql": sql}])[0][0]
    assert engine.run_batch([_insert("a", 1)])[0][0] is False
    assert _rows(engine) == []


def test_the_record_tables_are_not_user_tables(engine: Engine) -> None:
    assert engine.run_batch([_insert("a", 1)])[0][0]
    ok, error = engine.run_batch([{"op": "fetch", "table": "_fqdb_requests"}])[0]
    assert not ok and isinstance(error, ValidationError)
    assert "reserved" in str(error)
    bad = dict(TABLE, table="_fqdb_mine")
    ok, error = engine.run_batch([bad])[0]
    assert not ok and "reserved" in str(error)
    with sqlite3.connect(engine.conn.execute("PRAGMA database_list").fetchone()[2]) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert {"_fqdb_requests", "_fqdb_idempotency"} <= names


def test_a_key_with_content_nested_too_deep_fails_alone(engine: Engine) -> None:
    # The digest of a caller key's request walks its content: 5,000 levels must fail this
    # request, not the batch (it once left the batch's transaction open).
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    bad = {"op": "insert", "table": "note", "values": {"body": deep}, "idempotency_key": "d"}
    (ok, error), (ok2, _) = engine.run_batch([bad, _insert("fine", 1)])
    assert not ok and isinstance(error, ValidationError) and ok2
    assert engine.run_batch([_insert("next", 2)]) == [(True, 2)]
    assert _rows(engine) == ["fine", "next"]
