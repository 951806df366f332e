"""Protocol fuzzing against a real ``fqdb-server``: bad input never stops the daemon.

One daemon subprocess (``--max-frame 65536``) serves a temporary file for the
whole module. Every case opens a new raw ``AF_UNIX`` connection, sends its
bytes (usually after a valid ``hello``), reads whatever the daemon answers
within a timeout, half-closes and waits for the daemon to close. Each reply
must be a valid frame: ``ok: true``, or ``ok: false`` with a code from
``ERROR_CLASSES``; a close instead of a reply is also fine. After **every**
case a well-behaved client on its own persistent connection
(``SocketTransport``) inserts a row and counts the rows. The last test checks
the daemon is alive, ``stats`` answers, its file descriptors are back to the
baseline, its RSS is bounded, and ``PRAGMA integrity_check`` is ok.

The cases:

* truncated frames, then close;
* length prefixes larger than the body, and larger than ``--max-frame``;
* bodies that are not maps; the first frame not a ``hello``;
* every field of every op (names taken from ``protocol/PROTOCOL.md`` and
  ``ALL_OPS``) with values of every type, random and as a deterministic sweep;
* unknown ops; pipelined sequences of requests;
* integers at and past the 64-bit limits, written as raw ``0xcf``/``0xd3`` bytes;
* nesting 100 000 and 60 000 levels deep (``0x91`` repeated), and nested maps;
* invalid UTF-8 in str, in keys and values; random bytes, framed and not.

Defects found are the regression tests at the end (they were xfail until fixed); the general
fuzzing once steered clear of their exact triggers so that one
known defect does not hide the others. ``tests/faults/fuzz_soak.py`` runs the
same generators for as long as asked (``make fuzz``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from fastquartdb.client.connection import SocketTransport
from fastquartdb.protocol import ALL_OPS, ERROR_CLASSES, FrameDecoder, FrameError
from tests.helpers import DaemonProcess, integrity

MAX_FRAME = 65536
#: How long a case waits for the replies it expects (they normally take a few ms).
REPLY_TIMEOUT = 2.0
#: How long the daemon may take to close a connection whose client half-closed it.
CLOSE_TIMEOUT = 5.0
#: The daemon's RSS may grow this much over the whole run (MiB): caches, not leaks.
RSS_BOUND_MIB = 48
#: Open descriptors may differ from the baseline by this much (the health client stays).
FD_SLACK = 2

PROTOCOL_MD = Path(__file__).resolve().parents[2] / "protocol" / "PROTOCOL.md"
HEADER = struct.Struct(">I")

# ---------------------------------------------------------------------------- vocabulary


def _spec_tables(header: str) -> set[str]:
    """First-column names of the PROTOCOL.md tables whose header row starts ``| header |``."""
    names: set[str] = set()
    inside = False
    for line in PROTOCOL_MD.read_text(encoding="utf-8").splitlines():
        if line.startswith(f"| {header} |"):
            inside = True
        elif not line.startswith("|"):
            inside = False
        elif inside:
            names.update(re.findall(r"^\| `([a-z_]+)`", line))
    return names


def _spec_ops() -> set[str]:
    """Op names from the ``### 7.x `op` `` headings of PROTOCOL.md."""
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    ops: set[str] = set()
    for heading in re.findall(r"^### 7\.\d+ (.+)$", text, re.MULTILINE):
        ops.update(re.findall(r"`([a-z_]+)`", heading))
    return ops


BRIEF_FIELDS = {
    "table",
    "columns",
    "values",
    "where",
    "order_by",
    "limit",
    "offset",
    "rows",
    "sql",
    "params",
    "txn",
    "savepoint",
    "id",
    "op",
    "version",
    "all_rows",
    "client",
}
#: Every request field PROTOCOL.md names (its ``| field | type |`` tables), and the brief's.
FIELDS: list[str] = sorted(BRIEF_FIELDS | _spec_tables("field"))
#: The keys of an ensure_table column map (its ``| key | type | default |`` table).
COLUMN_KEYS: list[str] = sorted(_spec_tables("key | type | default") - {"name", "type"})
OPS: list[str] = sorted(set(ALL_OPS) | _spec_ops())
COLUMNS = ["id", "name", "n", "b"]
# The well-behaved client's table: no generator ever names it.
HEALTH_TABLE = "health"
FUZZ_TABLE_COLUMNS = [
    {"name": "id", "type": "INTEGER", "primary_key": True},
    {"name": "name", "type": "TEXT"},
    {"name": "n", "type": "INTEGER"},
    {"name": "b", "type": "BLOB"},
]
TABLES = ["fuzz", "fuzz", "nope", "sqlite_master", "fuzz; --", "", "Fuzz"]

SQL_SAMPLES = [
    "SELECT 1",
    "SELECT * FROM fuzz",
    "SELECT ?",
    "SELECT :a",
    "INSERT INTO fuzz (name) VALUES (?)",
    "UPDATE fuzz SET n = n + 1 WHERE id < 0",
    "PRAGMA journal_mode",
    "PRAGMA journal_mode=DELETE",
    "PRAGMA synchronous=OFF",
    "ATTACH DATABASE ':memory:' AS other",
    "SELECT load_extension('nope')",
    "SAVEPOINT fuzz_sp",
    "COMMIT",
    "BEGIN IMMEDIATE",
    "SELECT 1; SELECT 2",
    "SELECT",
    "",
    " ",
    "\x00",
]

# ---------------------------------------------------------------------------- strategies

