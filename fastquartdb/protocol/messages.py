"""Message vocabulary: protocol version, op names, and reply shapes.

A request is a map ``{"id": int, "op": str, ...fields}``; a reply is
``{"id": int, "ok": true, "result": ...}`` or
``{"id": int, "ok": false, "error": {"code": str, "message": str}}``.
Fields a receiver does not know are ignored. ``protocol/PROTOCOL.md`` at the
repository root is the full specification of every op.
"""

from __future__ import annotations

from typing import Any, Final

from .errors import ValidationError, brief

__all__ = [
    "ALL_OPS",
    "KEYED_OPS",
    "MULTI_STATEMENT_OPS",
    "PROTOCOL_VERSION",
    "READ_OPS",
    "RESENDABLE_OPS",
    "SCHEMA_RETRY_OPS",
    "SERVER_OPS",
    "TRANSACTION_OPS",
    "WRITE_OPS",
    "check_idempotency_key",
    "error_reply",
    "has_request_key",
    "ok_reply",
]

#: Bumped on any change an older peer would misread.
PROTOCOL_VERSION: Final = 1

#: Ops that never change the database.
READ_OPS: Final = frozenset({"fetch", "count", "aggregate", "ping", "changes", "describe"})
#: Ops that may change the database (they run inside the batch's write transaction).
WRITE_OPS: Final = frozenset(
    {
        "insert",
        "insert_many",
        "update",
        "delete",
        "upsert",
        "upsert_many",
        "ensure_table",
        "execute",
        "resolve",
    }
)
#: Ops that change nothing when they fail on validation: after a failure that a stale
#: cache of table shapes may explain, a runner reads the shapes again and retries once.
SCHEMA_RETRY_OPS: Final = (READ_OPS | WRITE_OPS) - {"ping", "ensure_table", "execute"}
#: Requests made of several statements: a runner makes each all-or-nothing (its own
#: transaction, or a SAVEPOINT inside one), so a failure undoes all of it.
MULTI_STATEMENT_OPS: Final = frozenset({"insert_many", "upsert_many", "ensure_table"})
#: Interactive transaction control.
TRANSACTION_OPS: Final = frozenset({"begin", "commit", "rollback"})
#: Answered by the daemon itself, never queued for the database.
SERVER_OPS: Final = frozenset({"hello", "stats", "subscribe"})
ALL_OPS: Final = READ_OPS | WRITE_OPS | TRANSACTION_OPS | SERVER_OPS
#: Ops that may be sent again after a lost connection whatever became of the first send:
#: reads, and ``ensure_table``, which compares the model with the live schema each time
#: (a second run after a committed first one changes nothing).
RESENDABLE_OPS: Final = READ_OPS | {"ensure_table"}
#: Writes the client gives a request key (``"key": [client, seq]``), so that after a lost
#: connection they are resent and the writer, which records each key with its write,
#: answers a resend from the record instead of running it again (see PROTOCOL.md).
#: A ``commit`` is keyed too (top level only); ``resolve`` asks what became of one.
KEYED_OPS: Final = frozenset(
    {"insert", "insert_many", "update", "delete", "upsert", "upsert_many", "execute"}
)


#: Longest ``idempotency_key`` accepted (Stripe allows 255 characters too).
MAX_IDEMPOTENCY_KEY: Final = 255


def check_idempotency_key(key: object) -> str:
    """``key`` if it is a usable idempotency key: a non-empty str of at most 255 characters.

    Raises:
        ValidationError: anything else, saying what is accepted.
    """
    if type(key) is not str or not key or len(key) > MAX_IDEMPOTENCY_KEY:
        raise ValidationError(
            f"idempotency_key must be a non-empty string of at most {MAX_IDEMPOTENCY_KEY} "
            f"characters, got {brief(key)}"
        )
    return key


def has_request_key(request: dict[str, Any]) -> bool:
    """Whether ``request`` carries a request key or an idempotency key (see PROTOCOL.md §10.2)."""
    return "key" in request or "idempotency_key" in request


def ok_reply(request_id: Any, result: Any) -> dict[str, Any]:
    """The reply to a request that succeeded."""
    return {"id": request_id, "ok": True, "result": result}


def error_reply(request_id: Any, code: str, message: str) -> dict[str, Any]:
    """The reply to a request that failed with the error ``code``."""
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}
