"""The frame codec: golden frames, round-trips, arbitrary splits, and every way a frame can be bad."""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastquartdb.protocol import (
    DEFAULT_MAX_FRAME,
    ERROR_CLASSES,
    FrameDecoder,
    FrameError,
    decode_body,
    encode_body,
    encode_frame,
)
from fastquartdb.protocol.errors import ProtocolError, ValidationError

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "protocol" / "PROTOCOL.md"
GOLDEN = ROOT / "protocol" / "golden"
GOLDEN_NAMES = sorted(p.stem for p in GOLDEN.glob("*.json"))


# ------------------------------------------------------------------ helpers


def from_json(value: Any) -> Any:
    """The golden JSON convention, implemented independently of generate.py."""
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return bytes.fromhex(value["$bytes"])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


def golden_json(name: str) -> Any:
    return json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def same(a: Any, b: Any) -> bool:
    """Equal *and* of the same types all the way down (True is not 1, 1.0 is not 1, key order)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


# ------------------------------------------------------------------ golden frames


def test_golden_set_is_complete() -> None:
    """A request and a success reply for every op, plus error replies; every .json has its .bin."""
    names = set(GOLDEN_NAMES)
    assert {p.stem for p in GOLDEN.glob("*.bin")} == names
    for op in [
        "hello",
        "ping",
        "stats",
        "ensure_table",
        "insert",
        "insert_many",
        "fetch",
        "count",
        "update",
        "delete",
        "execute",
        "begin",
        "commit",
        "rollback",
        "begin_savepoint",
        "describe",
    ]:
        assert f"{op}_request" in names
        assert f"{op}_reply" in names
        assert golden_json(f"{op}_reply")["ok"] is True
    errors = [n for n in names if n.startswith("error_") and n.endswith("_reply")]
    assert len(errors) >= 5
    for name in errors:
        reply = golden_json(name)
        assert reply["ok"] is False
        assert reply["error"]["code"] in ERROR_CLASSES


def test_golden_fetch_request_uses_every_fetch_field() -> None:
    request = golden_json("fetch_request")
    assert {"where", "order_by", "limit", "offset", "columns"} <= set(request)


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden_json_encodes_to_bin(name: str) -> None:
    message = from_json(golden_json(name))
    expected = (GOLDEN / f"{name}.bin").read_bytes()
    assert encode_frame(message) == expected
    assert struct.unpack(">I", expected[:4])[0] == len(expected) - 4


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden_bin_decodes_to_json(name: str) -> None:
    data = (GOLDEN / f"{name}.bin").read_bytes()
    decoder = FrameDecoder()
    (message,) = decoder.feed(data)
    assert decoder.buffered == 0
    assert to_json(message) == golden_json(name)
    assert same(message, from_json(golden_json(name)))
    assert same(decode_body(data[4:]), message)


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden_messages_have_the_documented_shape(name: str) -> None:
    message = golden_json(name)
    if name.endswith("_request"):
        assert isinstance(message["id"], int)
        assert isinstance(message["op"], str)
    elif name.endswith("_event"):
        # A frame the server sends unasked (PROTOCOL.md, "Change feeds"): no id, no ok.
        assert next(iter(message)) == "event" and "id" not in message and "ok" not in message
    else:
        assert name.endswith("_reply")
        assert list(message)[:2] == ["id", "ok"]
        if message["ok"]:
            assert set(message) == {"id", "ok", "result"}
        else:
            assert set(message) == {"id", "ok", "error"}
            assert set(message["error"]) == {"code", "message"}
        request = GOLDEN / f"{name.removesuffix('_reply')}_request.json"
        if request.exists() and message["id"] is not None:
            assert message["id"] == golden_json(request.stem)["id"]


def test_golden_ping_frame_is_the_documented_bytes() -> None:
    # The worked example in PROTOCOL.md section 3.
    assert (GOLDEN / "ping_request.bin").read_bytes() == bytes.fromhex(
        "0000000d82a2696401a26f70a470696e67"
    )


def test_spec_references_every_golden_file_and_error_code() -> None:
    spec = SPEC.read_text(encoding="utf-8")
    for name in GOLDEN_NAMES:
        assert f"golden/{name}.json" in spec, name
    for code in ERROR_CLASSES:
        assert re.search(rf"^\| `{code}` \|", spec, re.MULTILINE), code
    assert str(DEFAULT_MAX_FRAME) in spec.replace("\u202f", "").replace(" ", "")


# ------------------------------------------------------------------ round trips

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=12,
)
messages = st.dictionaries(st.text(max_size=12), values, max_size=8)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_round_trip(message: dict[str, Any]) -> None:
    data = encode_frame(message)
    assert struct.unpack(">I", data[:4])[0] == len(data) - 4
    assert same(decode_body(data[4:]), message)
    (decoded,) = FrameDecoder().feed(data)
    assert same(decoded, message)


@settings(max_examples=100, deadline=None)
@given(st.lists(messages, min_size=1, max_size=3), st.data())
def test_random_splits(batch: list[dict[str, Any]], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(m) for m in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6), label="cut points"))
    decoder = FrameDecoder()
    out: list[dict[str, Any]] = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        out.extend(decoder.feed(stream[previous:cut]))
        previous = cut
    assert len(out) == len(batch)
    assert all(same(a, b) for a, b in zip(out, batch))
    assert decoder.buffered == 0


STREAM_MESSAGES: list[dict[str, Any]] = [
    {"id": 1, "op": "ping"},
    {"id": 2, "op": "insert", "table": "user", "values": {"name": "é", "blob": b"\x00\xff"}},
    {"id": 3, "ok": True, "result": {"columns": ["a"], "rows": [[1.5], [None], [-(2**63)]]}},
    {},
    {"id": 2**64 - 1, "op": "x" * 300, "big": b"\x01" * 70_000},
]
STREAM = b"".join(encode_frame(m) for m in STREAM_MESSAGES)


def test_split_at_every_byte_boundary() -> None:
    for cut in range(len(STREAM) + 1):
        decoder = FrameDecoder()
        out = decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:])
        assert out == STREAM_MESSAGES, cut
        assert decoder.buffered == 0


def test_byte_by_byte() -> None:
    small = STREAM[: -len(encode_frame(STREAM_MESSAGES[-1]))]
    decoder = FrameDecoder()
    out: list[dict[str, Any]] = []
    for i in range(len(small)):
        out.extend(decoder.feed(small[i : i + 1]))
    assert out == STREAM_MESSAGES[:-1]
    assert decoder.buffered == 0


def test_partial_frames_stay_buffered() -> None:
    decoder = FrameDecoder()
    data = encode_frame({"id": 1, "op": "ping"})
    assert decoder.feed(data[:3]) == []
    assert decoder.buffered == 3
    assert decoder.feed(data[3:-1]) == []
    assert decoder.buffered == len(data) - 1
    assert decoder.feed(data[-1:]) == [{"id": 1, "op": "ping"}]
    assert decoder.buffered == 0


def test_feed_accepts_bytearray_and_memoryview() -> None:
    data = encode_frame({"a": 1}) * 2
    assert FrameDecoder().feed(bytearray(data)) == [{"a": 1}, {"a": 1}]
    assert FrameDecoder().feed(memoryview(data)) == [{"a": 1}, {"a": 1}]
    assert FrameDecoder().feed(b"") == []


def test_str_and_bytes_stay_distinct() -> None:
    body = encode_body({"s": "ab", "b": b"ab"})
    assert body == b"\x82\xa1s\xa2ab\xa1b\xc4\x02ab"
    assert decode_body(body) == {"s": "ab", "b": b"ab"}


# ------------------------------------------------------------------ limits


def test_oversized_header_fails_before_the_body_arrives() -> None:
    decoder = FrameDecoder(max_frame=100)
    with pytest.raises(FrameError, match="101 bytes exceeds the maximum of 100"):
        decoder.feed(struct.pack(">I", 101))


def test_default_limit_is_64_mib_checked_on_the_header_alone() -> None:
    assert DEFAULT_MAX_FRAME == 64 * 1024 * 1024
    decoder = FrameDecoder()
    assert decoder.max_frame == DEFAULT_MAX_FRAME
    # Exactly the limit is fine: the decoder waits for the body.
    assert decoder.feed(struct.pack(">I", DEFAULT_MAX_FRAME)) == []
    with pytest.raises(FrameError):
        FrameDecoder().feed(struct.pack(">I", DEFAULT_MAX_FRAME + 1))
    with pytest.raises(FrameError):
        FrameDecoder().feed(b"\xff\xff\xff\xff")


def test_oversized_frame_after_good_ones_in_the_same_chunk() -> None:
    decoder = FrameDecoder(max_frame=50)
    with pytest.raises(FrameError):
        decoder.feed(encode_frame({"id": 1}) + struct.pack(">I", 51))


def test_max_frame_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FrameDecoder(max_frame=0)


def test_encode_frame_enforces_max_frame() -> None:
    message = {"data": b"x" * 100}
    size = len(encode_body(message))
    assert len(encode_frame(message, max_frame=size)) == size + 4
    with pytest.raises(ValidationError, match="exceeds the maximum frame size"):
        encode_frame(message, max_frame=size - 1)


# ------------------------------------------------------------------ bad frames

BAD_BODIES = {
    "empty": b"",
    "array": msgpack.packb([1, 2]),
    "int": msgpack.packb(7),
    "str": msgpack.packb("hello"),
    "nil": msgpack.packb(None),
    "bin": msgpack.packb(b"map?", use_bin_type=True),
    "int key": msgpack.packb({1: "a"}),
    "nested int key": msgpack.packb({"a": {2: "b"}}),
    "invalid utf-8 value": b"\x81\xa1a\xa2\xff\xfe",
    "invalid utf-8 key": b"\x81\xa2\xc3\x28\x01",
    "truncated map": msgpack.packb({"id": 1, "op": "ping"})[:-2],
    "truncated str": b"\x81\xa1a\xa5ab",
    "garbage": b"\xc1\xc1\xc1",
    "trailing bytes": msgpack.packb({"id": 1}) + b"\x00",
    "two maps": msgpack.packb({"a": 1}) * 2,
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_bodies_raise_frame_error(body: bytes) -> None:
    with pytest.raises(FrameError) as caught:
        decode_body(body)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, ProtocolError)


FEED_BUG = (
    "BUG: FrameDecoder.feed raises BufferError, not FrameError, for a malformed body: "
    "the memoryview passed to decode_body is still referenced by the exception's traceback "
    "when the except branch calls buffer.clear() (codec.py, FrameDecoder.feed)"
)


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_decoder_rejects_bad_bodies(body: bytes) -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameError) as caught:
        decoder.feed(frame(body))
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, ProtocolError)


def test_ext_types_are_malformed() -> None:
    with pytest.raises(FrameError, match="extension type 5"):
        decode_body(msgpack.packb({"a": msgpack.ExtType(5, b"x")}))


def test_timestamps_and_bin_keys_decode_but_are_never_valid_values() -> None:
    # PROTOCOL.md section 4: a timestamp is no acceptable value, a bin key no column name.
    from fastquartdb.engine import check_value
    from fastquartdb.engine.schema import TableInfo

    message = decode_body(msgpack.packb({"t": msgpack.Timestamp(1, 0), b"op": "ping"}))
    assert message[b"op"] == "ping"
    with pytest.raises(ValidationError, match="Timestamp"):
        check_value(message["t"], "a value")
    table = TableInfo("t", [(0, "op", "TEXT", 0, None, 0)])
    with pytest.raises(ValidationError, match="invalid column name"):
        table.check_column(b"op")


def test_decoder_refuses_input_after_a_bad_body() -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameError):
        decoder.feed(frame(msgpack.packb([1])))
    assert decoder.buffered == 0
    with pytest.raises(FrameError, match="closed"):
        decoder.feed(encode_frame({"id": 1, "op": "ping"}))
    with pytest.raises(FrameError):
        decoder.feed(b"")


def test_decoder_refuses_input_after_an_oversized_header() -> None:
    decoder = FrameDecoder(max_frame=10)
    with pytest.raises(FrameError):
        decoder.feed(struct.pack(">I", 11) + b"x" * 11)
    with pytest.raises(FrameError):
        decoder.feed(encode_frame({"a": 1}))


def test_good_frames_before_a_bad_one_are_lost_with_the_stream() -> None:
    # The stream is out of sync: the whole feed fails, and the caller closes the connection.
    decoder = FrameDecoder()
    with pytest.raises(FrameError):
        decoder.feed(encode_frame({"id": 1}) + frame(b"\xc1"))


# ------------------------------------------------------------------ encoding errors


@pytest.mark.parametrize(
    "value",
    [object(), 2**70, 2**64, -(2**63) - 1, {1, 2}, 1j],
    ids=["object", "2**70", "2**64", "below int64", "set", "complex"],
)
def test_unencodable_values_raise_validation_error(value: Any) -> None:
    with pytest.raises(ValidationError, match="cannot encode") as caught:
        encode_body({"value": value})
    assert isinstance(caught.value, ValueError)
    with pytest.raises(ValidationError):
        encode_frame({"nested": [{"value": value}]})


def test_int_range_edges_encode() -> None:
    for value in (-(2**63), 2**63 - 1, 2**64 - 1):
        assert decode_body(encode_body({"v": value})) == {"v": value}


# ---------------------------------------------------------------- decoded size (issue 13, row 8)


def test_decoded_size_is_counted_and_bounded() -> None:
    from fastquartdb.protocol.codec import DecodedTooLargeError, decode_body

    rows = [[None]] * 200_000  # 400 KB on the wire, ~18 MB as objects
    body = msgpack.packb({"id": 1, "op": "insert_many", "rows": rows})
    with pytest.raises(DecodedTooLargeError, match="--max-decoded"):
        decode_body(body, 8 * 1024 * 1024)
    assert len(decode_body(body, 64 * 1024 * 1024)["rows"]) == 200_000
    assert len(decode_body(body)["rows"]) == 200_000  # no limit: as before


def test_typical_rows_fit_the_default_decoded_limit() -> None:
    from fastquartdb.protocol.codec import decode_body
    from fastquartdb.server.config import DEFAULT_MAX_DECODED

    # 1,000 rows per request is what insert_many sends; 100,000 fit comfortably.
    rows = [[n, f"user{n}", n * 1.5, None, True] for n in range(100_000)]
    body = msgpack.packb({"id": 1, "op": "insert_many", "rows": rows})
    assert decode_body(body, DEFAULT_MAX_DECODED)["rows"][-1][0] == 99_999


def test_a_declared_huge_array_is_refused_before_it_is_allocated() -> None:
    from fastquartdb.protocol.codec import UNCOUNTED_BODY, decode_body

    # array32 header declaring 2**31 elements, then a little padding past the fast path.
    body = b"\x81\xa4rows\xdd\x80\x00\x00\x00" + b"\xc0" * (UNCOUNTED_BODY + 1)
    with pytest.raises(FrameError):
        decode_body(body, 1024 * 1024)


def test_decoder_refuses_only_the_frame_that_decodes_too_large() -> None:
    from fastquartdb.protocol.codec import RefusedRequest

    decoder = FrameDecoder(max_decoded=1024 * 1024)
    big = {"op": "insert_many", "rows": [[None]] * 50_000, "id": 7}  # id after the rows
    data = encode_frame(big) + encode_frame({"id": 8, "op": "ping"})
    first, second = decoder.feed(data)
    assert type(first) is RefusedRequest and first["id"] == 7
    assert "--max-decoded" in first.reason
    assert second == {"id": 8, "op": "ping"}  # the stream stays in sync
    assert decoder.feed(encode_frame({"id": 9, "op": "ping"})) == [{"id": 9, "op": "ping"}]