UTF8_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
HUGE_INTS = st.sampled_from([2**64 - 1, 2**63, 2**63 - 1, -(2**63), -(2**63) + 1, 2**32, -1])
INTS = st.one_of(st.integers(min_value=-(2**63), max_value=2**64 - 1), HUGE_INTS)
SCALARS = st.one_of(
    INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    UTF8_TEXT,
    st.binary(max_size=40),
    st.none(),
    st.booleans(),
)
#: Anything msgpack carries: scalars, lists and maps (str keys), a few levels deep.
WILD: SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(UTF8_TEXT, inner, max_size=3)
    ),
    max_leaves=8,
)
NAMES = st.one_of(
    st.sampled_from([*COLUMNS, "nope", "", "-id", "+n", "fuzz.n", "nope.id", "*", "rowid"]), WILD
)
STR_NAMES = NAMES.filter(lambda name: isinstance(name, str))
OPERATORS = st.one_of(
    st.sampled_from(["=", "!=", "<", ">=", "LIKE", "not  like", "IN", "BETWEEN", "IS NOT", "==="]),
    WILD,
)
CONDITION = st.one_of(st.tuples(NAMES, OPERATORS, WILD).map(list), st.lists(WILD, max_size=4))
WHERE = st.one_of(st.lists(st.lists(CONDITION, max_size=3), max_size=3), WILD)
NAME_LISTS = st.one_of(NAMES, st.lists(NAMES, max_size=3))
COLUMN_VALUES: dict[str, SearchStrategy[Any]] = {
    "name": NAMES,
    "type": st.sampled_from(["TEXT", "INTEGER", "BLOB", "varchar(8)", "DECIMAL(10, 2)", "STRNG"]),
    "references": st.sampled_from(["fuzz.id", "nope.id", "fuzz", "a.b.c", "fuzz.id; --"]),
    "on_delete": st.sampled_from(["cascade", "SET  NULL", "drop", ""]),
    "check": st.sampled_from(
        ["n > 0", "length(name) < 5", "n > 0); DROP TABLE fuzz; --", "other > 1", "(n", "n"]
    ),
}
COLUMN_MAPS = st.builds(
    dict,
    st.fixed_dictionaries(
        {"name": COLUMN_VALUES["name"], "type": COLUMN_VALUES["type"]},
        optional={key: st.one_of(COLUMN_VALUES.get(key, WILD), WILD) for key in COLUMN_KEYS},
    ),
)
PLAUSIBLE: dict[str, SearchStrategy[Any]] = {
    "table": st.sampled_from(TABLES),
    "columns": st.one_of(st.lists(NAMES, max_size=4), st.lists(COLUMN_MAPS, max_size=3)),
    "values": st.dictionaries(STR_NAMES, WILD, max_size=4),
    "where": WHERE,
    "having": WHERE,
    "order_by": NAME_LISTS,
    "group_by": NAME_LISTS,
    "conflict": NAME_LISTS,
    "update": NAME_LISTS,
    "indexes": st.lists(st.lists(NAMES, max_size=2), max_size=2),
    "unique": st.lists(st.lists(NAMES, max_size=2), max_size=2),
    "aggregates": st.dictionaries(
        STR_NAMES,
        st.one_of(
            st.tuples(st.sampled_from(["count", "SUM", "max", "nope"]), NAMES).map(list), WILD
        ),
        max_size=3,
    ),
    "join": st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {"table": st.sampled_from(TABLES)},
                optional={"kind": st.sampled_from(["inner", "left", "cross", "LEFT"])},
            ),
            WILD,
        ),
        max_size=2,
    ),
    "limit": INTS,
    "offset": INTS,
    "rows": st.lists(st.lists(WILD, max_size=4), max_size=4),
    "sql": st.sampled_from(SQL_SAMPLES),
    "params": st.one_of(
        st.lists(WILD, max_size=3), st.dictionaries(UTF8_TEXT, WILD, max_size=3), WILD
    ),
    "txn": st.one_of(st.integers(-2, 3), HUGE_INTS),
    "savepoint": st.sampled_from(["sp1", "fqdb_request", "a b", "", "sqlite_x"]),
    "version": st.sampled_from([1, 0, 2]),
    "op": st.sampled_from(OPS),
    "id": st.integers(min_value=0, max_value=2**64 - 1),
}
#: For each field: a plausible value (to reach the deeper checks) or anything at all.
FIELD_VALUES: dict[str, SearchStrategy[Any]] = {
    name: st.one_of(PLAUSIBLE[name], WILD) if name in PLAUSIBLE else WILD for name in FIELDS
}


def request_maps(op: SearchStrategy[Any] | None = None) -> SearchStrategy[dict[str, Any]]:
    """Request maps: an op (from the spec, or anything) and a few fields of any type."""
    # Mostly real ops (to reach each op's checks), a quarter anything at all.
    known = st.sampled_from(OPS)
    ops = op if op is not None else st.one_of(known, known, known, WILD)
    fields = st.lists(
        st.sampled_from([name for name in FIELDS if name != "op"]), max_size=6, unique=True
    ).flatmap(lambda names: st.fixed_dictionaries({name: FIELD_VALUES[name] for name in names}))
    return st.builds(lambda op_value, chosen: {"op": op_value, **chosen}, ops, fields)


def pack(obj: Any) -> bytes:
    """msgpack as the protocol writes it (str as str, bytes as bin)."""
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def frame(body: bytes) -> bytes:
    """A frame around ``body`` whatever it holds."""
    return HEADER.pack(len(body)) + body


def request_frame(message: dict[str, Any]) -> bytes:
    return frame(pack(message))


HELLO = request_frame({"id": 0, "op": "hello", "version": 1, "client": "fuzz/1"})


def _valid_requests() -> SearchStrategy[dict[str, Any]]:
    return st.one_of(
        request_maps(st.sampled_from(OPS)),
        st.fixed_dictionaries(
            {"id": st.integers(0, 99), "op": st.just("fetch"), "table": st.just("fuzz")},
            optional={"where": WHERE, "limit": INTS},
        ),
    )


# Case shapes: each is (strategy, runner) and is used by the tests here and by the soak.

TRUNCATED = st.tuples(_valid_requests(), st.floats(0, 1, exclude_max=True), st.booleans())
SHORT_BODY = st.tuples(
    st.integers(1, MAX_FRAME), st.binary(max_size=64), st.booleans(), st.integers(0, 64)
)
OVERSIZED = st.tuples(st.integers(MAX_FRAME + 1, 2**32 - 1), st.binary(max_size=64), st.booleans())
NON_MAPS = st.tuples(
    st.one_of(SCALARS, st.lists(WILD, max_size=4)).filter(lambda v: not isinstance(v, dict)),
    st.booleans(),
)
WRONG_TYPES = request_maps()
PIPELINES = st.lists(request_maps(st.sampled_from(OPS)), min_size=1, max_size=6)
UNKNOWN_OPS = UTF8_TEXT.filter(lambda op: op not in ALL_OPS and op not in OPS)
INVALID_UTF8 = st.tuples(
    st.binary(min_size=1, max_size=24).filter(lambda data: not _decodes(data)),
    st.sampled_from(["op", "value", "key", "where", "sql"]),
)
RANDOM_BODIES = st.binary(min_size=1, max_size=300)
RANDOM_STREAMS = st.tuples(st.binary(min_size=1, max_size=600), st.booleans())


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# ---------------------------------------------------------------------------- the daemon


