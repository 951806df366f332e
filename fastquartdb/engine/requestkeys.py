"""Request keys: the writer's record of what it has done, so a resent write runs once.

Every write a client sends outside an interactive transaction carries a *request
key* (``"key": [client, seq]``, made by the client) or a caller's *idempotency
key* (``"idempotency_key": str``). The writer records ``key -> result`` in the
same transaction as the write, so the record exists if and only if the write
committed. A request whose key is recorded is answered from the record and not
run again; that is how a write resent after a lost connection — to a restarted
daemon, to embedded mode, which shares the file and so the records, or to a new
dqlite leader, which has them replicated — is executed at most once and
acknowledged exactly once.

Two tables in the database (the file, or the dqlite cluster's database; created
on the first keyed write)::

    _fqdb_requests     (client, seq) -> at, result          automatic keys
    _fqdb_idempotency  key -> at, digest, result             caller keys (+ index on at)

Cost, on the hot path: a first send of an automatic key is not looked up (no
other writer can know a key its client has never sent); its record is added
with the others of its batch by one ``executemany`` before ``COMMIT``. Only
resent requests (``"resent": true``) and caller keys are looked up. Should a
first send find its record already made — a daemon stopped past the client's
timeout resumes after the client resent elsewhere — the insert of the records
fails on the primary key, and :class:`KeyConflict` makes the engine run the batch
again, looking every key up.

Pruning, in small steps inside ordinary batches (never a long transaction):
a client reports in ``"acked"`` the lowest ``seq`` it still waits for, and its
records below it are deleted (bounded by what it has in flight); records older
than ``window`` (clients that died) go too; caller keys are kept ``idempotency_window``
seconds, and at most ``idempotency_max`` of them.

An interactive transaction's ``commit`` carries an automatic key too; it is
recorded just before ``COMMIT``. ``{"op": "resolve", "key": ...}`` asks whether a
key committed and, if it did not, records that it never will (a *tombstone*), so
a transaction whose commit reply was lost is resolved to committed or rolled
back, never unknown.

The logic does no I/O: each method that needs the database is a generator of
statements (:mod:`.steps`), run by a driver where the records are — the engine's
``sqlite3`` connection (:func:`.steps.run`) or a dqlite cluster's leader (the dqlite
transport's driver). The decisions and the SQL exist once, here. Per request:
:meth:`RequestKeys.answer` (no I/O), then :meth:`RequestKeys.lookup` only if
:meth:`RequestKeys.needs_lookup`; :meth:`RequestKeys.stage` after the write;
:meth:`RequestKeys.flush` before ``COMMIT``.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from ..protocol.codec import decode_body, encode_body
from ..protocol.errors import (
    ConnectionLostError,
    IdempotencyKeyError,
    IntegrityError,
    ValidationError,
    brief,
)
from ..protocol.messages import check_idempotency_key
from .steps import Exec, ExecMany, Query, Steps

__all__ = [
    "DEFAULT_IDEMPOTENCY_MAX",
    "DEFAULT_IDEMPOTENCY_WINDOW",
    "DEFAULT_KEY_WINDOW",
    "ROLLED_BACK",
    "KeyConflict",
    "KeyStats",
    "RequestKeys",
    "digest",
]

#: Seconds an automatic key's record outlives its client's last word about it.
DEFAULT_KEY_WINDOW = 600.0
#: Seconds a caller's idempotency key is remembered (Stripe keeps them 24 hours).
DEFAULT_IDEMPOTENCY_WINDOW = 86_400.0
#: Most caller keys remembered; the oldest go first.
DEFAULT_IDEMPOTENCY_MAX = 1_000_000
#: Seconds between two passes of the time-based pruning.
PRUNE_INTERVAL = 1.0
#: Rows one pruning pass deletes at most per table (a pass stays short).
PRUNE_CHUNK = 2000

#: A tombstone's result: this key never committed and never will.
ROLLED_BACK = b"\xc1rolled-back"

#: Request fields that are not its content (a resend differs in them, nothing else).
_TRANSPORT_FIELDS = frozenset({"id", "key", "idempotency_key", "resent", "acked", "txn", "timeout"})

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS _fqdb_requests (client TEXT NOT NULL, seq INTEGER NOT NULL, "
    "at INTEGER NOT NULL, result BLOB, PRIMARY KEY (client, seq)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS _fqdb_idempotency (key TEXT PRIMARY KEY, "
    "at INTEGER NOT NULL, digest BLOB, result BLOB) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS _fqdb_idempotency_at ON _fqdb_idempotency (at)",
)


class KeyConflict(Exception):
    """A first send's record exists already: run the batch again, looking every key up."""


