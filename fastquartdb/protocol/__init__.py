"""The wire protocol: messages, error codes and the frame codec. No I/O here."""

from .address import default_socket_path
from .codec import (
    DEFAULT_MAX_FRAME,
    FrameDecoder,
    FrameError,
    decode_body,
    encode_body,
    encode_frame,
    encode_ok_frame,
)
from .errors import ERROR_CLASSES, error_code, error_from_code
from .messages import (
    ALL_OPS,
    KEYED_OPS,
    PROTOCOL_VERSION,
    READ_OPS,
    RESENDABLE_OPS,
    SERVER_OPS,
    TRANSACTION_OPS,
    WRITE_OPS,
    error_reply,
    ok_reply,
)

__all__ = [
    "ALL_OPS",
    "DEFAULT_MAX_FRAME",
    "ERROR_CLASSES",
    "KEYED_OPS",
    "PROTOCOL_VERSION",
    "READ_OPS",
    "RESENDABLE_OPS",
    "SERVER_OPS",
    "TRANSACTION_OPS",
    "WRITE_OPS",
    "FrameDecoder",
    "FrameError",
    "decode_body",
    "default_socket_path",
    "encode_body",
    "encode_frame",
    "encode_ok_frame",
    "error_code",
    "error_from_code",
    "error_reply",
    "ok_reply",
]