@dataclass
class Exchange:
    """What one raw connection got back."""

    replies: list[dict[str, Any]] = field(default_factory=list)
    #: The daemon closed (or reset) before we half-closed.
    closed_by_daemon: bool = False
    timed_out: bool = False


def _proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def check_reply(reply: object) -> dict[str, Any]:
    """A reply must be a map with ok true and a result, or ok false and a known error code."""
    assert isinstance(reply, dict), f"reply is not a map: {reply!r}"
    assert "id" in reply, reply
    rid = reply["id"]
    assert rid is None or (isinstance(rid, int) and not isinstance(rid, bool)), reply
    ok = reply.get("ok")
    assert ok is True or ok is False, reply
    if ok:
        assert "result" in reply, reply
    else:
        error = reply.get("error")
        assert isinstance(error, dict), reply
        assert error.get("code") in ERROR_CLASSES, reply
        assert isinstance(error.get("message"), str) and error["message"], reply
    return reply


def error_code(reply: dict[str, Any]) -> str | None:
    return None if reply["ok"] else str(reply["error"]["code"])


def assert_protocol_close(result: Exchange) -> None:
    """A bad frame: one 'protocol' error with id null, then the daemon closes.

    A hello in the same read as the bad frame is lost with the stream (PROTOCOL.md 3),
    so its reply may or may not come first.
    """
    assert result.closed_by_daemon, result
    assert result.replies, "the daemon closed without the protocol error reply"
    *before, last = result.replies
    assert last["id"] is None and error_code(last) == "protocol", result
    assert all(r["id"] == 0 and r["ok"] for r in before), result


class HealthClient:
    """The well-behaved client: one persistent ``SocketTransport`` on its own event loop."""

    def __init__(self, socket_path: str, db: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.transport: SocketTransport | None = None
        self.rows = 0
        self.checks = 0
        self.transport = self.loop.run_until_complete(SocketTransport.connect(socket_path, db))
        self.request(
            {
                "op": "ensure_table",
                "table": HEALTH_TABLE,
                "columns": [
                    {"name": "id", "type": "INTEGER", "primary_key": True},
                    {"name": "n", "type": "INTEGER", "nullable": False},
                ],
            }
        )
        self.request({"op": "ensure_table", "table": "fuzz", "columns": FUZZ_TABLE_COLUMNS})
        self.rows = self.request({"op": "count", "table": HEALTH_TABLE})

    def request(self, request: dict[str, Any]) -> Any:
        assert self.transport is not None
        return self.loop.run_until_complete(asyncio.wait_for(self.transport.request(request), 15))

    def check(self) -> None:
        """Insert one row and count: the daemon still gives correct answers."""
        self.rows += 1
        self.request({"op": "insert", "table": HEALTH_TABLE, "values": {"n": self.rows}})
        count = self.request({"op": "count", "table": HEALTH_TABLE})
        assert count == self.rows, f"health table has {count} rows, expected {self.rows}"
        self.checks += 1

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request({"op": "stats"})
        return result

    def close(self) -> None:
        try:
            if self.transport is not None:
                self.loop.run_until_complete(self.transport.close())
        finally:
            self.loop.close()


class FuzzDaemon:
    """A real daemon, its log, the health client, and the counters of the run."""

    def __init__(self, directory: Path, *extra: str) -> None:
        self.db = str(directory / "fuzz.db")
        # synchronous=normal: durability is not under test here, and an fsync per
        # commit would make the thousands of cases ten times slower.
        options = ["--max-frame", str(MAX_FRAME), "--synchronous", "normal", *extra]
        self.proc = DaemonProcess(self.db, *options).start()
        #: The daemon's last log lines, and how often each (place, exception) was logged.
        self.log: deque[str] = deque(maxlen=500)
        self.tracebacks: dict[str, int] = {}
        self._drain = threading.Thread(target=self._read_log, name="fqdb-log", daemon=True)
        self._drain.start()
        self.health = HealthClient(self.socket, self.db)
        self.cases = 0
        self.closed_by_daemon = 0
        self.timeouts = 0
        self.health.check()
        self.fds_before = _proc_fds(self.pid)
        self.rss_before = _proc_rss_kib(self.pid)

    @property
    def socket(self) -> str:
        assert self.proc.socket is not None
        return self.proc.socket

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_log(self) -> None:
        # The daemon logs every refused frame; an unread pipe would block it when full.
        assert self.proc.proc is not None and self.proc.proc.stderr is not None
        place: str | None = None
        for raw in self.proc.proc.stderr:
            line = raw.rstrip("\n")
            self.log.append(line)
            if line.startswith("Traceback"):
                place = "?"
            elif place is not None and line.strip().startswith("File "):
                place = line.strip().rsplit("/", 1)[-1]
            elif place is not None and not line.startswith(" "):
                key = f"{place}: {line}"
                self.tracebacks[key] = self.tracebacks.get(key, 0) + 1
                place = None

    def alive(self) -> bool:
        assert self.proc.proc is not None
        return self.proc.proc.poll() is None

    def exchange(
        self, chunks: list[bytes], expect: int, timeout: float = REPLY_TIMEOUT
    ) -> Exchange:
        """Send ``chunks`` on a new connection, read up to ``expect`` replies, then half-close.

        Every reply is checked with :func:`check_reply`; the daemon must close the
        connection once we have half-closed it.
        """
        return self.converse(
            [(chunk, 0) for chunk in chunks[:-1]] + [(chunks[-1], expect)], timeout
        )

    def converse(self, steps: list[tuple[bytes, int]], timeout: float = REPLY_TIMEOUT) -> Exchange:
        """Like :meth:`exchange`, but after sending each chunk read until that many replies."""
        self.cases += 1
        result = Exchange()
        decoder = FrameDecoder(1 << 30)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5.0)
            sock.connect(self.socket)
            deadline = time.monotonic() + timeout
            for chunk, expect in steps:
                if result.closed_by_daemon or result.timed_out:
                    break
                # If the daemon has closed already, read what it said before.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sock.sendall(chunk)
                self._read(sock, decoder, result, expect, deadline)
            if not result.closed_by_daemon:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                self._read(sock, decoder, result, None, time.monotonic() + CLOSE_TIMEOUT)
                assert result.closed_by_daemon, (
                    f"the daemon kept the connection open {CLOSE_TIMEOUT} s after EOF"
                )
                result.closed_by_daemon = False  # it closed because we did
            else:
                self.closed_by_daemon += 1
        if result.timed_out:
            self.timeouts += 1
        for reply in result.replies:
            check_reply(reply)
        return result

    def _read(
        self,
        sock: socket.socket,
        decoder: FrameDecoder,
        result: Exchange,
        expect: int | None,
        deadline: float,
    ) -> None:
        """Read until ``expect`` replies in all (None: until the daemon closes) or the deadline."""
        while expect is None or len(result.replies) < expect:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if expect is not None:
                    result.timed_out = True
                return
            sock.settimeout(remaining)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                if expect is not None:
                    result.timed_out = True
                return
            except ConnectionResetError:
                data = b""
            if not data:
                result.closed_by_daemon = True
                return
            result.replies.extend(self._decode(decoder, data))

    @staticmethod
    def _decode(decoder: FrameDecoder, data: bytes) -> list[dict[str, Any]]:
        try:
            return decoder.feed(data)
        except FrameError as exc:
            raise AssertionError(f"the daemon sent a malformed frame: {exc}") from None

    def case(self, chunks: list[bytes], expect: int, timeout: float = REPLY_TIMEOUT) -> Exchange:
        """One fuzz case: the exchange, then the health check."""
        return self.case_steps(
            [(chunk, 0) for chunk in chunks[:-1]] + [(chunks[-1], expect)], timeout
        )

    def case_steps(
        self, steps: list[tuple[bytes, int]], timeout: float = REPLY_TIMEOUT
    ) -> Exchange:
        """One fuzz case given as steps (see :meth:`converse`), then the health check."""
        result = self.converse(steps, timeout)
        assert self.alive(), "the daemon died:\n" + "\n".join(list(self.log)[-30:])
        self.health.check()
        return result

    def kill(self) -> None:
        """SIGKILL (for a daemon a test has left unusable)."""
        try:
            self.health.close()
        finally:
            proc = self.proc.proc
            assert proc is not None
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            self._drain.join(10)
            self.proc.kill()

    def stop(self) -> int | None:
        try:
            self.health.close()
        finally:
            proc = self.proc.proc
            assert proc is not None
            code: int | None = None
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    code = proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self._drain.join(10)
            self.proc.stop()
        return code


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzDaemon]:
    env = FuzzDaemon(tmp_path_factory.mktemp("fuzz"))
    try:
        yield env
    finally:
        code = env.stop()
    assert code == 0, "the daemon did not stop cleanly:\n" + "\n".join(list(env.log)[-30:])


