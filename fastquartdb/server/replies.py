"""Reply framing for client connections: how a reply becomes a frame, and what fails.

A reply msgpack cannot carry becomes that request's ``validation`` error; one
larger than ``max_reply`` becomes ``result_too_large`` (the message says what
to do). Also the peer credentials a Unix socket tells.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from ..protocol import encode_body, error_reply
from ..protocol.errors import ResultTooLargeError, ValidationError

__all__ = ["NO_CHANGE_LOG", "frame", "peer_credentials", "too_large"]

_HEADER = struct.Struct(">I")
_CREDS = struct.Struct("3i")


#: The answer to ``subscribe`` where the writer keeps no change log (a dqlite cluster).
NO_CHANGE_LOG = "change feeds are not available on a dqlite cluster yet (README, 'Change feeds')"


def peer_credentials(sock: socket.socket) -> tuple[int, int, int] | None:
    """``(pid, uid, gid)`` of the process at the other end of a Unix socket, where the OS tells."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, option, _CREDS.size)
    pid, uid, gid = _CREDS.unpack(raw)
    return pid, uid, gid


def frame(reply: dict[str, Any]) -> bytes:
    """``reply`` as a length-prefixed frame (its ``validation`` error if msgpack cannot carry it)."""
    try:
        body = encode_body(reply)
    except ValidationError as exc:  # a result msgpack cannot carry
        body = encode_body(error_reply(reply.get("id"), exc.code, str(exc)))
    return _HEADER.pack(len(body)) + body


def too_large(size: int, limit: int) -> tuple[str, str]:
    """The error code and message of a reply of ``size`` bytes over the ``limit``."""
    return ResultTooLargeError.code, (
        f"the result is {size} bytes, larger than the daemon's reply limit of {limit} bytes "
        "(--max-reply); fetch fewer rows (limit=, fewer columns=) or stream them with "
        "Model.iterate()"
    )
