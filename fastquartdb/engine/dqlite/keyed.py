"""Request keys on a dqlite cluster: the engine's records, driven over the leader connection.

The decisions and the SQL are the engine's (:mod:`fastquartdb.engine.requestkeys`,
the same ``_fqdb_requests`` / ``_fqdb_idempotency`` tables as in a file); this
module only runs them, with :func:`.session.drive`, around a request:

* A keyed request outside an interactive transaction is its own dqlite
  transaction: ``BEGIN IMMEDIATE``; the key's lookup when one is needed (a
  resend, a caller key, every key after a collision); the write; its record
  (``RequestKeys.flush``: one ``INSERT``, and now and then a little pruning);
  ``COMMIT``. One Raft round, as for the write alone, and the record exists on
  every node if and only if the write committed.
* After a leader change the transport sends the request again with
  ``"resent": true``. A new dqlite leader applies every entry its predecessor
  committed before it runs a statement (a Raft barrier), so the lookup finds the
  record if and only if the first send committed, and answers from it.
* ``resolve`` and a keyed top-level ``commit`` are the engine's too:
  :func:`resolve` in its own transaction, :func:`record_commit` just before the
  interactive transaction's ``COMMIT``.

The caller holds the leader connection (one request at a time on it), so one
:class:`RequestKeys` per transport stages one transaction's records at a time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ...protocol.errors import OperationalError, ValidationError
from ..requestkeys import KeyConflict, RequestKeys
from .rawsql import classify
from .session import Lost, Session, drive, quietly

__all__ = ["is_keyed", "record_commit", "resolve", "run_keyed", "unrecordable", "worth_recording"]

Run = Callable[[Session, dict[str, Any]], Awaitable[Any]]


def is_keyed(req: dict[str, Any]) -> bool:
    """Whether ``req`` takes the keyed path: it carries a key, and it may write.

    A raw ``execute`` that cannot write (a ``SELECT`` the manager keyed like any
    ``execute``) runs as before, outside a write transaction: the engine would
    not record it either (it may run again), and a read must not take the
    cluster's write lock. A caller's ``idempotency_key`` always takes it (its
    reuse for different content is an error whatever the statement).
    """
    if req.get("idempotency_key") is not None:
        return True
    if "key" not in req:
        return False
    if req.get("op") == "execute":
        sql = req.get("sql")
        return not isinstance(sql, str) or classify(sql).writes
    return True


def unrecordable(req: dict[str, Any]) -> ValidationError | None:
    """Why ``req``'s key cannot be recorded over dqlite (text with a NUL), or None: found
    before it runs, since the records of a batch go in one statement, which would fail
    with it for every request of the batch."""
    key = req.get("key")
    for text in (req.get("idempotency_key"), key[0] if type(key) is list and key else None):
        if isinstance(text, str) and "\x00" in text:
            return ValidationError(
                "a key containing a NUL character cannot be recorded over dqlite"
            )
    return None


def worth_recording(req: dict[str, Any], result: Any) -> bool:
    # As in the engine: a raw statement that only read (rows, no change) is not recorded.
    if req.get("op") != "execute" or not isinstance(result, dict) or not result.get("columns"):
        return True
    sql = req.get("sql")
    return isinstance(sql, str) and classify(sql).writes


async def _in_own_transaction(
    keys: RequestKeys, session: Session, body: Callable[[Session], Awaitable[Any]]
) -> Any:
    """``body`` then the staged records in one ``BEGIN IMMEDIATE`` ... ``COMMIT``.

    Raises:
        KeyConflict: a first send's record exists already (rolled back; run again
            with every key looked up).
        Lost: the leader was lost (dqlite undoes the open transaction).
    """
    keys.begin()
    await session.control("BEGIN IMMEDIATE")
    inner = Session(session.conn, in_transaction=True)
    try:
        outcome = await body(inner)
        await drive(inner, keys.flush())
    except Lost:
        keys.forget_schema()  # tables this transaction made are gone with it
        raise
    except BaseException:
        # Never leave BEGIN open on the shared connection: the next request would run in it.
        keys.forget_schema()
        await quietly(session, "ROLLBACK")
        raise
    try:
        await session.commit()
    except Lost:
        keys.forget_schema()
        raise
    except BaseException:
        # A failed COMMIT leaves the transaction open in SQLite: end it.
        keys.forget_schema()
        await quietly(session, "ROLLBACK")
        raise
    keys.committed()
    return outcome


async def run_keyed(keys: RequestKeys, session: Session, req: dict[str, Any], run: Run) -> Any:
    """Run a keyed request (see :func:`is_keyed`): answered from its record, or run and
    recorded in the same transaction.

    Raises:
        FQDBError: the request failed (nothing of it, and no record, committed), or a
            caller key was reused for another request (:class:`IdempotencyKeyError`).
        Lost: the leader was lost; ``committable`` says whether COMMIT was sent.
    """

    async def body(inner: Session) -> tuple[bool, Any]:
        outcome = keys.answer(req)
        if outcome is None and keys.needs_lookup(req):
            outcome = await drive(inner, keys.lookup(req))
        if outcome is None:
            result = await run(inner, req)
            if worth_recording(req, result):
                keys.stage(req, result)
            outcome = (True, result)
        return outcome

    while True:
        try:
            ok, value = await _in_own_transaction(keys, session, body)
        except KeyConflict:
            # The first send was run already (a leader that was cut off resumed after
            # its client resent elsewhere): run it again looking the key up.
            if keys.check_all:  # looked up and still colliding: do not loop
                keys.check_all = False
                raise OperationalError("request keys collided twice for one request") from None
            keys.check_all = True
            continue
        keys.check_all = False
        if ok:
            return value
        raise value


async def resolve(keys: RequestKeys, session: Session, req: dict[str, Any]) -> dict[str, Any]:
    """Answer ``resolve`` (committed, with the result, or never: a tombstone is written)."""
    answer: dict[str, Any] = await _in_own_transaction(
        keys, session, lambda inner: drive(inner, keys.resolve(req))
    )
    return answer


async def record_commit(keys: RequestKeys, session: Session, req: dict[str, Any]) -> None:
    """Record a top-level ``commit``'s key inside its open transaction, before ``COMMIT``.

    Raises:
        ConnectionLostError: the key was resolved as rolled back meanwhile; the caller
            rolls back.
    """
    await drive(session, keys.record_commit(req))