def fuzz(examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


# ---------------------------------------------------------------------------- case runners
# Each takes the daemon and one drawn example; the soak calls the same functions.


def run_truncated(env: FuzzDaemon, case: tuple[dict[str, Any], float, bool]) -> None:
    """A valid frame cut short, then EOF: nothing is answered for it."""
    request, cut, greet = case
    data = request_frame(request)
    partial = data[: int(len(data) * cut)]
    result = env.case([HELLO, partial] if greet else [partial], expect=1 if greet else 0)
    assert all(reply["id"] in (0, None) for reply in result.replies), result


def run_short_body(env: FuzzDaemon, case: tuple[int, bytes, bool, int]) -> None:
    """The length prefix promises more than arrives; the daemon waits, then sees EOF."""
    declared, body, greet, keep = case
    body = body[: max(0, min(keep, declared - 1))]
    chunks = [*([HELLO] if greet else []), HEADER.pack(declared) + body]
    result = env.case(chunks, expect=1 if greet else 0)
    assert not [r for r in result.replies if r["id"] not in (0, None)], result


def run_oversized(env: FuzzDaemon, case: tuple[int, bytes, bool]) -> None:
    """A length prefix past --max-frame: a protocol error, then the daemon closes."""
    declared, body, greet = case
    result = env.case([*([HELLO] if greet else []), HEADER.pack(declared) + body], expect=3)
    assert result.closed_by_daemon, result
    last = result.replies[-1]
    assert last["id"] is None and error_code(last) == "protocol", result
    assert "exceeds the maximum" in last["error"]["message"]


def run_non_map(env: FuzzDaemon, case: tuple[Any, bool]) -> None:
    """A body that is valid msgpack but not a map: the connection ends."""
    value, greet = case
    result = env.case([*([HELLO] if greet else []), frame(pack(value))], expect=3)
    assert_protocol_close(result)


def run_wrong_types(env: FuzzDaemon, request: dict[str, Any]) -> None:
    """One request with any op and any fields of any type: a valid reply or a close."""
    result = env.case([HELLO, request_frame(request)], expect=2)
    if len(result.replies) == 2:
        reply = result.replies[1]
        request_id = request.get("id")
        if isinstance(request_id, int) and not isinstance(request_id, bool):
            assert reply["id"] in (request_id, None), (request, reply)


def run_pipeline(env: FuzzDaemon, requests: list[dict[str, Any]]) -> None:
    """Several requests in one write: each gets its own reply (by id) unless the daemon closes."""
    requests = [dict(r, id=i) for i, r in enumerate(requests, 1)]
    if not requests:
        return
    # After a begin that takes the writer, requests without its txn would wait for the
    # connection to end: give them the transaction's number instead.
    holder = None
    for request in requests:
        if holder is not None:
            request["txn"] = holder
        txn = request.get("txn")
        if request["op"] == "begin" and request.get("savepoint") is None and _is_int(txn):
            holder = txn
    chunks = [HELLO + b"".join(request_frame(r) for r in requests)]
    result = env.case(chunks, expect=len(requests) + 1)
    ids = [r["id"] for r in result.replies if r["id"] is not None]
    assert len(ids) == len(set(ids)), result
    assert set(ids) <= set(range(len(requests) + 1)), result
    # A connection-level error (id null: a bad hello, say) ends the connection early.
    ended = any(r["id"] is None for r in result.replies)
    if not (ended or result.closed_by_daemon or result.timed_out):
        assert len(ids) == len(requests) + 1, result


def run_unknown_op(env: FuzzDaemon, op: str) -> None:
    """An unknown op: a validation error naming it, and the connection stays usable."""
    chunks = [HELLO, request_frame({"id": 1, "op": op, "table": "fuzz"})]
    chunks.append(request_frame({"id": 2, "op": "ping"}))
    result = env.case(chunks, expect=3)
    assert not result.closed_by_daemon, result
    by_id = {r["id"]: r for r in result.replies}
    assert error_code(by_id[1]) == "validation", by_id[1]
    assert "unknown op" in by_id[1]["error"]["message"]
    assert by_id[2]["result"] == "pong"


def _invalid_str(data: bytes) -> bytes:
    """A msgpack str holding ``data`` whatever it is (str8 header)."""
    return b"\xd9" + bytes([len(data)]) + data


def run_invalid_utf8(env: FuzzDaemon, case: tuple[bytes, str]) -> None:
    """Invalid UTF-8 in a str (as op, key, value, filter value or SQL): the connection ends."""
    data, where = case
    bad = _invalid_str(data)
    body = {
        "op": b"\x82\xa2id\x01\xa2op" + bad,
        "key": b"\x83\xa2id\x01\xa2op\xa5fetch" + bad + b"\xa4fuzz",
        "value": b"\x84\xa2id\x01\xa2op\xa6insert\xa5table\xa4fuzz\xa6values\x81\xa4name" + bad,
        "where": b"\x84\xa2id\x01\xa2op\xa5count\xa5table\xa4fuzz\xa5where\x91\x91\x93\xa4name\xa1="
        + bad,
        "sql": b"\x83\xa2id\x01\xa2op\xa7execute\xa3sql" + bad,
    }[where]
    assert_protocol_close(env.case([HELLO, frame(body)], expect=3))


def run_random_body(env: FuzzDaemon, body: bytes) -> None:
    """Random bytes as a frame body after hello."""
    env.case([HELLO, frame(body)], expect=2)


def run_random_stream(env: FuzzDaemon, case: tuple[bytes, bool]) -> None:
    """Random bytes with no framing at all, before or after hello."""
    data, greet = case
    # Whatever the bytes say, only the hello reply is certain; the rest comes after EOF.
    env.case([*([HELLO] if greet else []), data], expect=1 if greet else 0)


SOAK_CASES: list[tuple[str, SearchStrategy[Any], Callable[[FuzzDaemon, Any], None]]] = [
    ("truncated", TRUNCATED, run_truncated),
    ("short_body", SHORT_BODY, run_short_body),
    ("oversized", OVERSIZED, run_oversized),
    ("non_map", NON_MAPS, run_non_map),
    ("wrong_types", WRONG_TYPES, run_wrong_types),
    ("pipeline", PIPELINES, run_pipeline),
    ("unknown_op", UNKNOWN_OPS, run_unknown_op),
    ("invalid_utf8", INVALID_UTF8, run_invalid_utf8),
    ("random_body", RANDOM_BODIES, run_random_body),
    ("random_stream", RANDOM_STREAMS, run_random_stream),
]

# ---------------------------------------------------------------------------- hypothesis


@fuzz(250)
@given(case=TRUNCATED)
def test_truncated_frames_then_close(fuzz_env: FuzzDaemon, case: Any) -> None:
    run_truncated(fuzz_env, case)


@fuzz(120)
@given(case=SHORT_BODY)
def test_length_prefix_larger_than_the_body(fuzz_env: FuzzDaemon, case: Any) -> None:
    run_short_body(fuzz_env, case)


@fuzz(120)
@given(case=OVERSIZED)
def test_length_prefix_larger_than_max_frame(fuzz_env: FuzzDaemon, case: Any) -> None:
    run_oversized(fuzz_env, case)


@fuzz(200)
@given(case=NON_MAPS)
def test_non_map_payloads(fuzz_env: FuzzDaemon, case: Any) -> None:
    run_non_map(fuzz_env, case)


@fuzz(600)
@given(request=WRONG_TYPES)
def test_any_op_any_fields_any_types(fuzz_env: FuzzDaemon, request: dict[str, Any]) -> None:
    run_wrong_types(fuzz_env, request)


@fuzz(200)
@given(requests=PIPELINES)
def test_pipelined_requests(fuzz_env: FuzzDaemon, requests: list[dict[str, Any]]) -> None:
    run_pipeline(fuzz_env, requests)


@fuzz(150)
@given(op=UNKNOWN_OPS)
def test_unknown_ops(fuzz_env: FuzzDaemon, op: str) -> None:
    run_unknown_op(fuzz_env, op)


@fuzz(120)
@given(case=INVALID_UTF8)
def test_invalid_utf8(fuzz_env: FuzzDaemon, case: Any) -> None:
    run_invalid_utf8(fuzz_env, case)


@fuzz(200)
@given(body=RANDOM_BODIES)
def test_random_frame_bodies(fuzz_env: FuzzDaemon, body: bytes) -> None:
    run_random_body(fuzz_env, body)


@fuzz(150)
@given(case=RANDOM_STREAMS)
def test_random_byte_streams(fuzz_env: FuzzDaemon, case: Any) -> None:
    run_random_stream(fuzz_env, case)


# ---------------------------------------------------------------------------- sweep

#: One value of every msgpack type, and the edges of each.
WRONG_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**64 - 1,
    -(2**63),
    1.5,
    math.nan,
    -math.inf,
    "",
    "x'\"; DROP TABLE fuzz; --",
    "é" * 300,
    b"\xff\x00",
    [],
    [None, [1, [2, [3]]]],
    {},
    {"a": [1, {"b": None}], "": b""},
]

