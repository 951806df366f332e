"""Frame codec: a 4-byte big-endian length, then one msgpack map.

Sans-I/O: :func:`encode_frame` turns a message into bytes and
:class:`FrameDecoder` is fed whatever bytes arrive and hands back whole
messages. The declared length is checked against the maximum frame size
*before* the body is buffered, so a peer cannot make us hold more than
``max_frame`` bytes. This is the only module that imports msgpack.
"""

from __future__ import annotations

import struct
import threading
from typing import Any

import msgpack

from .errors import ProtocolError, ValidationError

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HEADER_SIZE",
    "REFUSED_OP",
    "UNCOUNTED_BODY",
    "DecodedTooLargeError",
    "FrameDecoder",
    "FrameError",
    "RefusedRequest",
    "decode_body",
    "encode_body",
    "encode_frame",
    "encode_ok_frame",
    "encoded_size",
]

#: Largest body accepted unless configured otherwise (bytes, header excluded).
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
HEADER_SIZE = 4
_HEADER = struct.Struct(">I")
_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from
#: One Packer per thread for encode_body: msgpack.packb builds a new one on every call.
_local = threading.local()


class FrameError(ProtocolError, ValueError):
    """The byte stream is not a valid sequence of frames; the connection cannot continue."""


def encode_body(message: Any) -> bytes:
    """Pack one message as msgpack (str as str, bytes as bin).

    Raises:
        ValidationError: a value msgpack cannot carry (an object, an integer
            beyond 64 bits).
    """
    try:
        pack = _local.__dict__.get("pack")
        if pack is None:
            pack = _local.pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
        return pack(message)  # type: ignore[no-any-return]
    except (TypeError, OverflowError, ValueError) as exc:
        raise ValidationError(
            f"cannot encode request: {exc} (values must be int (64-bit), float, str, "
            "bytes, bool, None, or lists/dicts of them)"
        ) from None


def encoded_size(value: Any) -> int:
    """How many bytes ``value`` takes packed (values msgpack cannot carry count as 0)."""
    try:
        return len(encode_body(value))
    except ValidationError:
        return 0  # refused later, when the reply is encoded, with the reason


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not part of the protocol")


#: Bodies up to this size decode without counting: at most ~80 bytes of objects per byte.
UNCOUNTED_BODY = 64 * 1024
#: Estimated bytes of a decoded container (list or dict object, GC header, its slot) ...
_CONTAINER_COST = 80
#: ... and of each element: its pointer, plus the object a short scalar needs.
_ELEMENT_COST = 64


class DecodedTooLargeError(FrameError):
    """A frame whose body would decode to more memory than allowed."""


#: The ``op`` of a :class:`RefusedRequest` (no real op starts with NUL).
REFUSED_OP = "\x00refused"


class RefusedRequest(dict[str, Any]):
    """What :class:`FrameDecoder` yields for a frame it would not decode: ``id`` and ``reason``.

    The frame was whole and well delimited, so the stream is still in sync: the
    receiver answers that request alone with an error (``reason``) and reads on.
    Its ``op`` is :data:`REFUSED_OP`; check the type, not the op, to tell one apart.
    """

    __slots__ = ("reason",)

    def __init__(self, request_id: Any, reason: str) -> None:
        super().__init__(id=request_id, op=REFUSED_OP)
        self.reason = reason


def _budget_hooks(limit: int, size: int) -> tuple[Any, Any]:
    """``list_hook``/``object_hook`` that count what is built and stop past ``limit`` bytes."""
    left = [limit - size]  # the body's own bytes bound its strings and blobs

    def check(container: Any) -> Any:
        left[0] -= _CONTAINER_COST + _ELEMENT_COST * len(container)
        if left[0] < 0:
            raise DecodedTooLargeError(
                f"a frame of {size} bytes decodes to more than the {limit} bytes of memory "
                "one request may use (many tiny values); send fewer rows per request "
                "(insert_many takes chunk_size) or raise the daemon's --max-decoded"
            )
        return container

    return check, check


