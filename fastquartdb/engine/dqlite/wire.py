"""dqlite's wire protocol, sans I/O: requests to bytes, bytes to responses.

Written from dqlite's published protocol description. Everything is made
of 8-byte little-endian *words*:

* After connecting, the client sends one word: the protocol version (1).
* Each message is a header word -- body size in words (uint32), message type
  (uint8), schema revision (uint8), two unused bytes -- then the body.
* Body fields: uint64/int64/double take a word; text is UTF-8, NUL-terminated
  and zero-padded to a word boundary; a blob is its length (uint64) then its
  bytes, padded.
* Statement parameters (schema 0) are a *tuple*: a count byte, one type byte
  per value, padding to the word boundary, then the values. With no
  parameters the tuple is left out entirely.
* A ROWS response is the column count, the column names, then rows: each row
  starts with its column types, four bits per column, padded to a word. The
  result ends with a marker word: all ``0xff`` (done) or all ``0xee`` (more
  rows follow in the next ROWS message, which the server sends unasked).

Nothing here touches a socket: :class:`MessageReader` is fed bytes and hands
back :class:`Message` objects; the ``decode_*`` functions turn their bodies
into small frozen dataclasses.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

__all__ = [
    "HEADER_SIZE",
    "PROTOCOL_VERSION",
    "DqliteFailure",
    "Message",
    "MessageReader",
    "NodeAddress",
    "Rows",
    "StatementResult",
    "WireError",
    "decode_db",
    "decode_failure",
    "decode_node",
    "decode_result",
    "decode_rows",
    "encode_client",
    "encode_exec_sql",
    "encode_handshake",
    "encode_leader",
    "encode_open",
    "encode_query_sql",
]

PROTOCOL_VERSION = 1
WORD = 8
HEADER_SIZE = 8
#: Refuse bodies larger than this (a corrupt header must not make us allocate gigabytes).
MAX_BODY = 256 * 1024 * 1024

# Request types.
REQUEST_LEADER = 0
REQUEST_CLIENT = 1
REQUEST_OPEN = 3
REQUEST_EXEC_SQL = 8
REQUEST_QUERY_SQL = 9

# Response types.
RESPONSE_FAILURE = 0
RESPONSE_NODE = 1
RESPONSE_WELCOME = 2
RESPONSE_DB = 4
RESPONSE_RESULT = 6
RESPONSE_ROWS = 7
RESPONSE_EMPTY = 8

# Value types in tuples and rows.
TYPE_INTEGER = 1
TYPE_FLOAT = 2
TYPE_TEXT = 3
TYPE_BLOB = 4
TYPE_NULL = 5
TYPE_UNIXTIME = 9
TYPE_ISO8601 = 10
TYPE_BOOLEAN = 11

_DECLARED_TYPES = frozenset({TYPE_UNIXTIME, TYPE_ISO8601, TYPE_BOOLEAN})
_ROWS_DONE = 0xFF
_ROWS_PART = 0xEE
#: Schema-0 tuples count their values in one byte.
MAX_PARAMS = 255

_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_HEADER = struct.Struct("<IBBH")


class WireError(Exception):
    """Bytes that do not follow the protocol (or a value it cannot carry)."""


@dataclass(frozen=True)
class Message:
    """One decoded message: its type, schema revision and raw body."""

    type: int
    revision: int
    body: bytes


@dataclass(frozen=True)
class DqliteFailure:
    """A FAILURE response: SQLite's (extended) result code and message."""

    code: int
    message: str


@dataclass(frozen=True)
class NodeAddress:
    """A NODE response (the answer to LEADER): id 0 and "" mean no leader is known."""

    id: int
    address: str


@dataclass(frozen=True)
class StatementResult:
    """A RESULT response to EXEC_SQL."""

    last_insert_id: int
    rows_affected: int