BASE_REQUESTS: dict[str, dict[str, Any]] = {
    "fetch": {"table": "fuzz", "where": [[["id", "<", 0]]], "order_by": ["-id"], "limit": 1},
    "count": {"table": "fuzz", "where": [[["n", "IS", None]]]},
    "aggregate": {"table": "fuzz"},
    "insert": {"table": "fuzz", "values": {"name": "sweep"}},
    "insert_many": {"table": "fuzz", "columns": ["name", "n"], "rows": [["sweep", 1]]},
    "upsert": {"table": "fuzz", "values": {"id": 1, "name": "sweep"}, "conflict": ["id"]},
    "update": {"table": "fuzz", "values": {"n": 2}, "where": [[["id", "<", 0]]]},
    "delete": {"table": "fuzz", "where": [[["id", "<", 0]]]},
    "ensure_table": {"table": "fuzz", "columns": FUZZ_TABLE_COLUMNS},
    "execute": {"sql": "SELECT ? + 1", "params": [1]},
    "begin": {"txn": 7},
    "commit": {"txn": 7},
    "rollback": {"txn": 7},
    "hello": {"version": 1},
}
# A begin that succeeds holds the writer for this connection and a hello with a bad
# version closes it: those get one connection per request instead of a pipeline.
ONE_PER_CONNECTION_OPS = {"begin", "hello"}
ONE_PER_CONNECTION_FIELDS = {"id", "op"}