def decode_body(
    body: bytes | bytearray | memoryview, max_decoded: int | None = None
) -> dict[str, Any]:
    """Unpack one frame body, which must be a msgpack map with string keys.

    Args:
        body: the bytes after the header.
        max_decoded: the most memory (estimated bytes of Python objects) the body may
            decode to; ``None``: no limit. Bodies up to :data:`UNCOUNTED_BODY` are
            not counted (their cost is bounded by their size). The estimate is an
            upper bound: 80 bytes per list or map plus 64 per element plus the body's
            size (a ``[[nil]]`` row is 2 bytes on the wire and ~90 in memory).

    Raises:
        DecodedTooLargeError: the body would decode to more than ``max_decoded``.
        FrameError: the body is not valid msgpack, not a map, or has invalid UTF-8.
    """
    size = len(body)
    try:
        if max_decoded is None or size <= UNCOUNTED_BODY:
            message = msgpack.unpackb(body, raw=False, strict_map_key=True, ext_hook=_no_ext)
        else:
            list_hook, object_hook = _budget_hooks(max_decoded, size)
            message = msgpack.unpackb(
                body,
                raw=False,
                strict_map_key=True,
                ext_hook=_no_ext,
                list_hook=list_hook,
                object_hook=object_hook,
                # A declared length is allocated (8 bytes a slot) before its elements arrive.
                max_array_len=max(16, max_decoded // 8),
                max_map_len=max(16, max_decoded // 16),
            )
    except DecodedTooLargeError:
        raise
    except Exception as exc:  # msgpack raises many unrelated classes for bad input
        raise FrameError(f"malformed frame body: {type(exc).__name__}: {exc}") from None
    if not isinstance(message, dict):
        raise FrameError(f"a frame must hold a msgpack map, got {type(message).__name__}")
    return message


def _peek_id(body: bytes | bytearray | memoryview) -> int | None:
    """The ``id`` of a frame body, read without building its other values (skipped)."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, ext_hook=_no_ext)
    unpacker.feed(body)
    try:
        for _ in range(unpacker.read_map_header()):
            if unpacker.unpack() == "id":
                value = unpacker.unpack()
                return value if type(value) is int else None
            unpacker.skip()
    except Exception:  # not a map, a bad key: no id to answer to
        return None
    return None


def encode_ok_frame(request_id: Any, result: Any) -> bytes:
    """The frame of a success reply, ``{"id", "ok": true, "result"}``: the daemon's hot path.

    Uses one module-level packer, so call it from one thread (the daemon's loop).

    Raises:
        ValidationError: the result holds a value msgpack cannot carry.
    """
    try:
        body: bytes = _packb({"id": request_id, "ok": True, "result": result})
    except (TypeError, OverflowError, ValueError) as exc:
        raise ValidationError(f"cannot encode the result: {exc}") from None
    return _pack_header(len(body)) + body


def encode_frame(message: dict[str, Any], max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Return the header and body of one frame.

    Raises:
        ValidationError: the message cannot be encoded or exceeds ``max_frame``.
    """
    body = encode_body(message)
    if len(body) > max_frame:
        raise ValidationError(
            f"request of {len(body)} bytes exceeds the maximum frame size of {max_frame} "
            "bytes: split it (insert_many takes chunk_size) or raise --max-frame"
        )
    return _pack_header(len(body)) + body


class FrameDecoder:
    """Incremental decoder: ``feed()`` bytes in any split, get whole messages out.

    With ``max_decoded``, a frame whose body would decode to more memory comes out
    as a :class:`RefusedRequest` (its ``id`` and why) instead of its message, and
    decoding goes on with the next frame.

    Example::

        decoder = FrameDecoder()
        for message in decoder.feed(data):
            handle(message)

    After a :class:`FrameError` the stream is out of sync and the decoder
    refuses further input.
    """

    __slots__ = ("_broken", "_buffer", "max_decoded", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, max_decoded: int | None = None) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be positive")
        self.max_frame = max_frame
        #: See :func:`decode_body`; ``None`` decodes whatever fits in ``max_frame``.
        self.max_decoded = max_decoded
        self._buffer = bytearray()
        self._broken = False

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[dict[str, Any]]:
        """Add ``data`` and return every message now complete, in order.

        Raises:
            FrameError: a declared length exceeds ``max_frame``, or a body is malformed.
        """
        if self._broken:
            raise FrameError("decoder is closed after an earlier framing error")
        buffer = self._buffer
        buffer += data
        messages: list[dict[str, Any]] = []
        offset = 0
        end = len(buffer)
        view = memoryview(buffer)  # one per call; each frame is a slice of it
        try:
            while end - offset >= HEADER_SIZE:
                (length,) = _unpack_header(buffer, offset)
                if length > self.max_frame:
                    raise FrameError(
                        f"frame of {length} bytes exceeds the maximum of {self.max_frame} bytes"
                    )
                start = offset + HEADER_SIZE
                if end - start < length:
                    break
                body = view[start : start + length]
                try:
                    messages.append(decode_body(body, self.max_decoded))
                except DecodedTooLargeError as exc:
                    messages.append(RefusedRequest(_peek_id(body), str(exc)))
                del body
                offset = start + length
        except FrameError:
            self._broken = True
            # A new buffer, not clear(): the failed decode's memoryview may still be
            # referenced from the traceback, and a bytearray with exports cannot resize.
            self._buffer = bytearray()
            raise
        finally:
            view.release()
        if offset:
            del buffer[:offset]
        return messages