class KeyStats:
    """What the ``stats`` op reports about request keys."""

    __slots__ = ("deduplicated", "pruned", "recorded", "resent", "resolved")

    def __init__(self) -> None:
        #: Keyed requests answered from their record instead of being run again.
        self.deduplicated = 0
        #: Requests that arrived marked as resent after a lost connection.
        self.resent = 0
        #: Records written (one per keyed write that committed).
        self.recorded = 0
        #: Records deleted by pruning.
        self.pruned = 0
        #: ``resolve`` requests answered.
        self.resolved = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {name: getattr(self, name) for name in self.__slots__}


def _key_of(req: dict[str, Any]) -> tuple[str, int] | None:
    key = req.get("key")
    if key is None:
        return None
    if (
        type(key) is list
        and len(key) == 2
        and type(key[0]) is str
        and 0 < len(key[0]) <= 64
        and type(key[1]) is int
        and key[1] >= 0
    ):
        return key[0], key[1]
    raise ValidationError(
        f"'key' must be [client, seq]: a client id (1-64 characters) and a request "
        f"number >= 0, got {brief(key)}"
    )


def _idempotency_key(req: dict[str, Any]) -> str | None:
    key = req.get("idempotency_key")
    return None if key is None else check_idempotency_key(key)


def _canonical(value: Any) -> Any:
    if type(value) is dict:
        return [
            [str(k), _canonical(v)] for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
        ]
    if type(value) is list:
        return [_canonical(v) for v in value]
    return value


def digest(req: dict[str, Any]) -> bytes:
    """What a request asks, independent of how it travelled and of its maps' key order."""
    content = {k: v for k, v in req.items() if k not in _TRANSPORT_FIELDS}
    return hashlib.blake2b(encode_body(_canonical(content)), digest_size=16).digest()


def _encode_result(result: Any) -> Any:
    # An int (what most writes return) is stored as itself; anything else packed.
    return result if type(result) is int else encode_body({"r": result})


def _decode_result(stored: Any) -> Any:
    return decode_body(stored)["r"] if isinstance(stored, bytes) else stored


def _never() -> tuple[bool, Any]:
    """The answer to a request whose key was resolved as never committed (a tombstone)."""
    return False, ConnectionLostError(
        "this request was resolved as never committed by its client; it was not run"
    )


_LOOKUP_AUTO = "SELECT result FROM _fqdb_requests WHERE client = ? AND seq = ?"
_LOOKUP_CALLER = "SELECT digest, result FROM _fqdb_idempotency WHERE key = ?"
_INSERT_AUTO = "INSERT INTO _fqdb_requests (client, seq, at, result) VALUES (?, ?, ?, ?)"
_INSERT_CALLER = "INSERT INTO _fqdb_idempotency (key, at, digest, result) VALUES (?, ?, ?, ?)"