def sweep_cases() -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """(op, field, requests) for every op x field, each field set to every wrong value."""
    for op in OPS:
        base = {"op": op, **BASE_REQUESTS.get(op, {"table": "fuzz"})}
        for name in FIELDS:
            requests = []
            for value in WRONG_VALUES:
                request = dict(base)
                request[name] = value
                requests.append(request)
            yield op, name, requests


def run_sweep(env: FuzzDaemon) -> int:
    """Send every sweep case; returns the number of requests sent."""
    sent = 0
    for op, name, requests in sweep_cases():
        if op in ONE_PER_CONNECTION_OPS or name in ONE_PER_CONNECTION_FIELDS:
            groups = [[r] for r in requests]
        else:
            groups = [requests]
        for group in groups:
            numbered = [dict(r, id=r["id"] if name == "id" else i) for i, r in enumerate(group, 1)]
            result = env.case(
                [HELLO + b"".join(request_frame(r) for r in numbered)], expect=len(numbered) + 1
            )
            sent += len(numbered)
            if name not in ("id", "op", "version") and not result.closed_by_daemon:
                assert not result.timed_out, (op, name, result)
                assert len(result.replies) == len(numbered) + 1, (op, name, result)
    return sent


def test_every_field_of_every_op_with_every_type(fuzz_env: FuzzDaemon) -> None:
    assert {"table", "where", "order_by", "sql", "params", "txn", "savepoint"} <= set(FIELDS)
    assert {"fetch", "insert", "execute", "begin", "ensure_table"} <= set(OPS)
    sent = run_sweep(fuzz_env)
    assert sent >= len(OPS) * len(FIELDS) * (len(WRONG_VALUES) - 2)


# ---------------------------------------------------------------------------- explicit cases

U64_MAX = b"\xcf" + b"\xff" * 8
I64_MIN = b"\xd3\x80" + b"\x00" * 7
MINUS_ONE_I64 = b"\xd3" + b"\xff" * 8


def s(text: str) -> bytes:
    return pack(text)


def raw_map(*pairs: tuple[bytes, bytes]) -> bytes:
    """A msgpack map from already-packed keys and values (up to 15 pairs)."""
    assert len(pairs) < 16
    return bytes([0x80 | len(pairs)]) + b"".join(k + v for k, v in pairs)


@pytest.mark.parametrize(
    ("body", "check"),
    [
        pytest.param(
            raw_map((s("id"), U64_MAX), (s("op"), s("ping"))),
            lambda r: r["id"] == 2**64 - 1 and r["result"] == "pong",
            id="id-uint64-max",
        ),
        pytest.param(
            raw_map((s("id"), I64_MIN), (s("op"), s("ping"))),
            lambda r: r["id"] == -(2**63) and r["result"] == "pong",
            id="id-int64-min",
        ),
        pytest.param(
            raw_map((s("id"), b"\x01"), (s("op"), s("fetch")), (s("table"), s("fuzz"))),
            lambda r: r["ok"],
            id="plain-fetch",
        ),
        pytest.param(
            raw_map(
                (s("id"), b"\x01"),
                (s("op"), s("fetch")),
                (s("table"), s("fuzz")),
                (s("limit"), U64_MAX),
            ),
            lambda r: error_code(r) == "validation" and "limit" in r["error"]["message"],
            id="limit-uint64-max",
        ),
        pytest.param(
            raw_map(
                (s("id"), b"\x01"),
                (s("op"), s("fetch")),
                (s("table"), s("fuzz")),
                (s("offset"), MINUS_ONE_I64),
            ),
            lambda r: error_code(r) == "validation" and "offset" in r["error"]["message"],
            id="offset-minus-one-as-int64",
        ),
        pytest.param(
            raw_map(
                (s("id"), b"\x01"),
                (s("op"), s("insert")),
                (s("table"), s("fuzz")),
                (s("values"), raw_map((s("n"), U64_MAX))),
            ),
            lambda r: error_code(r) == "validation" and "64-bit" in r["error"]["message"],
            id="value-uint64-max",
        ),
        pytest.param(
            raw_map(
                (s("id"), b"\x01"),
                (s("op"), s("count")),
                (s("table"), s("fuzz")),
                (s("where"), b"\x91\x91\x93" + s("n") + s("=") + U64_MAX),
            ),
            lambda r: error_code(r) == "validation",
            id="filter-value-uint64-max",
        ),
        pytest.param(
            raw_map(
                (s("id"), b"\x01"),
                (s("op"), s("execute")),
                (s("sql"), s("SELECT ?")),
                (s("params"), b"\x91" + U64_MAX),
            ),
            lambda r: error_code(r) == "validation",
            id="param-uint64-max",
        ),
        pytest.param(
            raw_map(
                (s("id"), b"\x01"),
                (s("op"), s("execute")),
                (s("sql"), s("SELECT ?")),
                (s("params"), b"\x91" + I64_MIN),
            ),
            lambda r: r["ok"] and r["result"]["rows"] == [[-(2**63)]],
            id="param-int64-min-round-trips",
        ),
        pytest.param(
            raw_map((s("id"), b"\x01"), (s("op"), s("ping")), (s("txn"), U64_MAX)),
            lambda r: error_code(r) == "programming" and "not open" in r["error"]["message"],
            id="txn-uint64-max",
        ),
    ],
)
def test_integers_at_the_64_bit_limits(
    fuzz_env: FuzzDaemon, body: bytes, check: Callable[[dict[str, Any]], bool]
) -> None:
    result = fuzz_env.case([HELLO, frame(body)], expect=2)
    assert not result.closed_by_daemon, result
    assert check(result.replies[1]), result.replies[1]