@dataclass(frozen=True)
class Rows:
    """One ROWS response: columns, the rows it carries, and whether more follow."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    more: bool
    #: Some value came typed by its column's declaration (BOOLEAN, DATE...): dqlite
    #: sends NULL in such columns as 0 or "", so the reader must ask again untyped.
    typed: bool = False


# ---------------------------------------------------------------- encoding


def _pad(size: int) -> int:
    return (WORD - size % WORD) % WORD


def _text(value: str) -> bytes:
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise WireError(f"text that is not valid Unicode cannot be sent: {exc}") from None
    if b"\x00" in raw:
        raise WireError("text with a NUL character cannot be sent to dqlite")
    raw += b"\x00"
    return raw + b"\x00" * _pad(len(raw))


def _message(mtype: int, body: bytes, revision: int = 0) -> bytes:
    if not body or len(body) % WORD:
        raise WireError(f"message body of {len(body)} bytes is not whole words")
    return _HEADER.pack(len(body) // WORD, mtype, revision, 0) + body


def encode_handshake() -> bytes:
    """The protocol version word every connection starts with."""
    return _U64.pack(PROTOCOL_VERSION)


def encode_leader() -> bytes:
    """LEADER: which node leads the cluster?"""
    return _message(REQUEST_LEADER, _U64.pack(0))


def encode_client(client_id: int) -> bytes:
    """CLIENT: register this connection (answered by WELCOME)."""
    return _message(REQUEST_CLIENT, _U64.pack(client_id))


def encode_open(name: str, flags: int = 0, vfs: str = "") -> bytes:
    """OPEN: open database ``name`` on this connection (answered by DB)."""
    return _message(REQUEST_OPEN, _text(name) + _U64.pack(flags) + _text(vfs))


def encode_params(params: list[Any] | tuple[Any, ...]) -> bytes:
    """A schema-0 parameter tuple (empty bytes for no parameters).

    Raises:
        WireError: more than 255 values, or a value dqlite cannot carry.
    """
    if not params:
        return b""
    if len(params) > MAX_PARAMS:
        raise WireError(
            f"{len(params)} parameters: dqlite takes at most {MAX_PARAMS} per statement"
        )
    types = bytearray([len(params)])
    values: list[bytes] = []
    for value in params:
        if value is None:
            types.append(TYPE_NULL)
            values.append(_U64.pack(0))
        elif isinstance(value, bool):
            # As sqlite3 binds it: an integer, so a read returns what embedded mode returns.
            types.append(TYPE_INTEGER)
            values.append(_I64.pack(int(value)))
        elif isinstance(value, int):
            types.append(TYPE_INTEGER)
            try:
                values.append(_I64.pack(value))
            except struct.error:
                raise WireError(f"integer {value} does not fit 64 bits") from None
        elif isinstance(value, float):
            types.append(TYPE_FLOAT)
            values.append(_F64.pack(value))
        elif isinstance(value, str):
            types.append(TYPE_TEXT)
            values.append(_text(value))
        elif isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
            types.append(TYPE_BLOB)
            values.append(_U64.pack(len(raw)) + raw + b"\x00" * _pad(len(raw)))
        else:
            raise WireError(f"cannot send a {type(value).__name__} to dqlite")
    types += b"\x00" * _pad(len(types))
    return bytes(types) + b"".join(values)


def encode_exec_sql(db_id: int, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> bytes:
    """EXEC_SQL: run a statement that returns no rows (answered by RESULT)."""
    return _message(REQUEST_EXEC_SQL, _U64.pack(db_id) + _text(sql) + encode_params(params))


def encode_query_sql(db_id: int, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> bytes:
    """QUERY_SQL: run a statement and return its rows (answered by ROWS, perhaps several)."""
    return _message(REQUEST_QUERY_SQL, _U64.pack(db_id) + _text(sql) + encode_params(params))


# ---------------------------------------------------------------- decoding


class MessageReader:
    """Feed it bytes as they arrive; take whole messages out."""

    def __init__(self, max_body: int = MAX_BODY) -> None:
        self._buffer = bytearray()
        self._max_body = max_body

    def feed(self, data: bytes) -> None:
        """Add received bytes."""
        self._buffer += data

    def next_message(self) -> Message | None:
        """The next complete message, or None until more bytes arrive.

        Raises:
            WireError: the header announces a body larger than ``max_body``.
        """
        if len(self._buffer) < HEADER_SIZE:
            return None
        words, mtype, revision, _ = _HEADER.unpack_from(self._buffer)
        size = words * WORD
        if size > self._max_body:
            raise WireError(f"message of {size} bytes exceeds the {self._max_body}-byte limit")
        if len(self._buffer) < HEADER_SIZE + size:
            return None
        body = bytes(self._buffer[HEADER_SIZE : HEADER_SIZE + size])
        del self._buffer[: HEADER_SIZE + size]
        return Message(mtype, revision, body)


class _Cursor:
    """Reads fields from a body, checking that each one is there."""

    __slots__ = ("body", "pos")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pos = 0

    def _take(self, size: int) -> int:
        start = self.pos
        if start + size > len(self.body):
            raise WireError("message body ends in the middle of a field")
        self.pos = start + size
        return start

    def u64(self) -> int:
        return int(_U64.unpack_from(self.body, self._take(8))[0])

    def i64(self) -> int:
        return int(_I64.unpack_from(self.body, self._take(8))[0])

    def f64(self) -> float:
        return float(_F64.unpack_from(self.body, self._take(8))[0])

    def text(self) -> str:
        end = self.body.find(b"\x00", self.pos)
        if end < 0:
            raise WireError("text field without its terminating NUL")
        raw = self.body[self.pos : end]
        size = end - self.pos + 1
        self._take(size + _pad(size))
        return raw.decode("utf-8", errors="replace")

    def blob(self) -> bytes:
        size = self.u64()
        start = self._take(size + _pad(size))
        return self.body[start : start + size]

    def peek(self) -> int:
        if self.pos >= len(self.body):
            raise WireError("rows end without a done or part marker")
        return self.body[self.pos]

    @property
    def at_end(self) -> bool:
        return self.pos >= len(self.body)


def _expect(message: Message, mtype: int, what: str) -> _Cursor:
    if message.type != mtype:
        raise WireError(f"expected a {what} response, got message type {message.type}")
    return _Cursor(message.body)


def decode_failure(message: Message) -> DqliteFailure:
    """FAILURE: code and message."""
    cursor = _expect(message, RESPONSE_FAILURE, "failure")
    code = cursor.u64()
    text = cursor.text() if not cursor.at_end else ""
    return DqliteFailure(code, text)


def decode_node(message: Message) -> NodeAddress:
    """NODE: the leader's id and address."""
    cursor = _expect(message, RESPONSE_NODE, "node")
    return NodeAddress(cursor.u64(), cursor.text())