class RequestKeys:
    """The records of one writer connection (see the module docstring).

    Holds no connection: the methods that need the database return
    :data:`~.steps.Steps` for the caller's driver to run. Not thread-safe: one
    writer's state (the staged records of its open transaction), used by one
    thread or task at a time, inside its write transactions.
    """

    def __init__(
        self,
        *,
        window: float = DEFAULT_KEY_WINDOW,
        idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW,
        idempotency_max: int = DEFAULT_IDEMPOTENCY_MAX,
    ) -> None:
        self.window = window
        self.idempotency_window = idempotency_window
        self.idempotency_max = idempotency_max
        self.stats = KeyStats()
        self._ready = False
        # Records of the transaction being built: what COMMIT will make true.
        self._auto: list[tuple[str, int, int, Any]] = []
        self._caller: list[tuple[str, int, bytes, Any]] = []
        # Keys of this transaction -> outcome, so a key twice in one batch runs once.
        self._seen: dict[Any, tuple[bytes | None, Any]] = {}
        #: Look every key up, also first sends (after a KeyConflict).
        self.check_all = False
        # client -> lowest seq it still waits for, not yet applied.
        self._acks: dict[str, int] = {}
        self._next_prune = 0.0
        # Caller keys in the table as far as this writer knows (others may add some:
        # the count then errs low, and the bound is kept a little later).
        self._caller_rows: int | None = None

    # ------------------------------------------------------------ schema

    def ensure_tables(self) -> Steps[None]:
        """Create the record tables if missing (inside the caller's write transaction)."""
        if self._ready:
            return
        for sql in _SCHEMA:
            yield Exec(sql)
        self._ready = True

    def forget_schema(self) -> None:
        """The schema may have changed (a rolled-back DDL, raw SQL): look again next time."""
        self._ready = False

    # ------------------------------------------------------------ one transaction

    def begin(self) -> None:
        """A write transaction starts: nothing staged yet."""
        self._auto.clear()
        self._caller.clear()
        self._seen.clear()

    def answer(self, req: dict[str, Any]) -> tuple[bool, Any] | None:
        """Without I/O: the outcome this transaction already holds for ``req``'s key, else None.

        Counts a resend and notes the client's ``acked``. Call it first for every
        keyed request; then :meth:`lookup` if :meth:`needs_lookup` says so.

        Raises:
            ValidationError: the key is malformed.
            IdempotencyKeyError: a caller key was used before for a different request.
        """
        if req.get("resent") is True:
            self.stats.resent += 1
        if "acked" in req:
            self._note_ack(req)
        caller = _idempotency_key(req)
        if caller is not None:
            seen = self._seen.get(caller)
            return None if seen is None else self._check_caller(caller, seen, digest(req))
        auto = _key_of(req)
        if auto is None:
            raise ValidationError(
                "a keyed request needs 'key' ([client, seq]) or 'idempotency_key'"
            )
        seen = self._seen.get(auto)
        if seen is None:
            return None
        # Held as a result (not as stored), but a tombstone this batch wrote is ROLLED_BACK.
        return _never() if seen[1] == ROLLED_BACK else self._answer(seen[1])

    def needs_lookup(self, req: dict[str, Any]) -> bool:
        """Whether ``req``'s record must be looked up: a resend, a caller key, or every
        key after a :class:`KeyConflict`. A first send is not (the hot path)."""
        return self.check_all or req.get("resent") is True or req.get("idempotency_key") is not None

    def lookup(self, req: dict[str, Any]) -> Steps[tuple[bool, Any] | None]:
        """The outcome to answer ``req`` with from its record, or None to run it.

        Raises:
            ValidationError: the key is malformed.
            IdempotencyKeyError: a caller key was used before for a different request.
        """
        yield from self.ensure_tables()
        caller = _idempotency_key(req)
        if caller is not None:
            rows = yield Query(_LOOKUP_CALLER, [caller])
            if not rows:
                return None
            return self._check_caller(caller, (rows[0][0], _decode_result(rows[0][1])), digest(req))
        auto = _key_of(req)
        assert auto is not None  # answer() ran first
        rows = yield Query(_LOOKUP_AUTO, auto)
        return self._recorded(rows[0][0]) if rows else None

    def _check_caller(
        self, key: str, seen: tuple[bytes | None, Any], wanted: bytes
    ) -> tuple[bool, Any]:
        if seen[0] != wanted:
            raise IdempotencyKeyError(
                f"idempotency key {brief(key)} was already used for a different request; "
                "use a new key for a new request (a key may only repeat the same request)"
            )
        return self._answer(seen[1])

    def _recorded(self, stored: Any) -> tuple[bool, Any]:
        return _never() if stored == ROLLED_BACK else self._answer(_decode_result(stored))

    def _answer(self, result: Any) -> tuple[bool, Any]:
        self.stats.deduplicated += 1
        return True, result

    def stage(self, req: dict[str, Any], result: Any) -> None:
        """Record, with this transaction, that ``req`` succeeded with ``result`` (no I/O:
        :meth:`flush` writes it)."""
        now = int(time.time())
        stored = _encode_result(result)
        caller = _idempotency_key(req)
        if caller is not None:
            wanted = digest(req)
            self._caller.append((caller, now, wanted, stored))
            self._seen[caller] = (wanted, result)
            return
        auto = _key_of(req)
        assert auto is not None
        self._auto.append((auto[0], auto[1], now, stored))
        self._seen[auto] = (None, result)

    def resolve(self, req: dict[str, Any]) -> Steps[dict[str, Any]]:
        """Answer ``{"op": "resolve", "key": ...}``: committed (with the result) or not, ever.

        A key not recorded gets a tombstone (staged: :meth:`flush` writes it with the
        transaction), so the write it names can no longer commit anywhere (its own
        record would collide with it).
        """
        self.stats.resolved += 1
        auto = _key_of(req)
        if auto is None:
            raise ValidationError("resolve needs 'key': the [client, seq] of the request")
        seen = self._seen.get(auto)
        if seen is None:
            yield from self.ensure_tables()
            rows = yield Query(_LOOKUP_AUTO, auto)
            if not rows:
                self._auto.append((auto[0], auto[1], int(time.time()), ROLLED_BACK))
                self._seen[auto] = (None, ROLLED_BACK)
                return {"committed": False}
            stored = rows[0][0]
            seen = (None, stored if stored == ROLLED_BACK else _decode_result(stored))
        if seen[1] == ROLLED_BACK:
            return {"committed": False}
        return {"committed": True, "result": seen[1]}

    def flush(self) -> Steps[None]:
        """Write the staged records (just before ``COMMIT``), and prune a little.

        Raises:
            KeyConflict: a first send's record exists already (see the module docstring).
        """
        if self._auto or self._caller:
            yield from self.ensure_tables()
            try:
                if self._auto:
                    yield ExecMany(_INSERT_AUTO, self._auto)
                if self._caller:
                    yield ExecMany(_INSERT_CALLER, self._caller)
            except IntegrityError:
                raise KeyConflict() from None
            self.stats.recorded += len(self._auto) + len(self._caller)
            if self._caller_rows is not None:
                self._caller_rows += len(self._caller)
        if self._ready and (self._acks or time.monotonic() >= self._next_prune):
            yield from self._prune()
        self.begin()

    def record_commit(self, req: dict[str, Any]) -> Steps[None]:
        """Record an interactive transaction's ``commit`` key, just before its ``COMMIT``.

        Raises:
            ConnectionLostError: the key was resolved as rolled back meanwhile (its
                client gave up on this connection); the caller rolls back.
        """
        auto = _key_of(req)
        if auto is None:
            return
        yield from self.ensure_tables()
        try:
            yield Exec(_INSERT_AUTO, [auto[0], auto[1], int(time.time()), None])
        except IntegrityError:
            raise ConnectionLostError(
                "this transaction was resolved as rolled back by its client after a lost "
                "connection; it is rolled back"
            ) from None
        self.stats.recorded += 1

    # ------------------------------------------------------------ pruning

    def _note_ack(self, req: dict[str, Any]) -> None:
        acked = req.get("acked")
        key = req.get("key")
        if (
            type(acked) is int
            and type(key) is list
            and key
            and type(key[0]) is str
            and acked > self._acks.get(key[0], -1)
        ):
            self._acks[key[0]] = acked

    def _prune(self) -> Steps[None]:
        """Delete what no client can ask about any more, a bounded amount per pass."""
        pruned = 0
        for client, low in self._acks.items():
            pruned += yield Exec(
                "DELETE FROM _fqdb_requests WHERE client = ? AND seq < ?", [client, low]
            )
        self._acks.clear()
        now = time.monotonic()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_INTERVAL
            wall = int(time.time())
            # Records of clients that died (no ack will ever come); the table is small.
            pruned += yield Exec(
                "DELETE FROM _fqdb_requests WHERE at < ?", [wall - int(self.window)]
            )
            pruned += yield from self._prune_caller(wall)
        self.stats.pruned += pruned

    def _prune_caller(self, wall: int) -> Steps[int]:
        deleted: int = yield Exec(
            "DELETE FROM _fqdb_idempotency WHERE key IN (SELECT key FROM _fqdb_idempotency "
            "WHERE at < ? ORDER BY at LIMIT ?)",
            [wall - int(self.idempotency_window), PRUNE_CHUNK],
        )
        if self._caller_rows is None:
            counted = yield Query("SELECT count(*) FROM _fqdb_idempotency")
            self._caller_rows = int(counted[0][0])
        else:
            self._caller_rows -= deleted
        excess = self._caller_rows - self.idempotency_max
        if excess > 0:
            over: int = yield Exec(
                "DELETE FROM _fqdb_idempotency WHERE key IN (SELECT key FROM _fqdb_idempotency "
                "ORDER BY at LIMIT ?)",
                [min(excess, PRUNE_CHUNK)],
            )
            self._caller_rows -= over
            deleted += over
        return deleted