def test_hello_with_a_uint64_version_is_a_protocol_error(fuzz_env: FuzzDaemon) -> None:
    body = raw_map((s("id"), b"\x00"), (s("op"), s("hello")), (s("version"), U64_MAX))
    result = fuzz_env.case([frame(body)], expect=2)
    assert result.closed_by_daemon, result
    (reply,) = result.replies
    assert reply["id"] is None and error_code(reply) == "protocol"


@fuzz(100)
@given(value=st.integers(min_value=-(2**63), max_value=2**64 - 1))
def test_any_64_bit_integer_in_every_int_position(fuzz_env: FuzzDaemon, value: int) -> None:
    requests = [
        {"id": 1, "op": "fetch", "table": "fuzz", "limit": value, "offset": value},
        {"id": 2, "op": "insert", "table": "fuzz", "values": {"n": value, "name": str(value)}},
        {"id": 3, "op": "count", "table": "fuzz", "where": [[["n", "=", value]]]},
        {"id": 4, "op": "execute", "sql": "SELECT ?", "params": [value]},
        {"id": 5, "op": "ping", "txn": value},
    ]
    result = fuzz_env.case([HELLO + b"".join(request_frame(r) for r in requests)], expect=6)
    assert not result.closed_by_daemon, result
    by_id = {r["id"]: r for r in result.replies}
    fits = value <= 2**63 - 1
    assert by_id[2]["ok"] is fits, by_id[2]
    assert by_id[3]["ok"] is fits, by_id[3]
    assert by_id[4]["ok"] is fits, by_id[4]
    if fits:
        assert by_id[4]["result"]["rows"] == [[value]]
    assert error_code(by_id[5]) == "programming"


@pytest.mark.parametrize(
    ("body", "too_big"),
    [
        pytest.param(raw_map((s("a"), b"\x91" * 100_000 + b"\xc0")), True, id="100k-arrays"),
        pytest.param(b"\x91" * 100_000 + b"\xc0", True, id="100k-arrays-top"),
        pytest.param(raw_map((s("a"), b"\x91" * 60_000 + b"\xc0")), False, id="60k-arrays"),
        pytest.param(b"\x81\xa1a" * 20_000 + b"\xc0", False, id="20k-maps"),
        pytest.param(
            raw_map(
                (s("id"), b"\x01"), (s("op"), s("fetch")), (s("where"), b"\x91" * 5000 + b"\x90")
            ),
            False,
            id="5k-arrays-in-where",
        ),
        pytest.param(raw_map((s("a"), b"\x91" * 1100 + b"\xc0")), False, id="1100-arrays"),
    ],
)
def test_deep_nesting(fuzz_env: FuzzDaemon, body: bytes, too_big: bool) -> None:
    assert (len(body) > MAX_FRAME) is too_big  # too big: refused from the header alone
    assert_protocol_close(fuzz_env.case([HELLO, frame(body)], expect=3))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\x82\xa2id\x01\xa2op\xa2\xff\xfe", id="op-ff-fe"),
        pytest.param(b"\x82\xa2id\x01\xa2\xff\xfe\xa4ping", id="key-ff-fe"),
        pytest.param(b"\x82\xa2id\x01\xa2op\xa2\xc0\xaf", id="overlong-slash"),
        pytest.param(b"\x82\xa2id\x01\xa2op\xa3\xed\xa0\x80", id="surrogate"),
        pytest.param(b"\x82\xa2id\x01\xa2op\xa1\xe2", id="truncated-sequence"),
        pytest.param(b"\x82\xa2id\x01\xa2op\xd9\x02\xff\xfe", id="str8"),
        pytest.param(b"\x82\xa2id\x01\xa2op\xda\x00\x02\xff\xfe", id="str16"),
        pytest.param(b"\x82\xa2id\x01\xa2op\xdb\x00\x00\x00\x02\xff\xfe", id="str32"),
    ],
)
def test_invalid_utf8_in_str(fuzz_env: FuzzDaemon, body: bytes) -> None:
    assert_protocol_close(fuzz_env.case([HELLO, frame(body)], expect=3))


@pytest.mark.parametrize(
    "message",
    [
        {"id": 1, "op": "ping"},
        {"id": 1, "op": "stats"},
        {"id": 1, "op": "fetch", "table": "fuzz"},
        {"id": 1},
        {"op": "hello"},
        {"op": "hello", "version": 2},
        {"op": "hello", "version": "1"},
        {"id": "0", "op": "hello", "version": 1},
    ],
)
def test_first_frame_must_be_a_valid_hello(fuzz_env: FuzzDaemon, message: dict[str, Any]) -> None:
    result = fuzz_env.case([request_frame(message), request_frame({"id": 2, "op": "ping"})], 2)
    assert result.closed_by_daemon, result
    (reply,) = result.replies
    assert reply["id"] is None and error_code(reply) == "protocol", reply


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(pack([1, 2]), id="array"),
        pytest.param(pack(7), id="int"),
        pytest.param(b"\x82\xa2id\x01\xa2op\xa2\xff\xfe", id="invalid-utf8"),
        pytest.param(raw_map((s("a"), b"\x91" * 60_000 + b"\xc0")), id="60k-nesting"),
        pytest.param(b"\xc1", id="never-used-byte"),
        pytest.param(pack({"id": 1}) + b"\x00", id="trailing-bytes"),
    ],
)
def test_malformed_body_gets_a_protocol_error(fuzz_env: FuzzDaemon, body: bytes) -> None:
    # hello first, on its own, so that its reply is out before the bad frame arrives.
    result = fuzz_env.case_steps([(HELLO, 1), (frame(body), 3)])
    assert_protocol_close(result)
    assert [r["id"] for r in result.replies] == [0, None], result


# ---------------------------------------------------------------------------- defects found


@pytest.fixture
def own_daemon(tmp_path: Path) -> Iterator[FuzzDaemon]:
    """A daemon of its own, for cases known to leave it unusable."""
    env = FuzzDaemon(tmp_path)
    try:
        yield env
    finally:
        env.kill()


def _nested(depth: int) -> Any:
    value: Any = None
    for _ in range(depth):
        value = [value]
    return value