def decode_db(message: Message) -> int:
    """DB: the id of the database just opened."""
    cursor = _expect(message, RESPONSE_DB, "db")
    return cursor.u64() & 0xFFFFFFFF


def decode_result(message: Message) -> StatementResult:
    """RESULT: last insert rowid and rows affected."""
    cursor = _expect(message, RESPONSE_RESULT, "result")
    return StatementResult(cursor.i64(), cursor.u64())


def _value(cursor: _Cursor, vtype: int) -> Any:
    if vtype in (TYPE_INTEGER, TYPE_UNIXTIME, TYPE_BOOLEAN):
        # Booleans and unix times are integers SQLite stored: hand back what sqlite3 would.
        return cursor.i64()
    if vtype == TYPE_FLOAT:
        return cursor.f64()
    if vtype in (TYPE_TEXT, TYPE_ISO8601):
        return cursor.text()
    if vtype == TYPE_BLOB:
        return cursor.blob()
    if vtype == TYPE_NULL:
        cursor.u64()
        return None
    raise WireError(f"unknown value type {vtype} in a row")


def decode_rows(message: Message) -> Rows:
    """ROWS: column names, the rows of this batch, and whether another batch follows."""
    cursor = _expect(message, RESPONSE_ROWS, "rows")
    columns = tuple(cursor.text() for _ in range(cursor.u64()))
    width = len(columns)
    header_size = ((width + 1) // 2 + WORD - 1) // WORD * WORD
    rows: list[tuple[Any, ...]] = []
    typed = False
    while True:
        first = cursor.peek()
        if first in (_ROWS_DONE, _ROWS_PART):
            marker = cursor.u64()
            if marker == 0xFFFFFFFFFFFFFFFF:
                return Rows(columns, rows, more=False, typed=typed)
            if marker == 0xEEEEEEEEEEEEEEEE:
                return Rows(columns, rows, more=True, typed=typed)
            raise WireError(f"bad end-of-rows marker {marker:#x}")
        if not width:
            raise WireError("a row in a result without columns")
        start = cursor._take(header_size)
        header = cursor.body[start : start + header_size]
        types = [(header[i // 2] >> (4 * (i % 2))) & 0x0F for i in range(width)]
        typed = typed or any(t in _DECLARED_TYPES for t in types)
        rows.append(tuple(_value(cursor, vtype) for vtype in types))