DEEP = _nested(1000)  # under msgpack's 1024-level limit, over repr()'s recursion limit


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(
            {"op": "insert", "table": "fuzz", "values": {"name": DEEP}}, id="insert-value"
        ),
        pytest.param(
            {"op": "insert_many", "table": "fuzz", "columns": ["name"], "rows": [[DEEP]]},
            id="insert_many-row",
        ),
        pytest.param(
            {"op": "update", "table": "fuzz", "values": {"n": 1}, "where": [[["id", "=", DEEP]]]},
            id="update-filter",
        ),
        pytest.param({"op": "execute", "sql": "SELECT ?", "params": [DEEP]}, id="execute-param"),
        pytest.param(
            {"op": "fetch", "table": "fuzz", "where": [[["id", "IN", [DEEP]]]]}, id="fetch-filter"
        ),
        pytest.param({"op": "ping", "txn": DEEP}, id="txn"),
    ],
)
def test_deeply_nested_value_is_a_validation_error(
    own_daemon: FuzzDaemon, request_: dict[str, Any]
) -> None:
    result = own_daemon.exchange([HELLO, request_frame({"id": 1, **request_})], expect=2)
    after = own_daemon.exchange(
        [HELLO, request_frame({"id": 2, "op": "insert", "table": "fuzz", "values": {"n": 1}})],
        expect=2,
    )
    assert after.replies[1]["ok"], f"the daemon no longer writes: {after.replies[1]}"
    assert not result.closed_by_daemon, result
    assert error_code(result.replies[1]) == "validation", result.replies[1]


@pytest.mark.parametrize("op", [[], ["ping"], {}, {"op": "ping"}])
def test_unhashable_op_is_a_validation_error(fuzz_env: FuzzDaemon, op: Any) -> None:
    result = fuzz_env.case(
        [HELLO, request_frame({"id": 1, "op": op}), request_frame({"id": 2, "op": "ping"})], 3
    )
    by_id = {r["id"]: r for r in result.replies}
    assert error_code(by_id[1]) == "validation", result
    assert by_id[2]["result"] == "pong"


def test_unhashable_op_after_a_write_does_not_wedge_the_daemon(own_daemon: FuzzDaemon) -> None:
    insert = {"id": 1, "op": "insert", "table": "fuzz", "values": {"n": 1}}
    result = own_daemon.exchange(
        [HELLO + request_frame(insert) + request_frame({"id": 2, "op": []})], expect=3
    )
    after = own_daemon.exchange([HELLO, request_frame(dict(insert, id=3))], expect=2)
    assert after.replies[1]["ok"], f"the daemon no longer writes: {after.replies[1]}"
    by_id = {r["id"]: r for r in result.replies}
    assert by_id[1]["ok"], by_id[1]
    assert error_code(by_id[2]) == "validation", by_id[2]


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"indexes": [[["name"]]]}, id="indexes-list"),
        pytest.param({"unique": [["name", {}]]}, id="unique-map"),
    ],
)
def test_unhashable_index_column_does_not_wedge_the_daemon(
    own_daemon: FuzzDaemon, extra: dict[str, Any]
) -> None:
    request = {"id": 1, "op": "ensure_table", "table": "other", "columns": FUZZ_TABLE_COLUMNS}
    result = own_daemon.exchange([HELLO, request_frame({**request, **extra})], expect=2)
    insert = {"id": 2, "op": "insert", "table": "fuzz", "values": {"n": 1}}
    after = own_daemon.exchange([HELLO, request_frame(insert)], expect=2)
    assert after.replies[1]["ok"], f"the daemon no longer writes: {after.replies[1]}"
    assert error_code(result.replies[1]) == "validation", result.replies[1]


@pytest.mark.parametrize("on_conflict", [[], ["ignore"], {}, {"ignore": True}])
def test_unhashable_on_conflict_does_not_wedge_the_daemon(
    own_daemon: FuzzDaemon, on_conflict: Any
) -> None:
    request = {"id": 1, "op": "insert", "table": "fuzz", "values": {"n": 1}}
    result = own_daemon.exchange(
        [HELLO, request_frame({**request, "on_conflict": on_conflict})], expect=2
    )
    after = own_daemon.exchange([HELLO, request_frame(dict(request, id=2))], expect=2)
    assert after.replies[1]["ok"], f"the daemon no longer writes: {after.replies[1]}"
    assert error_code(result.replies[1]) == "validation", result.replies[1]


# ---------------------------------------------------------------------------- the end


def test_daemon_is_healthy_after_the_fuzzing(fuzz_env: FuzzDaemon) -> None:
    """Alive, answering, no leaked connections, bounded memory, an intact file."""
    assert fuzz_env.alive()
    stats = fuzz_env.health.stats()
    assert stats["clients"] == 1, stats  # the health client only: every fuzz connection is gone
    deadline = time.monotonic() + 10
    while _proc_fds(fuzz_env.pid) > fuzz_env.fds_before + FD_SLACK:
        assert time.monotonic() < deadline, (
            f"descriptors: {fuzz_env.fds_before} before, {_proc_fds(fuzz_env.pid)} now"
        )
        time.sleep(0.05)
    fds_after = _proc_fds(fuzz_env.pid)
    rss_after = _proc_rss_kib(fuzz_env.pid)
    assert rss_after - fuzz_env.rss_before < RSS_BOUND_MIB * 1024, (
        f"RSS grew from {fuzz_env.rss_before} KiB to {rss_after} KiB"
    )
    assert integrity(fuzz_env.db) == "ok"
    fuzz_env.health.check()
    print(
        f"\nfuzz: {fuzz_env.cases} connections, "
        f"{fuzz_env.health.checks} health checks, {fuzz_env.closed_by_daemon} closed by the "
        f"daemon, {fuzz_env.timeouts} reply timeouts; daemon stats: requests "
        f"{stats['requests']}, errors {stats['errors']}, protocol_errors "
        f"{stats['protocol_errors']}; fds {fuzz_env.fds_before} -> {fds_after}; "
        f"RSS {fuzz_env.rss_before} -> {rss_after} KiB; tracebacks in the daemon log: "
        f"{sum(fuzz_env.tracebacks.values())}"
    )
    for place, count in sorted(fuzz_env.tracebacks.items(), key=lambda kv: -kv[1]):
        print(f"  {count:5d}  {place}")
